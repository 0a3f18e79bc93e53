"""Trainer callbacks: the augmentation's epoch, and the training log (``training_log.jsonl``)."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback

from deepalign.io import ResultsWriter


class EpochCallback(TrainerCallback):
    """Sets the epoch of a redrawn dataset at the start of every epoch (before the epoch's dataloader
    iterator and its workers exist). accelerate's ``DataLoaderShard.set_epoch`` does not reach the
    dataset when the sampler is sharded over processes, so this is what keeps draws in step."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(round(state.epoch or 0))


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
