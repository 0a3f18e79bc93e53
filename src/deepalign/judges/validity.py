"""The validation cache: a judge's measured agreement with human labels, keyed by its settings.

``deepalign judge-eval`` stores a judge's figures in ``$DEEPALIGN_CACHE/judges/validation/<hash>.json``
(written atomically), the hash being that of the judge's :meth:`~deepalign.judges.base.Judge.describe`
without operational settings (concurrency, timeouts, cache folders, devices: they do not change a
verdict). :func:`known_validation` finds a judge's figures as the
:class:`~deepalign.results.validation.JudgeValidation` every ASR summary carries; it only reads the cache
(a judge is never measured at run time: that is ``judge-eval``'s job).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from deepalign.io import atomic_write_json
from deepalign.paths import cache_dir
from deepalign.results.validation import JudgeValidation

# describe() keys that do not change a verdict, left out of the hash.
OPERATIONAL_KEYS = frozenset({
    "cache_dir", "concurrency", "timeout", "max_retries", "progress", "batch_size", "device", "dtype",
})


def judge_key(description: dict[str, Any]) -> str:
    """Hex digest (16 characters) of a judge description without its operational settings."""
    kept = {k: v for k, v in description.items() if k not in OPERATIONAL_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validation_dir() -> Path:
    return cache_dir() / "judges" / "validation"


def _entry(report: dict[str, Any]) -> dict[str, Any]:
    sets = {}
    for r in report["sets"]:
        sets[r["set"]] = {
            "n": r["n"], "n_errors": r["n_errors"], "source": r["source"], "version": r["version"],
            **{m: r[m] for m in ("accuracy", "precision", "recall", "f1", "kappa")},
        }
    return {"judge": report["judge"], "key": judge_key(report["judge"]), "sets": sets}


def record(report: dict[str, Any]) -> Path:
    """Store a :func:`~deepalign.judges.evaluate.evaluate` report's figures for its judge; returns the file.

    Sets already recorded for the same judge and not in ``report`` are kept (a later run on one set
    does not erase the others)."""
    entry = _entry(report)
    path = validation_dir() / f"{entry['key']}.json"
    old = _read(path)
    if old is not None:
        entry["sets"] = {**old.get("sets", {}), **entry["sets"]}
    atomic_write_json(path, entry)
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def lookup(description: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded validation entry of the judge with this ``describe()``, or None."""
    return _read(validation_dir() / f"{judge_key(description)}.json")


def known_validation(description: dict[str, Any]) -> JudgeValidation | None:
    """The headline validation of the judge with this ``describe()`` (None: never measured)."""
    return JudgeValidation.of_entry(lookup(description))
