"""Shared benchmark helpers: wall-clock timing (perf_counter, optionally synchronized and under inference
mode), median of repeats, a plain table printer."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], *, sync: Callable[[], None] | None = None,
          inference: bool = False) -> tuple[Any, float]:
    """``(fn(), seconds)`` measured with ``time.perf_counter``; ``sync`` (e.g. ``torch.cuda.synchronize``)
    is called before and after, and ``inference`` runs ``fn`` under ``torch.inference_mode``."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    if inference:
        import torch

        context = torch.inference_mode()
    else:
        context = contextlib.nullcontext()
    with context:
        result = fn()
    if sync is not None:
        sync()
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
