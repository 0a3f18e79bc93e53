"""Refusal prefixes on a base model (the paper's Table 1): harmfulness with no prefix and with each
refusal prefix forced as the start of the response.

A prefix is spliced as token ids: the prompt ids followed by the response tokens the template renders
for a response that is exactly the prefix (its end-of-turn token dropped). If a base model that was
never aligned becomes nearly as safe as an aligned one once its answer starts with "I cannot", the
aligned model's safety may be only those first few tokens deep. The runner (judging, summary, table,
figure) is ``deepalign.pipeline.attacks.run_refusal_prefix``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from deepalign.chat import answer_length, encode_example, encode_prompt, splice
from deepalign.data.texts import REFUSAL_PREFIXES
from deepalign.depth.attack import AttackItem, InferenceAttackConfig, check_known_tokens
from deepalign.errors import DeepAlignError

NO_PREFIX = ""


@dataclass
class RefusalPrefixConfig(InferenceAttackConfig):
    """Options of the refusal-prefix experiment (plus the shared :class:`InferenceAttackConfig` options)."""

    prefixes: tuple[str, ...] = field(
        default=REFUSAL_PREFIXES, metadata={"help": "Refusal prefixes; the no-prefix condition is always run."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prefixes = tuple(self.prefixes)
        if not self.prefixes or any(not p.strip() for p in self.prefixes):
            raise DeepAlignError("give at least one refusal prefix, none of them empty")
        if len(set(self.prefixes)) != len(self.prefixes):
            raise DeepAlignError("refusal prefixes must be distinct")


def prefix_key(prefix: str) -> str:
    """A stable short key of a prefix for row ids: ``none`` or ``p`` + 10 hex digits of its SHA-256."""
    return "none" if prefix == NO_PREFIX else "p" + hashlib.sha256(prefix.encode()).hexdigest()[:10]


def prefix_ids(tokenizer, prompt: str, prefix: str, fmt) -> list[int]:
    """Prompt ids followed by the response ids of ``prefix`` (no end-of-turn token): token-exact."""
    if prefix == NO_PREFIX:
        return encode_prompt(tokenizer, prompt, fmt)
    enc = encode_example(tokenizer, prompt, prefix, fmt)
    ids = splice(enc, answer_length(enc))
    check_known_tokens(tokenizer, ids[len(enc.prompt_ids) :], prefix, "refusal prefix")
    return ids


def refusal_prefix_items(tokenizer, records: Sequence, config: RefusalPrefixConfig) -> list[AttackItem]:
    """One item per (condition, prompt): no prefix first, then each prefix."""
    items = []
    for prefix in (NO_PREFIX, *config.prefixes):
        key = prefix_key(prefix)
        for r in records:
            ids = prefix_ids(tokenizer, r.prompt, prefix, config.fmt)
            items.append(AttackItem(f"{config.label}/{key}/{r.id}", r.id, r.prompt, ids, prefix,
                                    {"label": config.label, "prefix": prefix}))
    return items
