"""``claims.json``: the claims of a run, machine-readable, beside report.md.

Schema (``schema_version`` 1)::

    {"schema_version": 1, "suite": str, "seeds": [int], "judge": str,
     "claims": [{"id": int (1-based, the report's numbering), "title": str,
                 "verdict": "reproduced" | "not reproduced" | "not measured" | <a stated status>,
                 "reproduced": bool | null, "rule": str, "ours": str (the report's sentence),
                 "numbers": {...}  (rates as {"value", "low", "high", "harmful", "n", "per_seed"}: 0..1, 95% Wilson),
                 "paper": str, "paper_numbers": {...}, "seeds": [int], "judge": str}]}

Non-finite numbers (NaN where nothing was measured) are written as null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from deepalign.io import atomic_write_text
from deepalign.report.document import Claim
from deepalign.results.schemas import CLAIMS_SCHEMA_VERSION


def _finite(obj):
    """``obj`` with every non-finite float replaced by None, at any depth (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def claims_document(claims: Sequence[Claim], *, suite: str, seeds: Sequence[int], judge: str) -> dict:
    """The ``claims.json`` document of a run (module docstring)."""
    return _finite({
        "schema_version": CLAIMS_SCHEMA_VERSION, "suite": suite, "seeds": list(seeds), "judge": judge,
        "claims": [{"id": i, "title": c.title, "verdict": c.verdict, "reproduced": c.reproduced, "rule": c.rule,
                    "ours": c.ours, "numbers": c.numbers, "paper": c.paper, "paper_numbers": c.paper_numbers,
                    "seeds": list(seeds), "judge": judge} for i, c in enumerate(claims, 1)],
    })


def write_claims_json(run: str | Path, claims: Sequence[Claim], *, suite: str, seeds: Sequence[int],
                      judge: str) -> Path:
    """Write ``run/claims.json`` (atomically, strict JSON); returns its path."""
    path = Path(run) / "claims.json"
    text = json.dumps(claims_document(claims, suite=suite, seeds=seeds, judge=judge), indent=1, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return path
