"""Task scores of a generated answer against a reference answer (0..1), for the benign fine-tuning task."""

from __future__ import annotations

import re

from deepalign.errors import DeepAlignError

METRICS = ("rouge1", "exact")


def rouge1(prediction: str, reference: str) -> float:
    """ROUGE-1 F1 (unigram overlap; rouge_score's tokenizer: lower case, alphanumeric runs, no stemming)."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1"], use_stemmer=False).score(reference, prediction)["rouge1"].fmeasure


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both texts are equal after lower-casing and collapsing whitespace, else 0.0."""
    norm = lambda s: re.sub(r"\s+", " ", s.strip().lower())  # noqa: E731
    return float(norm(prediction) == norm(reference))


def metric(name: str):
    """The score function ``(prediction, reference) -> float`` called ``name`` (rouge1 | exact)."""
    if name not in METRICS:
        raise DeepAlignError(f"unknown metric '{name}': choose one of {', '.join(METRICS)}")
    return rouge1 if name == "rouge1" else exact_match
