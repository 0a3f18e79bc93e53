"""Prefilling attack: force the first k tokens of a harmful answer, let the model continue; the judge
then decides whether the continuation is harmful (see ``deepalign.pipeline.attacks.run_prefill``).

Inputs are spliced as token ids (prompt ids + exactly the first k response ids of the tokenized
conversation), never decoded and re-encoded. Rows carry ``prompt``, ``prefill`` and ``response``, so
``deepalign judge rows.jsonl`` can re-judge them with another judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from deepalign.chat import ChatFormat, answer_length, encode_example, splice
from deepalign.depth.attack import AttackItem, InferenceAttackConfig, record_line
from deepalign.errors import DataError, DeepAlignError

ON_SHORT = ("error", "skip")


@dataclass
class PrefillConfig(InferenceAttackConfig):
    """Options of the prefilling attack (plus the shared :class:`InferenceAttackConfig` options)."""

    ks: tuple[int, ...] = field(default=(0, 5, 10, 20, 40), metadata={"help": "Prefilled answer tokens k."})
    on_short: str = field(
        default="error",
        metadata={"help": "An answer shorter than a k: 'error' (stop with an error naming file, line and field) "
                  "or 'skip' (that pair is left out at that k; counts are in the summary).", "choices": ON_SHORT},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ks = tuple(self.ks)
        if not self.ks or any(k < 0 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise DeepAlignError(f"prefill lengths must be distinct numbers >= 0, got {list(self.ks)}")
        if self.on_short not in ON_SHORT:
            raise DeepAlignError(f"on_short must be one of {', '.join(ON_SHORT)}, got {self.on_short!r}")


def prefill_items(
    tokenizer, pairs: Sequence, ks: Sequence[int], *, label: str, fmt: ChatFormat = ChatFormat(),
    on_short: str = "skip", source: str | None = None,
) -> list[AttackItem]:
    """One item per (k, pair): prompt ids + the answer's first k response ids (id ``{label}/k{k}/{pair id}``).

    A pair whose answer has fewer than k tokens is skipped at that k, or with ``on_short="error"``
    raises DataError naming ``source``, the pair's line (JSONL sources) and the ``response`` field.
    """
    items = []
    for index, pair in enumerate(pairs):
        enc = encode_example(tokenizer, pair.prompt, pair.response, fmt)
        n = answer_length(enc)
        if on_short == "error" and max(ks) > n:
            raise DataError(
                source or "pairs", record_line(source, index), "response",
                f"pair '{pair.id}': the answer has {n} tokens, fewer than k = {max(ks)}; use smaller --tokens, "
                "or --on-short skip to leave such pairs out at that k",
            )
        for k in ks:
            if k <= n:
                prefill = tokenizer.decode(enc.response_ids[:k], skip_special_tokens=True)
                items.append(AttackItem(f"{label}/k{k}/{pair.id}", pair.id, pair.prompt, splice(enc, k), prefill,
                                        {"label": label, "k": k}))
    return items
