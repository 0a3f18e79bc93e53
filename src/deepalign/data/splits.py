"""Seeded, input-order-independent splits and samples of records (anything with a unique ``id``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol, TypeVar

from deepalign.errors import DeepAlignError


class HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=HasId)


def shuffled(records: Sequence[R], seed: int) -> list[R]:
    """Records sorted by id, then shuffled with ``random.Random(seed)``: the same for any input order."""
    ordered = sorted(records, key=lambda r: r.id)
    for a, b in pairwise(ordered):
        if a.id == b.id:
            raise DeepAlignError(f"cannot split: duplicate record id '{a.id}'")
    random.Random(seed).shuffle(ordered)
    return ordered


def split(records: Sequence[R], sizes: float | Sequence[float], seed: int = 0) -> list[list[R]]:
    """Disjoint parts of ``records`` that together hold every record.

    ``sizes`` are counts (ints) or fractions (floats in (0, 1]); a single number means ``[number]``.
    Parts follow ``sizes``; a last part with the rest is added unless fractions sum to 1. Fraction
    boundaries are ``round(cumulative fraction * len(records))``. ``split(r, [n], s)[0] == sample(r, n, s)``.
    Example: ``train, test = split(records, 0.8, seed=0)``.
    """
    parts = [sizes] if isinstance(sizes, (int, float)) else list(sizes)
    if not parts:
        raise DeepAlignError("split: sizes is empty")
    n = len(records)
    if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        if any(p < 0 for p in parts) or sum(parts) > n:
            raise DeepAlignError(f"split: counts {parts} must be >= 0 and sum to at most {n} records")
        cuts = [sum(parts[: i + 1]) for i in range(len(parts))]
        whole = False
    else:
        if any(not 0 < p <= 1 for p in parts) or sum(parts) > 1 + 1e-9:
            raise DeepAlignError(f"split: fractions {parts} must be in (0, 1] and sum to at most 1")
        total = sum(parts)
        whole = abs(total - 1) <= 1e-9
        cuts = [round(sum(parts[: i + 1]) * n) for i in range(len(parts))]
        if whole:
            cuts[-1] = n
    ordered = shuffled(records, seed)
    bounds = [0, *cuts] + ([] if whole else [n])
    return [ordered[a:b] for a, b in pairwise(bounds)]


def sample(records: Sequence[R], n: int, seed: int = 0) -> list[R]:
    """``n`` records drawn without replacement; a larger ``n`` extends a smaller one's sample (same seed)."""
    if not 0 <= n <= len(records):
        raise DeepAlignError(f"sample: n={n} but there are {len(records)} records")
    return shuffled(records, seed)[:n]
