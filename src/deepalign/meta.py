"""Run metadata (``meta.json``) and the one place that scrubs credentials from what we record.

Library code never reads ``sys.argv``: the CLI states the command line with :func:`command_line`, and
:func:`write_run_metadata` records it (scrubbed) for the runs made inside that block.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deepalign._version import __version__
from deepalign.io import atomic_write_json

SECRET_NAMES = ("api_key", "key", "token", "secret", "password", "authorization")
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_COMMAND_LINE: ContextVar[tuple[str, ...] | None] = ContextVar("deepalign_command_line", default=None)


@contextmanager
def command_line(argv: Sequence[str]) -> Iterator[None]:
    """Record ``argv`` (the CLI's arguments) in the metadata of the runs made inside this block."""
    token = _COMMAND_LINE.set(tuple(argv))
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


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


def url_without_credentials(url: str | None, *, keep_query: bool = False) -> str | None:
    """``url`` without its user info (``user:pw@``) and, unless ``keep_query``, its query string (either may
    carry a credential)."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query if keep_query else "", ""))


def scrub_argv(argv: Sequence[str]) -> list[str]:
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
    True when a model was loaded with it), versions and the command line (see :func:`command_line`; empty
    outside the CLI), all scrubbed of credentials."""
    import torch
    import transformers

    meta = {
        "deepalign": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "argv": scrub_argv(_COMMAND_LINE.get() or ()),
        "trust_remote_code": bool(trust_remote_code),
        **fields,
    }
    meta = scrub_secrets(meta)
    atomic_write_json(Path(out_dir) / "meta.json", meta)
    return meta
