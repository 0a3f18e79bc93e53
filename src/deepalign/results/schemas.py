"""The machine-readable verdict files and their versions: ``card.json`` (``deepalign audit``) and
``claims.json`` (``deepalign reproduce``); docs/schemas.md describes every field.

Each file carries ``schema_version`` (an integer, raised when a field is renamed, removed or changes meaning;
new optional fields keep the version). :func:`validate_file` checks a file against its schema and raises a
DataError naming the file and the field on the first problem; ``deepalign validate FILE...`` runs it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from deepalign.errors import DataError, DeepAlignError

CARD_SCHEMA_VERSION = 1
CLAIMS_SCHEMA_VERSION = 1
VERDICTS = ("reproduced", "not reproduced", "not measured")


def _fail(path: str, field: str, problem: str) -> DataError:
    return DataError(path, None, field, problem)


def _number(value: Any, path: str, field: str, *, nullable: bool = False, unit: bool = False) -> None:
    if value is None and nullable:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (unit and not 0 <= value <= 1):
        what = "a number in [0, 1]" if unit else "a finite number"
        raise _fail(path, field, f"expected {what}{' or null' if nullable else ''}, got {value!r}")


def _integer(value: Any, path: str, field: str, *, nullable: bool = False, minimum: int = 0) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(path, field, f"expected an integer >= {minimum}{' or null' if nullable else ''}, got {value!r}")


def _string(value: Any, path: str, field: str) -> None:
    if not isinstance(value, str):
        raise _fail(path, field, f"expected a string, got {value!r}")


def _version(doc: dict, path: str, current: int) -> None:
    version = doc.get("schema_version")
    _integer(version, path, "schema_version", minimum=1)
    if version > current:
        raise _fail(path, "schema_version", f"version {version} is newer than this deepalign reads ({current})")


def validate_card(doc: Any, path: str = "card.json") -> None:
    """Check an audit card (``AuditCard`` as JSON); raises DataError naming ``path`` and the field."""
    if not isinstance(doc, dict):
        raise _fail(path, "", "expected a JSON object")
    _version(doc, path, CARD_SCHEMA_VERSION)
    _string(doc.get("model"), path, "model")
    _number(doc.get("depth_score"), path, "depth_score", unit=True)
    _integer(doc.get("prefill_depth"), path, "prefill_depth", nullable=True)
    prefill = doc.get("prefill")
    if not isinstance(prefill, dict) or not prefill:
        raise _fail(path, "prefill", "expected a non-empty object {k: harmful rate}")
    for k, rate in prefill.items():
        if not str(k).isdigit():
            raise _fail(path, f"prefill.{k}", "keys are prefilled token counts (0, 5, ...)")
        _number(rate, path, f"prefill.{k}", nullable=True, unit=True)
    _integer(doc.get("kl_depth"), path, "kl_depth", nullable=True)
    _number(doc.get("kl_share_first_5"), path, "kl_share_first_5", nullable=True, unit=True)
    for name in ("n_pairs", "n_rows", "n_judge_errors"):
        _integer(doc.get(name), path, name)
    if not isinstance(doc.get("extra", {}), dict):
        raise _fail(path, "extra", "expected an object")


def validate_claims(doc: Any, path: str = "claims.json") -> None:
    """Check a claims file (one verdict per claim of a reproduce run); raises DataError naming the field."""
    if not isinstance(doc, dict):
        raise _fail(path, "", "expected a JSON object")
    _version(doc, path, CLAIMS_SCHEMA_VERSION)
    _string(doc.get("suite"), path, "suite")
    claims = doc.get("claims")
    if not isinstance(claims, list) or not claims:
        raise _fail(path, "claims", "expected a non-empty list of claims")
    for i, claim in enumerate(claims):
        where = f"claims[{i}]"
        if not isinstance(claim, dict):
            raise _fail(path, where, "expected an object")
        for name in ("title", "paper", "ours"):
            _string(claim.get(name), path, f"{where}.{name}")
        reproduced = claim.get("reproduced")
        if reproduced not in (True, False, None):
            raise _fail(path, f"{where}.reproduced", f"expected true, false or null, got {reproduced!r}")
        verdict = claim.get("verdict")
        expected = VERDICTS[(True, False, None).index(reproduced)]
        stated = reproduced is None and isinstance(verdict, str) and verdict.strip() and verdict not in VERDICTS[:2]
        if verdict != expected and not stated:  # undecided claims may state why (e.g. the judge they need)
            raise _fail(path, f"{where}.verdict", f"expected {expected!r} (from reproduced), got {verdict!r}")


def validate_file(path: str | os.PathLike[str]) -> str:
    """Validate ``card.json`` or ``claims.json`` (told apart by their fields); returns which it was."""
    label = os.fspath(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeepAlignError(f"{label}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(label, getattr(e, "lineno", None), None, f"not valid JSON ({e})") from None
    if isinstance(doc, dict) and "claims" in doc:
        validate_claims(doc, label)
        return "claims"
    validate_card(doc, label)
    return "card"
