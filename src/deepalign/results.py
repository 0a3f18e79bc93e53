"""Results files: JSONL rows with stable ids, appended as produced, so a killed run resumes.

A row is a flat JSON object with an ``id`` (str). A half-written last line (a kill mid-write) is cut off
on reopening; rows whose id is already present are never written twice. Whole files (summaries,
figures, metadata) are written atomically: temp file in the same folder, then rename.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deepalign.errors import DeepAlignError

SECRET_NAMES = ("api_key", "key", "token", "secret", "password", "authorization")
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a results file written by :class:`ResultsWriter` (a torn last line is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                rows.append(json.loads(line))
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
        self._repair_torn_tail()
        self.done: set[str] = {str(r["id"]) for r in read_jsonl(self.path)} if self.path.exists() else set()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

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


def _is_secret_name(name: str) -> bool:
    name = name.lower().replace("-", "_").lstrip("_")
    return name in SECRET_NAMES or name.endswith(tuple("_" + n for n in SECRET_NAMES))


def _secret_env_values() -> list[str]:
    """Values (8+ characters) of environment variables named like credentials (OPENAI_API_KEY, HF_TOKEN...)."""
    return sorted({v for k, v in os.environ.items() if _is_secret_name(k) and len(v) >= 8}, key=len, reverse=True)


def _scrub_text(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return _URL_USERINFO.sub(r"\1***@", text)


def scrub_argv(argv: list[str]) -> list[str]:
    """A command line with the values of credential-like options (``--api-key X``, ``--token=X``) masked."""
    out, mask_next = [], False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if mask_next:
            out.append("***")
        elif arg.startswith("-") and eq and _is_secret_name(name.lstrip("-")):
            out.append(f"{name}=***")
        else:
            out.append(arg)
        mask_next = not mask_next and arg.startswith("-") and not eq and _is_secret_name(arg.lstrip("-"))
    return out


def scrub_secrets(obj: Any, _secrets: list[str] | None = None) -> Any:
    """``obj`` with credentials removed: values under keys that look like credentials (api_key, token, ...)
    become '***', and in every string the values of credential-like environment variables and the user
    info of URLs (``https://user:pw@host``) are masked."""
    secrets = _secret_env_values() if _secrets is None else _secrets
    if isinstance(obj, dict):
        return {
            k: ("***" if _is_secret_name(str(k)) and v else scrub_secrets(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [scrub_secrets(v, secrets) for v in obj]
    if isinstance(obj, str):
        return _scrub_text(obj, secrets)
    return obj


def write_run_metadata(out_dir: str | os.PathLike, *, trust_remote_code: bool = False, **fields: Any) -> dict:
    """Write ``meta.json`` in ``out_dir``: the given fields, ``trust_remote_code`` (always recorded; pass
    True when a model was loaded with it), versions and the command line, all scrubbed of credentials."""
    import torch
    import transformers

    from deepalign import __version__

    meta = {
        "deepalign": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "argv": scrub_argv(sys.argv[1:]),
        "trust_remote_code": bool(trust_remote_code),
        **fields,
    }
    meta = scrub_secrets(meta)
    atomic_write_json(Path(out_dir) / "meta.json", meta)
    return meta


def iter_batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
