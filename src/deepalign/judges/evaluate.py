"""How far a judge agrees with human labels: it judges every row of a labelled set
(:mod:`deepalign.data.labels`) and its verdicts are compared with the humans'
(:mod:`deepalign.results.agreement`: n, accuracy, precision, recall, F1, kappa with 95% intervals).

Rows whose judgment failed are left out and counted in ``n_errors``. PyRIT's published figures for the
same set travel with the set's report (``pyrit``), and ours in PyRIT's orientation (``pyrit_orientation``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepalign.data.labels import LabelSet
from deepalign.io import atomic_write_json, atomic_write_jsonl, make_dir, read_jsonl
from deepalign.judges.apply import judge_file
from deepalign.meta import write_run_metadata
from deepalign.results.agreement import CI_METHODS, Confusion, metrics


def evaluate_set(judge, label_set: LabelSet, out_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Judge every row of ``label_set`` (resumable, via :func:`~deepalign.judges.apply.judge_file` into
    ``out_dir/NAME/``) and compare with the human labels. Returns the set's report."""
    folder = make_dir(Path(out_dir) / label_set.name.replace("/", "-"))
    src = folder / "rows.jsonl"
    atomic_write_jsonl(src, [{"id": r.id, "prompt": r.prompt, "response": r.response, "prefill": r.prefill,
                              "human_harmful": r.harmful} for r in label_set.rows])
    t0 = time.perf_counter()
    summary = judge_file(src, folder, judge, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    judged = {str(r["id"]): r for r in read_jsonl(folder / "judged.jsonl")}
    pairs = [(bool(judged[r.id]["harmful"]), r.harmful) for r in label_set.rows
             if r.id in judged and judged[r.id]["judge_error"] is None and judged[r.id]["harmful"] is not None]
    conf = Confusion.of([p[0] for p in pairs], [p[1] for p in pairs])
    return {
        "set": label_set.name, "source": label_set.source, "version": label_set.version,
        "semantics": label_set.semantics, "n_rows": len(label_set.rows), "n_errors": len(label_set.rows) - len(pairs),
        "seconds": seconds, **metrics(conf, pyrit_positive=label_set.pyrit_positive),
        "pyrit": label_set.pyrit, "judge_summary_asr": summary.asr,
    }


def evaluate(judge, sets: Sequence[LabelSet], out_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Reports of ``judge`` on every set (``{"judge", "sets", "ci_methods"}``); writes ``out_dir/judge_eval.json``
    (:func:`deepalign.pipeline.judges.run_judge_eval` adds ``judge_eval.md`` and the validation cache)."""
    settings = judge.describe()
    write_run_metadata(out_dir, judge=settings, sets=[s.name for s in sets],
                       trust_remote_code=settings.get("trust_remote_code", False))
    reports = [evaluate_set(judge, s, out_dir, batch_size) for s in sets]
    report = {"judge": settings, "sets": reports, "ci_methods": CI_METHODS}
    atomic_write_json(Path(out_dir) / "judge_eval.json", report)
    return report
