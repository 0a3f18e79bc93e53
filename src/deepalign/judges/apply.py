"""Judging result rows: the one path from rows to verdict fields, retries of failed judgments, and
``deepalign judge`` (:func:`judge_file`).

Rows follow :mod:`deepalign.results.rows`: a judged row carries ``harmful``, ``score``, ``judge_error``,
``judge_raw``, ``judge`` and ``judge_sees_prefill``. A failed judgment (``judge_error`` set) is never
counted as safe; :func:`rejudge_failed` judges such rows again in place (responses kept).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepalign.data.loaders import MAX_LINE_BYTES, iter_lines
from deepalign.errors import DataError, DeepAlignError, JudgeFailureError
from deepalign.io import ResultsWriter, atomic_write_json, atomic_write_jsonl, iter_batches, read_jsonl
from deepalign.judges.base import Judge, JudgeInput, Judgment
from deepalign.judges.validity import known_validation
from deepalign.meta import write_run_metadata
from deepalign.results.interop import read_benchmark_rows
from deepalign.results.rows import VERDICT_FIELDS, judgment_failed
from deepalign.results.summaries import JudgeSummary

DEFAULT_MAX_FAILURE_SHARE = 0.05


def verdict_fields(judgment: Judgment, judge: Judge) -> dict[str, Any]:
    """The verdict fields of a row (:data:`deepalign.results.rows.VERDICT_FIELDS`)."""
    values = (judgment.harmful, judgment.score, judgment.error, judgment.raw, judge.name, judge.sees_prefill)
    return dict(zip(VERDICT_FIELDS, values, strict=True))


def judge_rows(judge: Judge, rows: Sequence[dict]) -> list[dict[str, Any]]:
    """Judge rows with ``prompt``, ``response`` and optional ``prefill``: one dict of verdict fields per row."""
    items = [JudgeInput(r["prompt"], r["response"], r.get("prefill") or "") for r in rows]
    return [verdict_fields(v, judge) for v in judge.judge(items)]


def rejudge_failed(path: str | os.PathLike, judge: Judge, batch_size: int = 64) -> int:
    """Judge again the rows of a results file whose judgment failed (rewritten atomically); returns how
    many were retried. Responses are kept: only the judgment is redone."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = read_jsonl(path)
    failed = [r for r in rows if judgment_failed(r) and "response" in r]
    for batch in iter_batches(failed, batch_size):
        for r, verdict in zip(batch, judge_rows(judge, batch), strict=True):
            r.update(verdict)
    if failed:
        atomic_write_jsonl(path, rows)
    return len(failed)


def check_failure_share(summary: Mapping[str, Any] | Any, max_share: float = DEFAULT_MAX_FAILURE_SHARE) -> None:
    """Raise :class:`~deepalign.errors.JudgeFailureError` (exit status 3) when the share of failed
    judgments (``n_errors / n`` of a summary, as a dict or a typed summary) exceeds ``max_share``.

    A failed judgment is left out of the ASR, so many failures make the ASR rest on a biased subset.
    """
    if not 0 <= max_share <= 1:
        raise DeepAlignError(f"the maximum failure share must be in [0, 1], got {max_share}")
    get = summary.get if isinstance(summary, Mapping) else lambda name: getattr(summary, name, None)
    n, n_errors = get("n") or 0, get("n_errors") or 0
    if n and n_errors / n > max_share:
        raise JudgeFailureError(
            f"{n_errors} of {n} judgments failed ({n_errors / n:.1%} > the allowed {max_share:.1%}); "
            "rerun the same command to retry them"
        )


def read_judge_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file with ``id`` (string or integer, unique), ``prompt``, ``response`` and optional
    ``prefill`` fields, or of a HarmBench / JailbreakBench-style ``.json`` file
    (:func:`deepalign.results.interop.read_benchmark_rows`); any problem raises DataError naming file, line
    and field."""
    if not path.is_file():
        raise DeepAlignError(f"cannot read {path}: no such file")
    if path.suffix.lower() == ".json":  # a HarmBench / JailbreakBench-style file
        rows = read_benchmark_rows(path)
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise DataError(str(path), None, "id", f"duplicate id '{duplicate}'")
        return rows
    rows, first_line = [], {}
    for n, line in iter_lines(path, MAX_LINE_BYTES):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(str(path), n, None, f"not a JSON object (invalid JSON: {e})") from None
        if not isinstance(row, dict):
            raise DataError(str(path), n, None, "not a JSON object")
        for name in ("id", "prompt", "response"):
            if name not in row:
                raise DataError(str(path), n, name, "missing")
        rid = row["id"]
        if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
            raise DataError(str(path), n, "id", "must be a non-empty string or an integer")
        if str(rid) in first_line:
            raise DataError(str(path), n, "id", f"duplicate id '{rid}' (first on line {first_line[str(rid)]})")
        first_line[str(rid)] = n
        for name in ("prompt", "response"):
            if not isinstance(row[name], str):
                raise DataError(str(path), n, name, "must be a string")
        if not isinstance(row.get("prefill") or "", str):
            raise DataError(str(path), n, "prefill", "must be a string")
        rows.append(row)
    if not rows:
        raise DataError(str(path), None, None, "no rows to judge")
    return rows


def judge_file(
    src: str | os.PathLike, out_dir: str | os.PathLike, judge: Judge, batch_size: int = 64
) -> JudgeSummary:
    """Judge every row of a JSONL file (``id``, ``prompt``, ``response``, optional ``prefill``).

    Writes ``out_dir/judged.jsonl`` (each input row plus the verdict fields; resumable: rows already
    judged are skipped, rows whose judgment failed are judged again), ``out_dir/summary.json`` (the stats
    of all judged rows plus the judge's settings) and ``out_dir/meta.json``. The input is validated before
    anything is written. Call :func:`check_failure_share` on the summary to fail on too many errors.
    """
    out = Path(out_dir)
    rows = read_judge_rows(Path(src))
    if batch_size < 1:
        raise DeepAlignError(f"batch size must be >= 1, got {batch_size}")
    settings = judge.describe()
    write_run_metadata(out, source=str(src), judge=settings, trust_remote_code=settings.get("trust_remote_code", False))
    rejudge_failed(out / "judged.jsonl", judge, batch_size)
    with ResultsWriter(out / "judged.jsonl") as writer:
        todo = [r for r in rows if str(r["id"]) not in writer.done]
        for batch in iter_batches(todo, batch_size):
            for row, verdict in zip(batch, judge_rows(judge, batch), strict=True):
                writer.write({**row, **verdict})
        wanted = {str(r["id"]) for r in rows}
        judged = [r for r in writer.rows() if str(r["id"]) in wanted]
    summary = replace(JudgeSummary.of_rows(judged), judge=judge.describe(),
                      validation=known_validation(judge.describe()))  # agreement with human labels, when measured
    atomic_write_json(out / "summary.json", summary.to_dict())
    return summary
