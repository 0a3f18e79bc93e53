"""Judge measurements end to end: ``judge-eval`` (a judge against human labels, recorded in the validation
cache) and ``judge --compare`` (several judges on one file), each writing its JSON and Markdown report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepalign.data.labels import DEFAULT_SETS, LabelSet
from deepalign.io import atomic_write_text
from deepalign.judges import validity
from deepalign.judges.base import Judge
from deepalign.judges.compare import compare
from deepalign.judges.evaluate import evaluate
from deepalign.report.judges import compare_markdown, judge_eval_markdown


@dataclass
class JudgeEvalConfig:
    """What ``deepalign judge-eval`` measures a judge on, and whether it records the figures."""

    sets: tuple[str, ...] = field(default=DEFAULT_SETS, metadata={
        "help": "pyrit sets: refusal, refusal_extra, objective (14 files pooled), objective/NAME, objective/* "
                "(every category)"})
    pyrit: bool = field(default=True, metadata={"help": "evaluate on pyrit's labelled sets (--sets)"})
    record: bool = field(default=True, metadata={
        "help": "store the figures in the validation cache ($DEEPALIGN_CACHE/judges/validation), so later ASRs "
                "of this judge quote them"})


def run_judge_eval(judge: Judge, sets: Sequence[LabelSet], out_dir: str | os.PathLike, *, batch_size: int = 64,
                   record: bool = True) -> dict[str, Any]:
    """``judge`` on every labelled set: ``out_dir/judge_eval.json`` and ``judge_eval.md``; with ``record``,
    the figures go to the validation cache (``report["recorded"]``: the cache file), so every later ASR of
    this judge quotes them."""
    report = evaluate(judge, sets, out_dir, batch_size=batch_size)
    atomic_write_text(Path(out_dir) / "judge_eval.md", judge_eval_markdown(report))
    if record:
        report["recorded"] = str(validity.record(report))
    return report


def run_compare(rows: str | os.PathLike, judges: dict[str, Judge], out_dir: str | os.PathLike, *,
                batch_size: int = 64) -> dict[str, Any]:
    """Every judge (``{spec: judge}``) on ``rows``, pairwise agreement and kappa: ``compare.json`` and
    ``compare.md`` in ``out_dir``."""
    report = compare(rows, judges, out_dir, batch_size=batch_size)
    atomic_write_text(Path(out_dir) / "compare.md", compare_markdown(report))
    return report
