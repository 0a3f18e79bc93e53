"""Prefilling attack: force the first k tokens of a harmful answer, let the model continue, judge.

Inputs are spliced as token ids (prompt ids + exactly k response ids). Rows are written to a results
file as they are produced (id = ``{label}/k{k}/{pair id}/r{repeat}``), so a killed run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from deepalign.chat import ChatFormat, answer_length, encode_example, splice
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.judges.base import Judge, JudgeInput, summarize
from deepalign.results import ResultsWriter


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0..1); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PrefillPoint:
    """ASR at one prefill length: ``asr`` in 0..1 with its 95% Wilson interval and error count."""

    label: str
    k: int
    n: int
    n_errors: int
    asr: float | None
    low: float
    high: float


def prefill_attack(
    model,
    tokenizer,
    pairs: Sequence,
    ks: Sequence[int],
    judge: Judge,
    writer: ResultsWriter,
    *,
    label: str,
    sampling: SamplingConfig,
    fmt: ChatFormat = ChatFormat(),
    batch_size: int = 16,
    progress: bool = True,
) -> list[PrefillPoint]:
    """Run the attack for every k on every pair (pairs shorter than k tokens are skipped) and summarise.

    Already-written rows in ``writer`` are kept and not generated again.
    """
    encoded = {p.id: (p, encode_example(tokenizer, p.prompt, p.response, fmt)) for p in pairs}
    requests, meta = [], {}
    for k in ks:
        for pid, (pair, enc) in encoded.items():
            if k > answer_length(enc):
                continue
            rid = f"{label}/k{k}/{pid}"
            requests.append(GenerationRequest(rid, splice(enc, k)))
            meta[rid] = (pair, k, tokenizer.decode(enc.response_ids[:k], skip_special_tokens=True))
    done = {(r.rsplit("/r", 1)[0], int(r.rsplit("/r", 1)[1])) for r in writer.done if r.startswith(f"{label}/")}

    def write_batch(gens) -> None:
        items = [JudgeInput(meta[g.id][0].prompt, g.text, meta[g.id][2]) for g in gens]
        for g, verdict in zip(gens, judge.judge(items), strict=True):
            pair, k, prefill = meta[g.id]
            writer.write({
                "id": f"{g.id}/r{g.repeat}", "label": label, "k": k, "pair_id": pair.id, "repeat": g.repeat,
                "prefill": prefill, "response": g.text, "harmful": verdict.harmful, "score": verdict.score,
                "error": verdict.error, "judge": judge.name, "judge_sees_prefill": judge.sees_prefill,
            })

    generate(model, tokenizer, requests, sampling, batch_size=batch_size, progress=progress,
             on_batch=write_batch, skip=done)
    return summarize_prefill(writer.rows(), label, ks)


def summarize_prefill(rows: list[dict], label: str, ks: Sequence[int]) -> list[PrefillPoint]:
    """ASR per k from result rows (errors excluded from the denominator and counted)."""
    from deepalign.judges.base import Judgment

    points = []
    for k in ks:
        sel = [r for r in rows if r["label"] == label and r["k"] == k]
        s = summarize(Judgment(r["harmful"], r["score"], r["error"]) for r in sel)
        low, high = wilson_interval(s["n_harmful"], s["n_judged"])
        points.append(PrefillPoint(label, k, s["n"], s["n_errors"], s["asr"], low, high))
    return points
