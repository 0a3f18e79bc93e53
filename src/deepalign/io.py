"""Results files: atomic whole-file writes, and append-only JSONL rows with stable ids that resume.

A row is a flat JSON object with an ``id`` (str). A half-written last line (a kill mid-write) is cut off
on reopening (:func:`repair_torn_tail`); rows whose id is already present are never written twice.
Whole files (summaries, figures, metadata) are written atomically: temp file in the same folder, then
rename. :func:`read_jsonl` is the one reader of such files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deepalign.errors import DeepAlignError


def check_out_dir(path: str | os.PathLike) -> Path:
    """``path`` as an output folder that exists or can be created; raises DeepAlignError otherwise.

    Creates nothing: commands call it before any work so that a bad ``--out`` fails up front.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DeepAlignError(f"{path}: output folder is an existing file")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DeepAlignError(f"{path}: cannot create the output folder ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeepAlignError(f"{path}: cannot create or write the output folder ({parent} is not writable)")
    return path


def make_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; an OSError (a file in the way, no permission, disk full) becomes a DeepAlignError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepAlignError(f"cannot create folder {path}: {e.strerror or e}") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    make_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def repair_torn_tail(path: str | os.PathLike) -> None:
    """Cut a half-written last line (no final newline, left by a kill mid-write) off a JSONL file."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | os.PathLike, *, skip_invalid: bool = False) -> list[dict]:
    """Rows of a JSONL results file; a torn last line is skipped, and with ``skip_invalid`` any line that
    is not a JSON object too (e.g. in a cache another version wrote)."""
    rows = []
    with open(path, encoding="utf-8", errors="replace" if skip_invalid else "strict") as f:
        for line in f:
            if not (line.endswith("\n") and line.strip()):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if skip_invalid:
                    continue
                raise
            if isinstance(row, dict) or not skip_invalid:
                rows.append(row)
    return rows


class ResultsWriter:
    """Append-only JSONL results file keyed by ``id``; reopening resumes where a killed run stopped.

    >>> w = ResultsWriter("runs/x/rows.jsonl")
    >>> todo = [r for r in items if r.id not in w.done]
    >>> w.write({"id": ..., ...})  # flushed and fsynced line by line
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        make_dir(self.path.parent)
        repair_torn_tail(self.path)
        self.done: set[str] = {str(r["id"]) for r in read_jsonl(self.path)} if self.path.exists() else set()
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        rid = str(row["id"])
        if rid in self.done:
            return
        self._f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.add(rid)

    def rows(self) -> list[dict]:
        return read_jsonl(self.path)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
