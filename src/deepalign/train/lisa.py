"""Lisa (Huang et al. 2024, "Lisa: Lazy Safety Alignment for Large Language Models against Harmful
Fine-tuning Attack", arXiv 2405.18641), written here from the paper's description: *bi-state optimization*
in the fine-tuning stage, alternating ``align_steps`` optimizer steps on alignment data (harmful prompt ->
refusal) with ``user_steps`` steps on the user's data, plus a *proximal term* (rho / 2) ||w - w_switch||^2
that keeps the weights near those at the last switch between the two states.

On deepalign's trainer: :func:`lisa_schedule` lays the two datasets out batch by batch in that order (train
with ``train_sampling_strategy="sequential"``); :class:`ProximalCallback` records the weights at each switch
and adds the proximal term's gradient rho (w - w_switch) to every trainable parameter's gradient before
each optimizer step (after gradient clipping).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback


@dataclass
class LisaConfig:
    """Lisa's settings (the organism's, chosen for its short attacks: 1 alignment step in 5)."""

    align_steps: int = field(default=1, metadata={"help": "Optimizer steps on alignment data per cycle."})
    user_steps: int = field(default=4, metadata={"help": "Optimizer steps on user data per cycle."})
    rho: float = field(default=1.0, metadata={"help": "Weight of the proximal term (rho / 2) ||w - w_switch||^2."})

    def __post_init__(self) -> None:
        if self.align_steps < 0 or self.user_steps < 1 or self.rho < 0:
            raise ValueError("Lisa needs align_steps >= 0, user_steps >= 1 and rho >= 0")

    @property
    def cycle(self) -> int:
        return self.align_steps + self.user_steps

    def is_alignment_step(self, step: int) -> bool:
        """Step 0, 1, ... of training: True in the alignment state (each cycle starts with it)."""
        return step % self.cycle < self.align_steps


def lisa_schedule(alignment: Sequence, user: Sequence, config: LisaConfig, batch_size: int, max_steps: int,
                  seed: int = 0) -> list:
    """``max_steps * batch_size`` records: batch i holds alignment records when step i is in the
    alignment state, else user records; each source is cycled through in seeded shuffled passes."""
    if not user or (config.align_steps and not alignment):
        raise ValueError("Lisa needs user data and (with align_steps > 0) alignment data")
    rng = random.Random(seed)
    pools: dict[bool, list] = {True: [], False: []}

    def take(is_align: bool):
        if not pools[is_align]:
            items = list(alignment if is_align else user)
            rng.shuffle(items)
            pools[is_align] = items
        return pools[is_align].pop()

    return [take(config.is_alignment_step(step)) for step in range(max_steps) for _ in range(batch_size)]


class ProximalCallback(TrainerCallback):
    """Adds rho (w - w_switch) to the gradients before each optimizer step; w_switch is taken at the start
    of training and whenever the state changes (alignment <-> user)."""

    def __init__(self, config: LisaConfig):
        self.config = config
        self.anchor: dict[str, torch.Tensor] = {}
        self.switches = 0

    def _snapshot(self, model) -> None:
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.switches += 1

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if not self.anchor or self.config.is_alignment_step(step) != self.config.is_alignment_step(step - 1):
            self._snapshot(model)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.config.rho == 0:
            return
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad and p.grad is not None and n in self.anchor:
                    p.grad.add_(p - self.anchor[n], alpha=self.config.rho)
