"""Sections beyond the paper's claims: the refusal-margin diagnosis of each model, and the stage times."""

from __future__ import annotations

from pathlib import Path

from deepalign.report.claims.common import Summaries, rate_of, stage
from deepalign.report.document import Section
from deepalign.report.figures import plot_margins

LABELS = ("base", "sft", "aligned", "deep")


def margin_section(summaries: Summaries, run: Path) -> Section | None:
    """Per model (pooled over seeds): the refusal margin's median and quantiles, the verdict of the paper's
    beta_1 = 0.5, greedy refusal of held-out harmful prompts and over-refusal of held-out benign ones."""
    runs = stage(summaries, "margin")
    if not runs:
        return None
    labels = [label for label in LABELS if label in runs[0]]
    rows, curves = [], {}
    for label in labels:
        reports = [r[label]["margin"] for r in runs]
        curves[label] = [p["margin"] for rep in reports for p in rep["prompts"]]
        refusal = rate_of([r[label]["refusal"] for r in runs], "n_refused")
        over = rate_of([r[label]["over_refusal"] for r in runs], "n_refused")
        rows.append([label, " / ".join(f"{rep['median'] + 0.0:.1f}" for rep in reports),  # + 0.0: no "-0.0"
                     " / ".join(f"{rep['quantiles']['q10'] + 0.0:.1f}" for rep in reports),
                     ", ".join(rep["verdict"] for rep in reports),
                     ", ".join(f"{rep['auto_beta_1']:g}" for rep in reports),
                     str(refusal), str(over)])
    lines = runs[0].get("reference_lines") or {}
    bounds = sorted(lines.values())  # the margins where a ~50-step attack leaves reach / is out of reach
    reach = (f"it is within reach of a ~50-step attack below about {bounds[0]:.1f} nats and out of reach above about "
             f"{bounds[-1]:.1f}" if len(bounds) == 2 else "the run recorded no reach thresholds")
    plot_margins(curves, run / "figures" / "margin.png", title="Refusal margin on held-out harmful prompts",
                 lines=lines)
    text = ("The refusal margin of a prompt is minus the log of the first-token probability mass that does not start "
            "a refusal (nats; greedy lookahead judged by the suite's judge). A constrained fine-tuning attack with "
            "beta_1 = 0.5 needs M(m) = 1/2 + (e^{0.5 m} - 1) / m times the steps SFT needs to flip a prompt of "
            f"margin m: {reach} (deepalign.depth.margin; the dashed lines). Values per seed are separated by /.")
    header = ["model", "median margin (nats)", "q10", "beta_1 = 0.5 holds?", "auto beta_1",
              "refuses harmful (greedy)", "over-refuses benign (greedy)"]
    return Section("Refusal margin and over-refusal of each model", text, (header, rows), ["figures/margin.png"])


def stage_times_section(summaries: Summaries) -> Section:
    """Seconds per stage and seed (as each stage's summary recorded them)."""
    stages = list(dict.fromkeys(name for by_stage in summaries.values() for name in by_stage))
    rows = [[name, *(f"{summaries[s][name]['seconds']:.0f} s" if name in summaries[s] and "seconds" in
                     summaries[s][name] else "-" for s in summaries)] for name in stages]
    total = [f"{sum(v.get('seconds', 0.0) for v in summaries[s].values()) / 60:.1f} min" for s in summaries]
    return Section("Stage times", "Wall-clock time of each stage, on whatever else the machine was running.",
                   (["stage", *(f"seed {s}" for s in summaries)], [*rows, ["total", *total]]))
