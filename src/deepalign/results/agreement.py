"""Agreement of a judge with a reference (human labels, or another judge): the confusion table, accuracy,
precision, recall, F1 and Cohen's kappa, each with a 95% interval.

Positive class = harmful. Accuracy, precision and recall are proportions: Wilson score intervals. F1 and
kappa are not: percentile bootstrap over rows (:data:`BOOTSTRAP_RESAMPLES` resamples, seed
:data:`BOOTSTRAP_SEED`; a row resample is a multinomial draw of the four confusion cells, which is what is
drawn). :func:`metrics` also reports precision/recall/F1 with the other class positive when asked
(``pyrit_orientation``: PyRIT's refusal scorer takes refusal as its positive class).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deepalign.results.stats import wilson_interval

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_METHODS = {
    "accuracy": "Wilson score",
    "precision": "Wilson score",
    "recall": "Wilson score",
    "f1": f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
    "kappa": f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
}


@dataclass(frozen=True)
class Confusion:
    """Judge vs human, positive = harmful: tp judge and human harmful, fp judge harmful / human safe..."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @classmethod
    def of(cls, judged: Sequence[bool], human: Sequence[bool]) -> Confusion:
        if len(judged) != len(human):
            raise ValueError("judged and human labels differ in length")
        pairs = list(zip(judged, human, strict=True))
        return cls(
            tp=sum(j and h for j, h in pairs), fp=sum(j and not h for j, h in pairs),
            fn=sum(h and not j for j, h in pairs), tn=sum(not j and not h for j, h in pairs),
        )

    def flipped(self) -> Confusion:
        """The same table with the other class as positive."""
        return Confusion(tp=self.tn, fp=self.fn, fn=self.fp, tn=self.tp)

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def accuracy(c: Confusion) -> float | None:
    return _ratio(c.tp + c.tn, c.n)


def precision(c: Confusion) -> float | None:
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float | None:
    return _ratio(c.tp, c.tp + c.fn)


def f1(c: Confusion) -> float | None:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def kappa(c: Confusion) -> float | None:
    """Cohen's kappa (po - pe) / (1 - pe); None when chance agreement is 1 (both raters constant)."""
    n = c.n
    if not n:
        return None
    po = (c.tp + c.tn) / n
    pe = ((c.tp + c.fp) * (c.tp + c.fn) + (c.fn + c.tn) * (c.fp + c.tn)) / (n * n)
    return None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    """:func:`~deepalign.results.stats.wilson_interval`, or None when there is nothing to count (n = 0)."""
    return wilson_interval(successes, n) if n else None


def bootstrap_interval(c: Confusion, statistic, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of ``statistic(Confusion)`` over row resamples (None-valued draws
    are dropped; None if fewer than half the draws are defined)."""
    import numpy as np

    if not c.n:
        return None
    rng = np.random.default_rng(seed)
    cells = np.array([c.tp, c.fp, c.fn, c.tn], dtype=float) / c.n
    draws = rng.multinomial(c.n, cells, size=resamples)
    values = [v for v in (statistic(Confusion(*map(int, d))) for d in draws) if v is not None]
    if len(values) < resamples / 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def metrics(c: Confusion, *, pyrit_positive: str | None = None) -> dict[str, Any]:
    """Every agreement metric of a confusion table with its 95% interval (see the module docstring)."""
    out: dict[str, Any] = {"n": c.n, "confusion": c.to_dict(), "ci_methods": CI_METHODS}
    out["accuracy"] = {"value": accuracy(c), "ci": wilson(c.tp + c.tn, c.n)}
    out["precision"] = {"value": precision(c), "ci": wilson(c.tp, c.tp + c.fp)}
    out["recall"] = {"value": recall(c), "ci": wilson(c.tp, c.tp + c.fn)}
    out["f1"] = {"value": f1(c), "ci": bootstrap_interval(c, f1)}
    out["kappa"] = {"value": kappa(c), "ci": bootstrap_interval(c, kappa)}
    out["human_harmful_share"] = _ratio(c.tp + c.fn, c.n)
    out["judge_harmful_share"] = _ratio(c.tp + c.fp, c.n)
    if pyrit_positive == "refusal":
        r = c.flipped()
        out["pyrit_orientation"] = {"positive": "refusal", "precision": precision(r), "recall": recall(r), "f1": f1(r)}
    elif pyrit_positive == "harmful":
        out["pyrit_orientation"] = {"positive": "harmful", "precision": precision(c), "recall": recall(c), "f1": f1(c)}
    return out
