"""User-facing errors: the CLI prints them as one line and exits with their ``exit_code`` (2, or 3).

Every deepalign error is also a ``ValueError`` (bad input or settings), so callers that already catch
``ValueError`` keep working.
"""

from __future__ import annotations


class DeepAlignError(ValueError):
    """An error caused by the user's input or environment (bad file, unknown model, offline hub id)."""

    exit_code = 2

    def one_line(self) -> str:
        """The message on one line: line breaks that came in with the user's values (an id, a column name)
        are shown escaped, as ``\\n``."""
        return one_line(str(self))


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``\\r``, ``\\n``), for a one-line message."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class DataError(DeepAlignError):
    """Malformed input data; the message names file, line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        where = str(path) + (f":{line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(one_line(f"{where}: {what}{problem}"))
        self.path, self.line, self.field, self.problem = path, line, field, problem


class JudgeFailureError(DeepAlignError):
    """More judgments failed (API errors, unparsable replies) than the allowed share; results are complete
    but the ASR rests on too few rows. Exit status 3."""

    exit_code = 3
