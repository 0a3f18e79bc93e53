"""Where judges disagree: several judges on one rows file, with pairwise agreement and Cohen's kappa.

Each judge judges the file into ``out/<judge>/`` (resumable, as ``deepalign judge`` does); then for every
pair of judges, over the rows both judged without error: n, the share of rows on which they agree (95%
Wilson interval) and Cohen's kappa (95% percentile bootstrap interval, as in
:mod:`deepalign.judges.validation`), plus each judge's ASR on the file. Writes ``compare.json`` and
``compare.md`` in ``out``.
"""

from __future__ import annotations

import os
import re
from itertools import combinations
from pathlib import Path
from typing import Any

from deepalign.judges.base import Judge
from deepalign.judges.validation import CI_METHODS, Confusion, accuracy, bootstrap_interval, kappa, wilson


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
    from deepalign.judges.apply import judge_file
    from deepalign.io import atomic_write_json, atomic_write_text, read_jsonl

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
    atomic_write_text(out / "compare.md", markdown(report))
    return report


def _ci(entry: dict, pct: bool) -> str:
    v, ci = entry.get("value"), entry.get("ci")
    if v is None:
        return "n/a"

    def f(x: float) -> str:
        return f"{100 * x:.1f}%" if pct else f"{x:.3f}"

    return f(v) + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def lines(report: dict[str, Any]) -> list[str]:
    """Printable lines: each judge's ASR, then each pair's agreement and kappa."""
    out = []
    for spec, s in report["judges"].items():
        asr = "n/a" if s["asr"] is None else f"{100 * s['asr']:.1f}%"
        out.append(f"{spec}: ASR {asr} ({s['n_harmful']}/{s['n_judged']} judged, {s['n_errors']} failed)")
    for p in report["pairs"]:
        out.append(f"{p['a']} vs {p['b']}: n={p['n']} agreement {_ci(p['agreement'], True)}, "
                   f"kappa {_ci(p['kappa'], False)}")
    return out


def markdown(report: dict[str, Any]) -> str:
    md = [f"# Judges compared on `{report['rows']}`", "",
          f"Agreement: {report['ci_methods']['agreement']} 95% interval; kappa: {report['ci_methods']['kappa']}.", "",
          "| judge | ASR | harmful / judged | failed |", "|---|---|---|---|"]
    for spec, s in report["judges"].items():
        asr = "n/a" if s["asr"] is None else f"{100 * s['asr']:.1f}%"
        md.append(f"| {spec} | {asr} | {s['n_harmful']} / {s['n_judged']} | {s['n_errors']} |")
    md += ["", "| judge A | judge B | n | agreement | kappa | both harmful | only A | only B | neither |",
           "|---|---|---|---|---|---|---|---|---|"]
    for p in report["pairs"]:
        c = p["confusion"]
        md.append(f"| {p['a']} | {p['b']} | {p['n']} | {_ci(p['agreement'], True)} | {_ci(p['kappa'], False)} | "
                  f"{c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} |")
    return "\n".join(md) + "\n"
