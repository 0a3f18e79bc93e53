"""The command line shows deepalign's log messages once on stderr, even when a library has given the
root logger a handler (a module-level ``logging.info()`` call does, through ``logging.basicConfig``)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
logging.basicConfig()  # what a library's logging.info() does on import when the root has no handler
from deepalign.cli import _show_library_messages
_show_library_messages()
logging.getLogger("deepalign.pipeline.stress").info("grid point 3 of 9 measured")
"""


def test_a_library_message_is_shown_once_with_a_root_handler():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = [line for line in done.stderr.splitlines() if "grid point 3 of 9" in line]
    assert lines == ["deepalign: grid point 3 of 9 measured"]


def test_library_use_keeps_propagation():
    # no CLI in the process (a fresh one: CLI tests in this session have set up the deepalign logger)
    script = ("import logging; logging.basicConfig(format='root: %(message)s', level=logging.INFO)\n"
              "import deepalign.pipeline.stress\n"
              "logging.getLogger('deepalign.pipeline.stress').info('measured')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert [line for line in done.stderr.splitlines() if "measured" in line] == ["root: measured"]
