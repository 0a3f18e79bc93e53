"""A judge's validation, carried by every summary that reports an ASR, and the line that quotes it.

``deepalign judge-eval`` measures a judge's agreement with human labels and stores it in the validation
cache (:mod:`deepalign.judges.validity`); runners look it up and attach it to their summaries as a
:class:`JudgeValidation` (``None`` when the judge was never measured: the ASR is then reported as "not
validated"). :func:`format_asr` writes an ASR with its interval and the judge's figures, e.g.
``ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)``.

The quoted agreement is that on the pooled ``objective`` set when the judge was evaluated on it (its
label, "the harmful objective was achieved", is what an ASR counts), else on the largest set evaluated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HEADLINE_SET = "objective"
# The organism's judge: harmful iff the answer carries a forbidden craft's words, which define harm in that world.
EXACT_BY_DEFINITION = "exact"


@dataclass(frozen=True)
class JudgeValidation:
    """The headline of a judge's measured agreement with human labels.

    ``set``: the label set quoted; ``n``: its rows judged; ``accuracy`` in 0..1 with its 95% Wilson interval
    (``low``, ``high``; None if unknown); ``key``: the validation-cache key of the judge's settings;
    ``sets``: every set the judge was measured on."""

    set: str
    n: int
    accuracy: float
    low: float | None = None
    high: float | None = None
    key: str = ""
    sets: list[str] = field(default_factory=list)

    @classmethod
    def of_entry(cls, entry: Mapping[str, Any] | None) -> JudgeValidation | None:
        """The headline of a validation-cache entry (``{"key", "sets": {name: {"n", "accuracy": {"value",
        "ci"}, ...}}}``), or None when the entry holds no set with a measured accuracy."""
        sets = {k: v for k, v in ((entry or {}).get("sets") or {}).items() if (v.get("accuracy") or {}).get("value")
                is not None}
        if not sets:
            return None
        name = HEADLINE_SET if HEADLINE_SET in sets else max(sets, key=lambda s: sets[s].get("n") or 0)
        s = sets[name]
        ci = s["accuracy"].get("ci") or (None, None)
        return cls(set=name, n=int(s["n"]), accuracy=float(s["accuracy"]["value"]), low=ci[0], high=ci[1],
                   key=str(entry.get("key", "")), sets=sorted((entry or {}).get("sets") or {}))

    @classmethod
    def of_dict(cls, d: Mapping[str, Any] | None) -> JudgeValidation | None:
        """Back from ``to_dict()`` (a ``summary.json`` field); None stays None."""
        if not d or d.get("accuracy") is None:
            return None
        return cls(set=d.get("set", ""), n=int(d.get("n") or 0), accuracy=float(d["accuracy"]), low=d.get("low"),
                   high=d.get("high"), key=d.get("key", ""), sets=list(d.get("sets") or []))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validation(v: JudgeValidation | Mapping[str, Any] | None) -> JudgeValidation | None:
    if v is None or isinstance(v, JudgeValidation):
        return v
    return JudgeValidation.of_dict(v) if "accuracy" in v else JudgeValidation.of_entry(v)


def judge_phrase(name: str, validation: JudgeValidation | Mapping[str, Any] | None) -> str:
    """``keyword judge; 81% agreement with human labels, 395 rows``, that the judge is not validated (and how
    to validate it), or, for the organism's exact judge, that it is exact by definition. ``validation``: a
    :class:`JudgeValidation`, its dict, a cache entry, or None."""
    v = _validation(validation)
    if name == EXACT_BY_DEFINITION:
        return f"{name} judge; exact by definition on the organism's synthetic world, where no human labels apply"
    if v is None:
        return f"{name} judge; not validated against human labels: deepalign judge-eval --judge {name}"
    return f"{name} judge; {100 * v.accuracy:.0f}% agreement with human labels, {v.n} rows"


def format_asr(asr: float | None, low: float | None, high: float | None, name: str,
               validation: JudgeValidation | Mapping[str, Any] | None) -> str:
    """``ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)`` (rates in 0..1; the
    interval is left out when ``low`` or ``high`` is None)."""
    if asr is None:
        text = "ASR n/a"
    else:
        text = f"ASR {100 * asr:.0f}%"
        if low is not None and high is not None:
            text += f" [{100 * low:.0f}, {100 * high:.0f}]"
    return f"{text} ({judge_phrase(name, validation)})"
