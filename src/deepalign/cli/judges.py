"""Judges users can trust: `judge-eval` (agreement with human labels) and `judge --compare` (judges side by side)."""

from __future__ import annotations

import argparse
import copy

from deepalign.cli.common import check_max_failure_share, judge_args, judge_exit_status, make_judge_from_args


def _label_sets(args: argparse.Namespace) -> list:
    from deepalign.data.labels import LabelFile, load_label_file, load_pyrit_set, objective_categories

    names: list[str] = []
    for name in [] if args.no_pyrit else args.sets:
        names += [f"objective/{c}" for c in objective_categories()] if name == "objective/*" else [name]
    sets = [load_pyrit_set(n) for n in names]
    for path in args.labels:
        sets.append(load_label_file(LabelFile(
            path, label=args.label_column, positive=args.label_positive, prompt=args.prompt_column,
            response=args.response_column, prefill=args.prefill_column, id=args.id_column,
        )))
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
    report = run_judge_eval(judge, sets, args.out, batch_size=args.judge_batch_size, record=not args.no_record)
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
                    "labelled files; print and write n, accuracy, precision, recall, F1 and Cohen's kappa with 95%% "
                    "intervals, the confusion table and PyRIT's published figures for the same set.",
    )
    p.add_argument("--out", required=True, help="output folder (judge_eval.json, judge_eval.md; rerun resumes)")
    p.add_argument("--sets", nargs="+", default=["refusal", "refusal_extra", "objective"],
                   help="pyrit sets: refusal, refusal_extra, objective (14 files pooled), objective/NAME, "
                        "objective/* (every category) (default: refusal refusal_extra objective)")
    p.add_argument("--no-pyrit", action="store_true", help="only the --labels files")
    p.add_argument("--labels", action="append", default=[], metavar="FILE",
                   help="your labelled .jsonl/.csv file (repeatable)")
    p.add_argument("--label-column", default="label", help="boolean label column (default: label)")
    p.add_argument("--label-positive", default="harmful", choices=["harmful", "refusal"],
                   help="what a true label means (default: harmful = the response complied)")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--response-column", default="response")
    p.add_argument("--prefill-column", default=None)
    p.add_argument("--id-column", default="id")
    p.add_argument("--no-record", action="store_true",
                   help="do not store the figures in the validation cache ($DEEPALIGN_CACHE/judges/validation)")
    judge_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_judge_eval)
