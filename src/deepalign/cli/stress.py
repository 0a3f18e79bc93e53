"""`stress`: fine-tuning attacks over an attacker budget, with the worst case under a utility bound."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from deepalign.cli.options import add_fields, config_from
from deepalign.pipeline.stress_grid import StressConfig

TUPLES = ("defences", "attacks", "learning_rates", "steps", "lora_ranks", "seeds")
BUDGET_FIELDS = (*TUPLES, "utility_bound", "n_train")  # audit --budget-*


def stress_config(args: argparse.Namespace) -> StressConfig:
    """The StressConfig of parsed ``stress`` (or ``audit --budget-*``) options."""
    values = {k: tuple(getattr(args, k)) for k in TUPLES}
    if not hasattr(args, "deep_model"):  # audit: only the budget's fields, the rest at their defaults
        names = {f.name for f in dataclasses.fields(StressConfig)} - {"model"}
        values.update({k: getattr(args, k) for k in BUDGET_FIELDS if k not in TUPLES})
        return StressConfig(**{k: v for k, v in values.items() if k in names})
    return config_from(args, StressConfig, **values)


def cmd_stress(args: argparse.Namespace) -> int:
    from deepalign.io import check_out_dir
    from deepalign.pipeline.stress import stress

    check_out_dir(args.out)
    summary = stress(stress_config(args), args.out, progress=not args.no_progress)
    print((Path(args.out) / "table.md").read_text(encoding="utf-8").rstrip())
    print(f"{len(summary.points)} points ({summary.points_measured} measured now, {summary.runs_trained} runs "
          f"trained) in {summary.seconds:.0f} s; results in {args.out}")
    return 0


def add_budget_fields(p, prefix: str = "", names=None, defaults: StressConfig | None = None) -> None:
    """The grid options of StressConfig (``prefix`` e.g. "budget-" for audit's ``--budget-steps``)."""
    names = names or [f.name for f in dataclasses.fields(StressConfig) if f.name != "model"]
    flags = {n: f"--{prefix}{n.replace('_', '-')}" for n in names} if prefix else {}
    add_fields(p, defaults or StressConfig(), names, **flags)


def register(sub) -> None:
    p = sub.add_parser("stress", help="fine-tuning attacks over an attacker budget: worst-case ASR under a "
                       "utility bound, per defence (resumable per grid point)")
    p.add_argument("--model", default="organism-aligned", help="aligned model under attack (default: organism)")
    p.add_argument("--out", required=True, help="output folder (points/, summary.json, table.md, figures); "
                   "rerun the same command to resume")
    add_budget_fields(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_stress)
