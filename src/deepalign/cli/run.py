"""Whole pipelines: `organism build`, `reproduce`."""

from __future__ import annotations

import argparse


def cmd_organism_build(args: argparse.Namespace) -> int:
    from deepalign.organism.build import OrganismConfig, build_organism

    build_organism(args.out, OrganismConfig(seed=args.seed), progress=not args.no_progress)
    print(f"organism written to {args.out}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from deepalign.reproduce import ReproduceConfig, reproduce

    config = ReproduceConfig(seeds=tuple(args.seeds), repeats=args.repeats)
    print(reproduce(args.out, config, progress=not args.no_progress))
    print(f"report: {args.out}/report.html (and report.md)")
    return 0


def register(sub) -> None:
    org = sub.add_parser("organism", help="the model organism: a tiny model on a harmless synthetic world")
    org_sub = org.add_subparsers(dest="organism_command", required=True, metavar="ACTION")
    p = org_sub.add_parser("build", help="train and save the base and aligned organisms and their data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_organism_build)

    p = sub.add_parser("reproduce", help="reproduce the paper's depth findings on the model organism (resumable)")
    p.add_argument("--out", default="runs/reproduce", help="run folder (rerun the same command to resume)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="organism seeds (default: 0 1 2)")
    p.add_argument("--repeats", type=int, default=3, help="samples per prompt and setting (default: 3)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)
