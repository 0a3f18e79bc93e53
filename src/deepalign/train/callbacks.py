"""Trainer callbacks: the augmentation's epoch, and the training log (``training_log.jsonl``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from transformers import TrainerCallback

from deepalign.io import ResultsWriter


class EpochCallback(TrainerCallback):
    """Sets the epoch of a redrawn dataset at the start of every epoch (before the epoch's dataloader
    iterator and its workers exist). accelerate's ``DataLoaderShard.set_epoch`` does not reach the
    dataset when the sampler is sharded over processes, so this is what keeps draws in step. A run resumed
    from a checkpoint inside an epoch starts with a fractional ``state.epoch`` (e.g. 0.53 after 8 of 15
    steps): its epoch is the whole part (rounding would serve epoch 1's draws for the rest of epoch 0)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-6))  # 1e-6: 0.9999999 after 15 of 15 steps


class TrainingLogCallback(TrainerCallback):
    """Appends one JSONL row per logged step to ``path`` (main process): step, epoch, loss (the trained
    loss), objective (the exact objective), learning_rate, grad_norm."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            row = {"id": f"step-{state.global_step:07d}", "step": state.global_step}
            row.update({k: logs.get(k) for k in ("epoch", "loss", "objective", "learning_rate", "grad_norm")})
            with ResultsWriter(self.path) as writer:
                writer.write(row)


class HeapTrimCallback(TrainerCallback):
    """CPU training under glibc: hands the heap's free pages back to the OS (``malloc_trim``) at the end of a step
    whenever the process's resident memory has grown ``growth`` times past what it was after the first step.

    Tensors of changing shapes (augmented batches differ in length every step) fragment glibc's heap, which keeps
    the freed pages: a SmolLM2 augmentation run grew from 6 to 14 GB and was killed for memory on a 24 GB machine.
    Trimming after every step held it at 1.2-1.8 GB but made steps about 25% slower (the next step faults its
    pages back in), so this trims only once fragmentation has grown (docs/benchmarks.md)."""

    def __init__(self, growth: float = 1.25):
        self.growth = growth
        self.baseline: int | None = None
        self.trims = 0
        self._trim = _glibc_malloc_trim()

    def on_step_end(self, args, state, control, **kwargs):
        if self._trim is None:
            return
        rss = resident_bytes()
        if self.baseline is None:
            self.baseline = rss
        elif rss > self.growth * self.baseline:
            self._trim(0)
            self.trims += 1


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _glibc_malloc_trim():
    """glibc's ``malloc_trim`` (None on other C libraries)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
