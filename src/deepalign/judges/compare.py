"""Where judges disagree: several judges on one rows file, with pairwise agreement and Cohen's kappa.

Each judge judges the file into ``out/<judge>/`` (resumable, as ``deepalign judge`` does); then for every
pair of judges, over the rows both judged without error: n, the share of rows on which they agree (95%
Wilson interval) and Cohen's kappa (95% percentile bootstrap interval, as in
:mod:`deepalign.results.agreement`), plus each judge's ASR on the file. Writes ``compare.json`` in ``out``
(:func:`deepalign.pipeline.judges.run_compare` adds ``compare.md``).
"""

from __future__ import annotations

import os
import re
from itertools import combinations
from pathlib import Path
from typing import Any

from deepalign.io import atomic_write_json, read_jsonl
from deepalign.judges.apply import judge_file
from deepalign.judges.base import Judge
from deepalign.results.agreement import CI_METHODS, Confusion, accuracy, bootstrap_interval, kappa, wilson


def folder_name(spec: str) -> str:
    """A folder name for a judge spec (``classifier:/models/x`` -> ``classifier-models-x``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-") or "judge"


def pairwise(verdicts: dict[str, dict[str, bool]]) -> list[dict[str, Any]]:
    """Agreement and kappa of every pair of judges over the row ids both judged (``{judge: {id: harmful}}``)."""
    out = []
    for a, b in combinations(verdicts, 2):
        common = sorted(set(verdicts[a]) & set(verdicts[b]))
        c = Confusion.of([verdicts[a][i] for i in common], [verdicts[b][i] for i in common])
        out.append({
            "a": a, "b": b, "n": c.n, "confusion": c.to_dict(),
            "agreement": {"value": accuracy(c), "ci": wilson(c.tp + c.tn, c.n)},
            "kappa": {"value": kappa(c), "ci": bootstrap_interval(c, kappa)},
        })
    return out


def compare(rows: str | os.PathLike, judges: dict[str, Judge], out_dir: str | os.PathLike,
            batch_size: int = 64) -> dict[str, Any]:
    """Judge ``rows`` with every judge (``{spec: judge}``) and compare them pairwise (module docstring)."""
    out = Path(out_dir)
    summaries, verdicts = {}, {}
    for spec, judge in judges.items():
        folder = out / folder_name(spec)
        summaries[spec] = {**judge_file(rows, folder, judge, batch_size=batch_size).to_dict(), "folder": str(folder)}
        verdicts[spec] = {str(r["id"]): bool(r["harmful"]) for r in read_jsonl(folder / "judged.jsonl")
                          if r.get("judge_error") is None and r.get("harmful") is not None}
    report = {"rows": str(rows), "judges": summaries, "pairs": pairwise(verdicts),
              "ci_methods": {"agreement": CI_METHODS["accuracy"], "kappa": CI_METHODS["kappa"]}}
    atomic_write_json(out / "compare.json", report)
    return report
