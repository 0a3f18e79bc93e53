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
