"""The token-wise constrained fine-tuning objective (Qi et al. 2025, Sec. 4) and plain SFT, as token sums.

Alignment convention: every per-token tensor is ``[B, L]`` and aligned with ``labels`` (and ``input_ids``):
column ``i`` holds the quantity for predicting ``labels[:, i]`` from ``input_ids[:, :i]``, i.e. from
``logits[:, i - 1]``. The causal shift happens once, inside :func:`token_logps`. Column 0 has no context,
so it is never a target and counts as ignored, as in transformers' causal-LM loss and its
``num_items_in_batch`` count (``labels[..., 1:] != -100``).

Response positions t = 1..T number the supervised tokens of each supervised span (one assistant turn, EOS
included) in order, restarting at 1 at the start of every span, so beta_t applies to each turn's own first
response token whatever its prompt length, padding side or earlier turns.

Per response token, with Delta_t = log pi_theta(y_t|..) - log pi_ref(y_t|..):
exact loss_t = -(2/beta_t) * log sigmoid(beta_t * Delta_t), whose gradient is the cross-entropy gradient
times w_t = 2 * sigmoid(-beta_t * Delta_t); the public code's surrogate is -clamp(w_t, min).detach() *
log pi_theta(y_t|..). Losses come back as sums over tokens with their count: divide by the token count
of the whole accumulated (and all-device) batch, e.g. transformers' ``num_items_in_batch``.

The surrogate was checked term by term against the paper's code (Unispac/shallow-vs-deep-alignment,
``finetuning_buckets/trainer/trainer.py``: ``soft_sft_loss``, ``get_beta_list``; flags in ``finetune.py``):
the same per-token weight 2 (1 - sigmoid(beta_t Delta_t)), detached, clamped below at 1e-3, times the
per-token log-prob; the same betas (its beta 0.1, bias_factor 20, first_token_bias_factor 5,
bias_length 5 give this module's default), indexed by the token's rank among its row's supervised
tokens. One difference: it averages over one micro-batch's tokens (``losses.mean()`` per device), so
with gradient accumulation or several processes it weighs micro-batches equally where the division
above weighs tokens equally; with one process and no accumulation the two agree. Pinned by
``tests/test_objectives.py::test_surrogate_matches_public_code_formula_value_and_gradient``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from deepalign.errors import DeepAlignError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BetaSchedule:
    """beta_t per response position: ``beta_t = values[t - 1]``, the last value repeating for later t."""

    values: tuple[float, ...] = field(
        default=(0.5, 2.0, 2.0, 2.0, 2.0, 0.1),
        metadata={
            "help": "beta_1, beta_2, ... for response tokens 1, 2, ...; the last value repeats. "
            "Default (the paper's): beta_1 = 0.5, beta_2..5 = 2, beta_t = 0.1 for t > 5."
        },
    )

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise DeepAlignError(f"beta schedule needs positive finite betas, got {self.values!r}")
        object.__setattr__(self, "values", values)

    @classmethod
    def uniform(cls, beta: float) -> BetaSchedule:
        """The same beta at every position (the paper's ablations)."""
        return cls((beta,))

    @classmethod
    def parse(cls, text: str) -> BetaSchedule:
        """Parse a comma-separated list such as ``"0.5,2,2,2,2,0.1"`` (last value repeats) or ``"0.1"``."""
        try:
            return cls(tuple(float(part) for part in text.split(",")))
        except ValueError:
            raise DeepAlignError(f"beta schedule {text!r}: expected comma-separated numbers") from None

    def __str__(self) -> str:
        return ",".join(f"{v:g}" for v in self.values)

    def betas(self, positions: Tensor) -> Tensor:
        """positions [B, L] long (1..T, 0 = not a response token) -> beta_t [B, L] float32, 0 off-response."""
        table = torch.tensor((0.0, *self.values), dtype=torch.float32, device=positions.device)
        return table[positions.clamp(0, len(self.values))]


@dataclass
class ObjectiveOutput:
    """A batch's loss as a sum over response tokens, with what a trainer logs."""

    loss_sum: Tensor  # scalar, differentiable: sum over response tokens of the trained loss (nats)
    n_tokens: int  # response tokens in this batch
    objective_sum: float  # sum of the exact objective (the constrained loss, or CE for SFT); for logging
    weights: Tensor  # [B, L] detached: the factor on each token's CE gradient (clamped if surrogate), 0 off
    positions: Tensor  # [B, L] long: response position t (1..T), 0 off-response

    def mean(self, num_items: int | float | Tensor | None = None) -> Tensor:
        """Token mean ``loss_sum / num_items`` (the global token count; default this batch's n_tokens)."""
        denom = self.n_tokens if num_items is None else num_items
        if isinstance(denom, Tensor):
            return self.loss_sum / denom.to(self.loss_sum.device).clamp(min=1)
        return self.loss_sum / max(denom, 1)


def response_mask(labels: Tensor) -> Tensor:
    """labels [B, L] (-100 = ignore) -> bool [B, L]: supervised tokens, column 0 excluded (no context)."""
    mask = labels.ne(IGNORE_INDEX)
    mask[..., 0] = False
    return mask


def response_positions(labels: Tensor) -> Tensor:
    """labels [B, L] -> positions [B, L] long: 1..T within each supervised span, 0 elsewhere.

    A span is a run of consecutive supervised tokens (one assistant turn); each starts again at t = 1, so
    the later turns of a multi-turn chat get the first-token betas at their own start. Independent of
    padding side and prompt length; a single-span row (the paper's data) is numbered 1..T as before.
    """
    mask = response_mask(labels)
    count = mask.long().cumsum(-1)  # supervised tokens so far, [B, L]
    before_span = torch.where(mask, 0, count).cummax(-1).values  # count just before the current span began
    return (count - before_span) * mask


def token_logps(logits: Tensor, labels: Tensor, chunk_size: int = 1024) -> Tensor:
    """log pi(labels[:, i] | input[:, :i]) [B, L], aligned with labels; 0 where ignored and at column 0.

    logits [B, L, V] (any float dtype) come from the same forward as labels [B, L]; row i - 1 predicts
    label i. Each log-prob is the target logit minus the row's logsumexp, in at least float32. Float32
    logits are read where they are (no gathered copy; on CPU the values and gradients are bitwise those
    of the gathered form); lower-precision logits are read only at supervised rows, turned into float32
    ``chunk_size`` rows at a time, so no [B, L, V] float32 copy is made.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    mask = response_mask(labels)
    if logits.dtype == dtype:
        x = logits[:, :-1]  # [B, L - 1, V]: row i - 1 predicts label i
        target = x.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return F.pad(torch.where(mask[:, 1:], target - torch.logsumexp(x, dim=-1), 0.0), (1, 0))
    rows, cols = mask.nonzero(as_tuple=True)
    out = torch.zeros(labels.shape, dtype=dtype, device=logits.device)
    if rows.numel() == 0:
        return out + logits[..., :0].sum()  # 0, but in the graph: backward() on an empty batch still works
    picked = logits[rows, cols - 1]  # [N, V] in the logits' dtype
    targets = labels[rows, cols].unsqueeze(-1)
    parts = []
    for x, y in zip(picked.split(chunk_size), targets.split(chunk_size), strict=True):
        x = x.to(dtype)
        parts.append(x.gather(-1, y).squeeze(-1) - torch.logsumexp(x, dim=-1))
    return out.index_put((rows, cols), torch.cat(parts))


def _reduce(per_token: Tensor, exact: Tensor, weights: Tensor, positions: Tensor) -> ObjectiveOutput:
    mask = positions > 0
    zero = per_token.new_zeros(())
    return ObjectiveOutput(
        loss_sum=torch.where(mask, per_token, zero).sum(),
        n_tokens=int(mask.sum()),
        objective_sum=float(torch.where(mask, exact.detach(), zero).sum()),
        weights=torch.where(mask, weights.detach(), zero),
        positions=positions,
    )


def constrained_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    schedule: BetaSchedule | None = None,
    *,
    surrogate: bool = False,
    clamp_min: float = 1e-3,
) -> ObjectiveOutput:
    """The token-wise constrained objective summed over response tokens.

    policy_logps [B, L] (differentiable) and ref_logps [B, L] (from the frozen reference; detached here)
    are :func:`token_logps` outputs aligned with labels [B, L]. ``schedule`` defaults to the paper's.
    ``surrogate=False`` trains the exact loss -(2/beta_t) log sigmoid(beta_t Delta_t);
    ``surrogate=True`` trains -clamp(w_t, clamp_min).detach() * log pi_theta (the public code's form, see
    the module doc: same gradient unless the clamp is active; its ``mean()`` over one micro-batch is the
    public code's loss value). ``objective_sum`` is the exact objective in both cases.
    """
    if not policy_logps.shape == ref_logps.shape == labels.shape:
        raise ValueError(
            f"shapes differ: policy {tuple(policy_logps.shape)}, ref {tuple(ref_logps.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    schedule = schedule or BetaSchedule()
    positions = response_positions(labels)
    mask = positions > 0
    beta = torch.where(mask, schedule.betas(positions).to(policy_logps), 1.0)  # 1 off-response: no 0/0
    delta = torch.where(mask, policy_logps - ref_logps.detach().to(policy_logps), 0.0)
    exact = -(2.0 / beta) * F.logsigmoid(beta * delta)
    weights = 2.0 * torch.sigmoid(-beta * delta.detach())
    if surrogate:
        weights = weights.clamp(min=clamp_min)
        return _reduce(-weights * policy_logps, exact, weights, positions)
    return _reduce(exact, exact, weights, positions)


def sft_loss(policy_logps: Tensor, labels: Tensor) -> ObjectiveOutput:
    """Plain SFT: cross-entropy -log pi_theta(y_t|..) summed over response tokens (weights all 1)."""
    if policy_logps.shape != labels.shape:
        raise ValueError(f"policy {tuple(policy_logps.shape)} does not match labels {tuple(labels.shape)}")
    positions = response_positions(labels)
    return _reduce(-policy_logps, -policy_logps, torch.ones_like(policy_logps), positions)
