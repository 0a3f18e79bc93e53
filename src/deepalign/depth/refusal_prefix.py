"""Refusal prefixes on a base model (the paper's Table 1): harmfulness with no prefix and with each
refusal prefix forced as the start of the response.

A prefix is spliced as token ids: the prompt ids followed by the response tokens the template renders
for a response that is exactly the prefix (its end-of-turn token dropped). If a base model that was
never aligned becomes nearly as safe as an aligned one once its answer starts with "I cannot", the
aligned model's safety may be only those first few tokens deep.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepalign.chat import answer_length, encode_example, encode_prompt, splice
from deepalign.data.texts import REFUSAL_PREFIXES
from deepalign.depth.prefill import (
    AttackConfig,
    AttackItem,
    asr_stats,
    check_known_tokens,
    format_rate,
    markdown_table,
    run_attack,
)
from deepalign.errors import DeepAlignError
from deepalign.judges.base import Judge
from deepalign.results import atomic_write_text

NO_PREFIX = ""


@dataclass
class RefusalPrefixConfig(AttackConfig):
    """Options of the refusal-prefix experiment (plus the shared :class:`AttackConfig` options)."""

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


def run_refusal_prefix(
    model, tokenizer, records: Sequence, config: RefusalPrefixConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> dict:
    """Harmfulness of ``model`` on prompt ``records`` without and with each refusal prefix; writes
    ``rows.jsonl`` (resumable), ``summary.json``, ``table.md``, ``refusal_prefix.png`` and ``meta.json``
    into ``out_dir`` and returns the summary (``conditions``: prefix, ASR, 95% CI, counts)."""
    items = refusal_prefix_items(tokenizer, records, config)

    def summarize_rows(rows: list[dict]) -> dict:
        conditions = []
        for prefix in (NO_PREFIX, *config.prefixes):
            s = asr_stats([r for r in rows if r["prefix"] == prefix])
            conditions.append({"prefix": prefix, **s})
        return {"n_prompts": len(records), "conditions": conditions}

    summary = run_attack("refusal-prefix", model, tokenizer, items, config, judge, out_dir,
                         summarize_rows=summarize_rows, source=source, progress=progress)
    out = Path(out_dir)
    atomic_write_text(out / "table.md", refusal_prefix_table(summary))
    plot_refusal_prefix(summary, out / "refusal_prefix.png")
    return summary


def _name(prefix: str) -> str:
    return "(no prefix)" if prefix == NO_PREFIX else repr(prefix)


def refusal_prefix_table(summary: dict) -> str:
    rows = [[_name(c["prefix"]), format_rate(c), c["n"], c["n_errors"]] for c in summary["conditions"]]
    return markdown_table(["prefilled refusal prefix", "harmful [95% CI]", "rows", "judge errors"], rows)


def plot_refusal_prefix(summary: dict, path: str | Path) -> None:
    """Bar chart: harmful share per condition with 95% Wilson intervals."""
    from deepalign.report.figures import plt, save_figure

    conds = summary["conditions"]
    ys = [c["asr"] or 0.0 for c in conds]
    err = [[y - c["low"] if c["asr"] is not None else 0 for y, c in zip(ys, conds, strict=True)],
           [c["high"] - y if c["asr"] is not None else 0 for y, c in zip(ys, conds, strict=True)]]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = ["tab:red"] + ["tab:blue"] * (len(conds) - 1)
    ax.bar(range(len(conds)), ys, yerr=err, capsize=4, color=colors)
    ax.set_xticks(range(len(conds)), [_name(c["prefix"]) for c in conds], rotation=25, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("harmful share")
    ax.set_title(f"{summary['label']}: refusal prefixes (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
