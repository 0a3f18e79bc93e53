"""The ``deepalign`` command: each subcommand is a thin shell over one library function.

Subcommands live in one module per area (depth diagnostics, data, training, whole runs); each module
has a `register(subparsers)`. User errors (bad files, unknown models, offline hub ids) print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from deepalign.errors import DeepAlignError


def build_parser() -> argparse.ArgumentParser:
    from deepalign import __version__
    from deepalign.cli import data, depth, run, train

    parser = argparse.ArgumentParser(
        prog="deepalign", description="Measure, deepen and protect the depth of a model's safety alignment."
    )
    parser.add_argument("--version", action="version", version=f"deepalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (depth, data, train, run):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except DeepAlignError as e:
        print(f"deepalign: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepalign: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
