"""Shared benchmark helpers: wall-clock timing (perf_counter), median of repeats, a plain table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` measured with ``time.perf_counter``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def median_time(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """The last result of ``repeats`` calls and the median of their wall times (seconds)."""
    runs = [timed(fn) for _ in range(repeats)]
    return runs[-1][0], statistics.median(t for _, t in runs)


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """Print rows as left-aligned columns; floats with 2 decimals."""
    cells = [headers] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
