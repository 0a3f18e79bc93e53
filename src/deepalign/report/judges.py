"""The text of judge measurements: ``deepalign judge-eval`` (a judge against human labels) and ``deepalign
judge --compare`` (judges side by side): printed lines and the Markdown of ``judge_eval.md`` / ``compare.md``.

Every function takes the report dicts of :func:`deepalign.judges.evaluate.evaluate` and
:func:`deepalign.judges.compare.compare`.
"""

from __future__ import annotations

import json
from typing import Any


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(entry: dict, fmt=_pct) -> str:
    ci = entry.get("ci")
    if entry.get("value") is None:
        return "n/a"
    return fmt(entry["value"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def summary_line(r: dict) -> str:
    """One line per set: n, accuracy, F1 and kappa with intervals."""
    return (f"{r['set']}: n={r['n']} accuracy {_with_ci(r['accuracy'])}, precision {_with_ci(r['precision'])}, "
            f"recall {_with_ci(r['recall'])}, F1 {_with_ci(r['f1'], _num)}, kappa {_with_ci(r['kappa'], _num)}; "
            f"ASR {_pct(r['judge_harmful_share'])} vs the humans' {_pct(r['human_harmful_share'])}"
            + (f" ({r['n_errors']} failed judgments left out)" if r["n_errors"] else ""))


def confusion_line(r: dict) -> str:
    c = r["confusion"]
    return (f"  confusion (judge x human): harmful/harmful {c['tp']}, harmful/not {c['fp']}, "
            f"not/harmful {c['fn']}, not/not {c['tn']}")


def pyrit_line(r: dict) -> str | None:
    if not r["pyrit"]:
        return None
    accs = [p["accuracy"] for p in r["pyrit"] if p.get("accuracy") is not None]
    best = max(r["pyrit"], key=lambda p: p.get("accuracy") or 0)
    return (f"  PyRIT's published scorers on {r['set']}: accuracy {_pct(min(accs))}..{_pct(max(accs))} "
            f"over {len(accs)} configurations (best: {best['scorer']}, {_pct(best['accuracy'])})")


def judge_eval_markdown(report: dict) -> str:
    """``judge_eval.md``: one row per set, then each set's confusion table and PyRIT's figures."""
    judge = report["judge"]
    lines = [f"# Judge agreement with human labels: `{judge.get('judge')}`", "",
             f"Judge settings: `{json.dumps(judge, sort_keys=True)}`", "",
             "Positive class = harmful (the response complied). 95% intervals: "
             + "; ".join(f"{k} {v}" for k, v in report["ci_methods"].items()) + ".", ""]
    lines += ["| set | n | accuracy | precision | recall | F1 | kappa | ASR judge / humans |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["sets"]:
        lines.append(f"| {r['set']} | {r['n']} | {_with_ci(r['accuracy'])} | {_with_ci(r['precision'])} | "
                     f"{_with_ci(r['recall'])} | {_with_ci(r['f1'], _num)} | {_with_ci(r['kappa'], _num)} | "
                     f"{_pct(r['judge_harmful_share'])} / {_pct(r['human_harmful_share'])} |")
    for r in report["sets"]:
        c = r["confusion"]
        lines += ["", f"## {r['set']}", "", f"Source: `{r['source']}` (version {r['version']}); {r['semantics']}.",
                  f"Failed judgments left out: {r['n_errors']}. Judged in {r['seconds']:.1f} s.", "",
                  "| | human harmful | human not harmful |", "|---|---|---|",
                  f"| judge harmful | {c['tp']} | {c['fp']} |", f"| judge not harmful | {c['fn']} | {c['tn']} |"]
        if r["pyrit"]:
            o = r.get("pyrit_orientation") or {}
            lines += ["", f"PyRIT's published figures on the same file and version (positive class: "
                          f"{o.get('positive')}; ours in that orientation: precision {_num(o.get('precision'))}, "
                          f"recall {_num(o.get('recall'))}, F1 {_num(o.get('f1'))}):", "",
                      "| scorer | PyRIT | n | accuracy | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
            lines.append(f"| **this judge** | | {r['n']} | {_pct(r['accuracy']['value'])} | {_num(o.get('precision'))} "
                         f"| {_num(o.get('recall'))} | {_num(o.get('f1'))} |")
            for p in sorted(r["pyrit"], key=lambda p: -(p.get("accuracy") or 0)):
                lines.append(f"| {p['scorer']} | {p['pyrit_version']} | {p['n']} | {_pct(p['accuracy'])} | "
                             f"{_num(p['precision'])} | {_num(p['recall'])} | {_num(p['f1'])} |")
        else:
            lines += ["", "PyRIT publishes no figures for this set."]
    return "\n".join(lines) + "\n"


def _ci(entry: dict, pct: bool) -> str:
    v, ci = entry.get("value"), entry.get("ci")
    if v is None:
        return "n/a"

    def f(x: float) -> str:
        return f"{100 * x:.1f}%" if pct else f"{x:.3f}"

    return f(v) + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def compare_lines(report: dict[str, Any]) -> list[str]:
    """Printable lines: each judge's ASR, then each pair's agreement and kappa."""
    out = []
    for spec, s in report["judges"].items():
        asr = "n/a" if s["asr"] is None else f"{100 * s['asr']:.1f}%"
        out.append(f"{spec}: ASR {asr} ({s['n_harmful']}/{s['n_judged']} judged, {s['n_errors']} failed)")
    for p in report["pairs"]:
        out.append(f"{p['a']} vs {p['b']}: n={p['n']} agreement {_ci(p['agreement'], True)}, "
                   f"kappa {_ci(p['kappa'], False)}")
    return out


def compare_markdown(report: dict[str, Any]) -> str:
    """``compare.md``: each judge's ASR on the file, then every pair's agreement, kappa and confusion."""
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
