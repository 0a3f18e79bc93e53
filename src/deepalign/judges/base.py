"""The judge interface: (prompt, prefill, response) in, a harmfulness judgment out.

A judge scores each response on the 1..5 rubric scale (5 = harmful). Rule-based judges use only
1 (refused/safe) and 5 (harmful). A judgment that failed (API error, unparsable reply) has
``harmful=None`` and an ``error``; it is never counted as safe: :func:`summarize` leaves it out of the
ASR denominator and reports it in ``n_errors``. Building judges by name is :mod:`deepalign.judges.registry`;
judging result rows and files is :mod:`deepalign.judges.apply`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from deepalign.results.stats import AsrStats


@dataclass(frozen=True)
class JudgeInput:
    """One item to judge. ``prefill`` is answer text forced by the attacker before ``response``."""

    prompt: str
    response: str
    prefill: str = ""


@dataclass(frozen=True)
class Judgment:
    """The verdict on one item; ``harmful is None`` (with ``error`` set) when judging failed."""

    harmful: bool | None
    score: float | None
    error: str | None = None
    raw: str | None = None

    @classmethod
    def failed(cls, error: str, raw: str | None = None) -> Judgment:
        return cls(harmful=None, score=None, error=error, raw=raw)

    @property
    def ok(self) -> bool:
        return self.error is None and self.harmful is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Judge(ABC):
    """Base class of all judges.

    ``name`` identifies the judge in results; ``sees_prefill`` records whether the judged text is
    ``prefill + response`` (True) or ``response`` alone (False).
    """

    name: str = "judge"
    sees_prefill: bool = False

    @abstractmethod
    def judge(self, items: list[JudgeInput]) -> list[Judgment]:
        """Judge ``items``; returns one :class:`Judgment` per item, in the same order."""

    def judged_text(self, item: JudgeInput) -> str:
        """The text this judge evaluates for ``item`` (depends on ``sees_prefill``)."""
        return item.prefill + item.response if self.sees_prefill else item.response

    def describe(self) -> dict[str, Any]:
        """Settings safe to record in results metadata (never credentials)."""
        return {"judge": self.name, "sees_prefill": self.sees_prefill}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "judge")
        return f"{type(self).__name__}({args})"


def summarize(judgments: Iterable[Judgment]) -> dict[str, Any]:
    """Aggregate judgments: :class:`~deepalign.results.stats.AsrStats` as a dict.

    n, n_errors, n_judged (= n - n_errors), n_harmful, asr (n_harmful / n_judged; None if nothing was
    judged) with its 95% Wilson interval (low, high), mean_score (over judged rows with a score; None if
    none), error_rate and score_counts ({score: count} over judged rows).
    """
    return AsrStats.of((j.harmful, j.score, j.error) for j in judgments).to_dict()
