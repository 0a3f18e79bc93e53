"""Fine-tuning dynamics: per-position loss and gradient norm over the first response tokens, ASR at steps.

For a fixed probe batch (e.g. the harmful fine-tuning examples) and response positions t = 1..N:

    loss_t      = mean over the examples that have a token t of -log pi_theta(y_t | x, y_<t)      [nats]
    grad_norm_t = || d loss_t / d theta ||_2 over the trainable parameters

(the paper's Fig. 3: on harmful data, both are largest on the first response tokens, which is why a few
fine-tuning steps undo a shallow alignment). :class:`DynamicsCallback` records them before given
optimizer steps (and after the last one); :class:`AsrCallback` evaluates ASR at given steps. Both
write JSONL rows on the main process; run them in one process or under DDP (not with sharded weights).
Their figures are drawn by :mod:`deepalign.report.figures`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import TrainerCallback

from deepalign.chat import pad_batch
from deepalign.io import ResultsWriter
from deepalign.train.augment import Example
from deepalign.train.objectives import IGNORE_INDEX, response_positions, token_logps


def position_losses_and_grad_norms(model, examples: Sequence[Example], max_positions: int, pad_id: int = 0):
    """Per-position mean CE and gradient norm on ``examples`` (one forward, one backward per position).

    Returns ``(loss [N] float64, grad_norm [N] float64, count [N] long)`` for t = 1..N = max_positions
    (NaN where no example has a token t). Does not touch ``.grad`` of the parameters.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    ids, mask = pad_batch([e["input_ids"] for e in examples], pad_id)
    labels, _ = pad_batch([e["labels"] for e in examples], IGNORE_INDEX)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    was_training = model.training
    model.eval()  # no dropout: the measurement is deterministic
    with torch.enable_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        nll = -token_logps(logits, labels)  # [B, L]
        positions = response_positions(labels)  # [B, L]
        losses = torch.full((max_positions,), float("nan"), dtype=torch.float64)
        norms = torch.full((max_positions,), float("nan"), dtype=torch.float64)
        counts = torch.zeros(max_positions, dtype=torch.long)
        for t in range(1, max_positions + 1):
            at = positions == t
            n = int(at.sum())
            if n == 0:
                continue
            loss_t = nll[at].sum() / n
            grads = torch.autograd.grad(loss_t, params, retain_graph=True, allow_unused=True)
            sq = sum(g.double().pow(2).sum() for g in grads if g is not None)
            losses[t - 1], norms[t - 1], counts[t - 1] = loss_t.item(), float(sq) ** 0.5, n
    model.train(was_training)
    return losses, norms, counts


class DynamicsCallback(TrainerCallback):
    """Writes ``{"step", "position": [1..N], "loss": [N], "grad_norm": [N], "count": [N]}`` rows to ``path``
    before each optimizer step in ``steps`` (0 = the initial model) and after the final step."""

    def __init__(self, path: str | os.PathLike, examples: Sequence[Example], steps: Sequence[int],
                 max_positions: int = 20, pad_id: int = 0):
        self.path, self.examples, self.steps = Path(path), list(examples), set(steps)
        self.max_positions, self.pad_id = max_positions, pad_id

    def _record(self, state, model) -> None:
        if not state.is_world_process_zero:
            return
        loss, norm, count = position_losses_and_grad_norms(model, self.examples, self.max_positions, self.pad_id)
        with ResultsWriter(self.path) as writer:
            writer.write({"id": f"step-{state.global_step:07d}", "step": state.global_step,
                          "position": list(range(1, self.max_positions + 1)), "loss": loss.tolist(),
                          "grad_norm": norm.tolist(), "count": count.tolist()})

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self._record(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model)


class AsrCallback(TrainerCallback):
    """Calls ``evaluate(model, step) -> dict`` (e.g. an ASR summary) at the start of training and after
    each optimizer step in ``steps``, and writes ``{"step", **result}`` rows to ``path``. With
    ``skip_final``, the last optimizer step is left to the caller (who evaluates the finished model anyway)."""

    def __init__(self, path: str | os.PathLike, evaluate: Callable, steps: Sequence[int], skip_final: bool = False):
        self.path, self.evaluate, self.steps, self.skip_final = Path(path), evaluate, set(steps), skip_final

    def _record(self, state, model) -> None:
        if not state.is_world_process_zero:
            return
        was_training = model.training
        result = self.evaluate(model, state.global_step)
        model.train(was_training)
        with ResultsWriter(self.path) as writer:
            writer.write({"id": f"step-{state.global_step:07d}", "step": state.global_step, **result})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if 0 in self.steps:
            self._record(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and not (self.skip_final and state.global_step == state.max_steps):
            self._record(state, model)
