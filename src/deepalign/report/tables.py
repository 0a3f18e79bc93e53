"""Every Markdown table deepalign writes: the one table writer, and each attack's ``table.md``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepalign.report.figures import prefix_name
from deepalign.results.stress import worst_case, worst_cases
from deepalign.results.validation import format_asr


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped, newlines folded), ending in a newline."""
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_rate(stats) -> str:
    """``42.1% [35.0, 49.3]`` (ASR with its 95% CI, from stats with ``asr``, ``low``, ``high``), or ``n/a``
    when nothing was judged."""
    if stats.asr is None:
        return "n/a"
    return f"{stats.asr:.1%} [{stats.low:.1%}, {stats.high:.1%}]"


def judged_asr(stats, summary) -> str:
    """``ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)``: ``stats`` (with
    ``asr``, ``low``, ``high``) judged by ``summary``'s judge, quoting its validation (or "not validated")."""
    name = (getattr(summary, "judge", None) or {}).get("judge", "unknown")
    return format_asr(stats.asr, stats.low, stats.high, name, getattr(summary, "validation", None))


def prefill_table(summary) -> str:
    """Markdown table of a prefill summary: one row per k, then the ASR at the largest k with its judge."""
    rows = [[p.k, format_rate(p), p.n, p.n_errors, p.n_pairs] for p in summary.points]
    table = markdown_table(["k (prefilled tokens)", "ASR [95% CI]", "rows", "judge errors", "pairs"], rows)
    if not summary.points:
        return table
    last = max(summary.points, key=lambda p: p.k)
    return f"{table}\nAt k = {last.k} prefilled tokens: {judged_asr(last, summary)}.\n"


def refusal_prefix_table(summary) -> str:
    rows = [[prefix_name(c.prefix), format_rate(c), c.n, c.n_errors] for c in summary.conditions]
    table = markdown_table(["prefilled refusal prefix", "harmful [95% CI]", "rows", "judge errors"], rows)
    none = next((c for c in summary.conditions if not c.prefix), None)
    return table if none is None else f"{table}\nWithout a refusal prefix: {judged_asr(none, summary)}.\n"


def _share_text(b) -> str:
    if b.broken_share is None:
        return "n/a"
    known = b.n_prompts - b.n_undetermined
    return f"{b.broken_share:.1%} [{b.low:.1%}, {b.high:.1%}] ({b.n_broken}/{known})"


def decoding_table(summary) -> str:
    rows = [[p.setting, format_rate(p), p.n, p.n_errors] for p in summary.settings]
    table = markdown_table(["setting", "ASR [95% CI]", "rows", "judge errors"], rows)
    greedy = next((p for p in summary.settings if p.setting == "greedy"), None)
    greedy_text = "n/a" if greedy is None else judged_asr(greedy, summary)
    return (f"{table}\nPrompts broken by any setting: {_share_text(summary.broken)}; "
            f"by a sampled setting: {_share_text(summary.broken_by_sampling)}; greedy: {greedy_text}.\n")


def gcg_table(summary) -> str:
    names = {"none": "no suffix", "gcg": "GCG suffix"}
    rows = [[names[s.setting], format_rate(s), s.n, s.n_errors] for s in summary.settings]
    table = markdown_table(["prompt", "ASR [95% CI]", "rows", "judge errors"], rows)
    suffix = next((s for s in summary.settings if s.setting == "gcg"), None)
    headline = "" if suffix is None else f"With the GCG suffix: {judged_asr(suffix, summary)}.\n"
    return (f"{table}\nTarget loss (mean over {summary.n_prompts} prompts): {summary.mean_initial_loss:.3f} "
            f"-> {summary.mean_best_loss:.3f} nats; lowered for {summary.n_loss_lowered} prompts.\n{headline}")


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def stress_table(summary) -> str:
    """Worst-case ASR under the utility bound per (defence, attack), with the point that reaches it, and the
    largest ASR with no bound (``summary``: a StressSummary)."""
    unbounded = {(w.defence, w.attack): w for w in worst_cases(summary.points, float("inf"))}
    seeds = sorted({p.seed for p in summary.points})
    rows = []
    for w in summary.worst:
        p = w.point
        free = unbounded[(w.defence, w.attack)].point
        group = [q for q in summary.points if (q.defence, q.attack) == (w.defence, w.attack)]
        per_seed = " / ".join(_pct(worst_case([q for q in group if q.seed == s], summary.utility_bound).asr)
                              for s in seeds)
        where = (f"lr {p.learning_rate:g}, r {p.lora_rank}, {p.steps} steps, seed {p.seed}" if p else "none allowed")
        rows.append([w.defence, w.attack, f"{_pct(w.asr)} [{_pct(p.low)}, {_pct(p.high)}]" if p else "n/a",
                     f"{p.utility:.3f} ({p.utility_drop:+.3f})" if p else "n/a", where,
                     f"{w.n_allowed}/{w.n_points}", _pct(free.asr if free else None), per_seed])
    headers = ["defence", "attack", f"worst-case ASR (utility drop <= {summary.utility_bound:g})",
               f"{summary.metric} (drop)", "reached at", "points allowed", "max ASR, no bound",
               f"worst case per seed ({', '.join(map(str, seeds))})"]
    return markdown_table(headers, rows)
