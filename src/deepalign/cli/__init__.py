"""The ``deepalign`` command: each subcommand is a thin shell over one library function.

Subcommands live in one module per area (depth diagnostics, data, training, whole runs); each module
has a `register(subparsers)`, and options come from the config dataclasses (:mod:`.options`). User
errors (bad files, unknown models, offline hub ids) print one line and exit with status 2. Library
messages (``logging``, e.g. "building the model organism") go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from deepalign._version import __version__
from deepalign.errors import DeepAlignError
from deepalign.meta import command_line


def build_parser() -> argparse.ArgumentParser:
    from deepalign.cli import align, data, depth, judges, run, stress, train

    parser = argparse.ArgumentParser(
        prog="deepalign", description="Measure, deepen and protect the depth of a model's safety alignment."
    )
    parser.add_argument("--version", action="version", version=f"deepalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (depth, data, judges, train, align, stress, run):
        area.register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test capture swaps it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _show_library_messages() -> None:
    log = logging.getLogger("deepalign")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("deepalign: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # shown once, here: a library's logging.info() may give the root logger a handler


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``: its arguments, default the process's); ``meta.json`` files record the
    process's command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "preset", None) and getattr(args, "reparse", None):  # a preset's values become defaults
        args = args.reparse(parser, argv, args)
    _show_library_messages()
    if getattr(args, "no_progress", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        with command_line(sys.argv[1:]):
            return args.func(args)
    except DeepAlignError as e:
        print(f"deepalign: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("deepalign: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
