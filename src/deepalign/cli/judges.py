"""Judges users can trust: `judge-eval` (agreement with human labels) and `judge --compare` (judges side by side)."""

from __future__ import annotations

import argparse
import copy

from deepalign.cli.common import (
    check_max_failure_share,
    judge_args,
    judge_exit_status,
    make_judge_from_args,
    runtime_args,
)
from deepalign.cli.options import add_fields, config_from
from deepalign.data.labels import LabelFile
from deepalign.pipeline.judges import JudgeEvalConfig

LABEL_FLAGS = {"label": "--label-column", "positive": "--label-positive", "prompt": "--prompt-column",
               "response": "--response-column", "prefill": "--prefill-column", "id": "--id-column"}


def _label_sets(args: argparse.Namespace) -> list:
    from deepalign.data.labels import load_label_file, load_pyrit_set, objective_categories

    names: list[str] = []
    for name in args.sets if args.pyrit else []:
        names += [f"objective/{c}" for c in objective_categories()] if name == "objective/*" else [name]
    sets = [load_pyrit_set(n) for n in names]
    for path in args.labels:
        sets.append(load_label_file(config_from(args, LabelFile, path=path)))
    if not sets:
        from deepalign.errors import DeepAlignError

        raise DeepAlignError("nothing to evaluate: give --sets, or --labels FILE with --no-pyrit")
    return sets


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from deepalign.io import check_out_dir
    from deepalign.pipeline.judges import run_judge_eval
    from deepalign.report.judges import confusion_line, pyrit_line, summary_line
    from deepalign.results.agreement import CI_METHODS

    check_out_dir(args.out)
    check_max_failure_share(args)
    sets = _label_sets(args)  # before the judge: a missing pyrit wheel fails fast
    judge = make_judge_from_args(args)
    report = run_judge_eval(judge, sets, args.out, batch_size=args.judge_batch_size, record=args.record)
    print(f"judge: {args.judge} ({judge.name}; sees prefill: {judge.sees_prefill})")
    print("positive class = harmful; 95% intervals: " + "; ".join(f"{k} {v}" for k, v in CI_METHODS.items()))
    for r in report["sets"]:
        print(summary_line(r))
        print(confusion_line(r))
        if line := pyrit_line(r):
            print(line)
    if "recorded" in report:
        print(f"validation recorded for this judge in {report['recorded']}")
    print(f"report: {args.out}/judge_eval.md (and judge_eval.json)")
    n = sum(r["n_rows"] for r in report["sets"])
    return judge_exit_status({"n": n, "n_errors": sum(r["n_errors"] for r in report["sets"])}, args)


def cmd_compare(args: argparse.Namespace) -> int:
    """`deepalign judge ROWS --compare A B ...`: every judge on the file, then pairwise agreement and kappa."""
    from deepalign.errors import DeepAlignError
    from deepalign.io import check_out_dir
    from deepalign.pipeline.judges import run_compare
    from deepalign.report.judges import compare_lines

    check_out_dir(args.out)
    check_max_failure_share(args)
    specs = list(dict.fromkeys(args.compare))
    if len(specs) < 2:
        raise DeepAlignError("--compare needs at least two judges")
    judges = {}
    for spec in specs:
        one = copy.copy(args)
        one.judge = spec
        judges[spec] = make_judge_from_args(one)
    report = run_compare(args.results, judges, args.out, batch_size=args.judge_batch_size)
    for line in compare_lines(report):
        print(line)
    print(f"report: {args.out}/compare.md (and compare.json)")
    statuses = [judge_exit_status(s, args) for s in report["judges"].values()]
    return max(statuses)


def register(sub) -> None:
    p = sub.add_parser(
        "judge-eval",
        help="measure a judge against human labels (pyrit's labelled sets, or your own labelled file)",
        description="Judge pyrit 1.1.0's human-labelled sets (read from the installed wheel) and/or your own "
                    "labelled files; print and write n, accuracy, precision, recall, F1 and Cohen's kappa with 95% "
                    "intervals, the confusion table and PyRIT's published figures for the same set.",
    )
    p.add_argument("--out", required=True, help="output folder (judge_eval.json, judge_eval.md; rerun resumes)")
    add_fields(p, JudgeEvalConfig(), ["sets", "pyrit", "record"])
    p.add_argument("--labels", action="append", default=[], metavar="FILE",
                   help="your labelled .jsonl/.csv file (repeatable)")
    add_fields(p, LabelFile(""), list(LABEL_FLAGS), **LABEL_FLAGS)
    judge_args(p)
    runtime_args(p)
    p.set_defaults(func=cmd_judge_eval)
