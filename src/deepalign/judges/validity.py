"""A judge's validation figures travel with every ASR it produces.

``deepalign judge-eval`` stores a judge's agreement with human labels in a cache keyed by a hash of the
judge's :meth:`~deepalign.judges.base.Judge.describe` (operational settings such as concurrency, timeouts
or cache folders left out, since they do not change a verdict): ``$DEEPALIGN_CACHE/judges/validation/
<hash>.json``, written atomically. :func:`lookup` finds them for a judge, and :func:`format_asr` writes an
ASR with its interval and the judge's figures, e.g.
``ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)``.

The quoted agreement is that on the pooled ``objective`` set when the judge was evaluated on it (its
label, "the harmful objective was achieved", is what an ASR counts), else on the largest set evaluated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# describe() keys that do not change a verdict, left out of the hash.
OPERATIONAL_KEYS = frozenset({
    "cache_dir", "concurrency", "timeout", "max_retries", "progress", "batch_size", "device", "dtype",
})
HEADLINE_SET = "objective"


def judge_key(description: dict[str, Any]) -> str:
    """Hex digest (16 characters) of a judge description without its operational settings."""
    kept = {k: v for k, v in description.items() if k not in OPERATIONAL_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validation_dir() -> Path:
    from deepalign.paths import cache_dir

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
    """Store a :func:`~deepalign.judges.validation.evaluate` report's figures for its judge; returns the file.

    Sets already recorded for the same judge and not in ``report`` are kept (a later run on one set
    does not erase the others)."""
    from deepalign.io import atomic_write_json

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
    """The recorded validation of the judge with this ``describe()``, or None."""
    return _read(validation_dir() / f"{judge_key(description)}.json")


def headline(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"set", "n", "accuracy", "ci"}`` of the set quoted beside an ASR (see the module docstring)."""
    if not validation or not validation.get("sets"):
        return None
    sets = validation["sets"]
    name = HEADLINE_SET if HEADLINE_SET in sets else max(sets, key=lambda s: sets[s].get("n") or 0)
    s = sets[name]
    return {"set": name, "n": s["n"], "accuracy": s["accuracy"]["value"], "ci": s["accuracy"].get("ci")}


def validation_field(description: dict[str, Any]) -> dict[str, Any] | None:
    """What a summary records about its judge's validity: the headline figures and the cache key."""
    v = lookup(description)
    h = headline(v)
    return None if h is None else {**h, "key": v["key"], "sets": sorted(v["sets"])}


def judge_phrase(validation: dict[str, Any] | None, name: str) -> str:
    """``keyword judge; 81% agreement with human labels, 395 rows`` (or how to get them)."""
    h = validation if validation and "accuracy" in validation else headline(validation)
    if h is None or h.get("accuracy") is None:
        return f"{name} judge; not validated against human labels (deepalign judge-eval --judge {name})"
    return f"{name} judge; {100 * h['accuracy']:.0f}% agreement with human labels, {h['n']} rows"


def format_asr(asr: float | None, low: float | None, high: float | None, name: str,
               validation: dict[str, Any] | None) -> str:
    """``ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)``.

    ``validation`` is a :func:`lookup` result, a :func:`validation_field` / :func:`headline` dict, or None."""
    if asr is None:
        text = "ASR n/a"
    else:
        text = f"ASR {100 * asr:.0f}%"
        if low is not None and high is not None:
            text += f" [{100 * low:.0f}, {100 * high:.0f}]"
    return f"{text} ({judge_phrase(validation, name)})"
