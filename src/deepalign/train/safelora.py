"""SafeLoRA (Hsu et al. 2024, "Safe LoRA: the Silver Lining of Reducing Safety Risks when Finetuning Large
Language Models", arXiv 2405.16833, Sec. 3), written here from the paper's definition.

Per weight matrix W of shape [d_out, d_in]:

- the *alignment matrix* V = W_aligned - W_base (the direction alignment moved the weights);
- its projection C = V V^T / ||V||_F, [d_out, d_out] (the paper's cheap form of the projection onto the
  column space of V; the exact V (V^T V)^-1 V^T is the identity when V has full row rank, as on small
  models);
- the fine-tuning update dW = W_tuned - W_aligned (a LoRA adapter's dW = s * B A, with s = alpha / r);
- the projected update dW' = C dW (for LoRA: (C B) A, i.e. B replaced by C B);
- the layer is projected when the cosine similarity of dW' and dW (flattened) is below ``threshold``
  (the update points away from the alignment subspace), else kept.

Post hoc: :func:`project_model` changes a fine-tuned model's weights in place; a LoRA model is merged first
(``merge_and_unload``), which gives the same weights as projecting its B matrices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def default_targets(name: str, weight: Tensor) -> bool:
    """The linear layers SafeLoRA projects: 2-D ``*_proj.weight`` matrices (attention and MLP, not the
    embeddings or the LM head)."""
    return weight.dim() == 2 and name.endswith("_proj.weight")


def alignment_projection(aligned: Tensor, base: Tensor) -> Tensor:
    """C = V V^T / ||V||_F with V = aligned - base: [d_out, d_in] weights -> [d_out, d_out] float32."""
    v = aligned.float() - base.float()
    norm = torch.linalg.matrix_norm(v)
    if norm == 0:
        return torch.zeros(v.shape[0], v.shape[0], dtype=torch.float32, device=v.device)
    return v @ v.T / norm


def project_update(delta: Tensor, projection: Tensor, threshold: float) -> tuple[Tensor, float, bool]:
    """``(update, cosine, projected)``: C dW when cos(C dW, dW) < ``threshold``, else dW unchanged.
    delta [d_out, d_in], projection [d_out, d_out]; cosine is 1.0 for a zero update (nothing to project)."""
    d = delta.float()
    projected = projection @ d
    denom = torch.linalg.vector_norm(projected) * torch.linalg.vector_norm(d)
    cos = float((projected * d).sum() / denom) if denom > 0 else 1.0
    if cos < threshold:
        return projected.to(delta.dtype), cos, True
    return delta, cos, False


@dataclass
class SafeLoraReport:
    """What :func:`project_state` did: the cosine of every target layer and which were projected."""

    threshold: float
    cosines: dict[str, float] = field(default_factory=dict)
    projected: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.cosines)


def project_state(tuned: dict[str, Tensor], aligned: dict[str, Tensor], base: dict[str, Tensor], threshold: float,
                  targets: Callable[[str, Tensor], bool] = default_targets) -> tuple[dict[str, Tensor], SafeLoraReport]:
    """SafeLoRA on state dicts of the same architecture: every target weight becomes
    ``W_aligned + project_update(W_tuned - W_aligned)``; other tensors are kept as tuned."""
    report = SafeLoraReport(threshold)
    out = dict(tuned)
    for name, w in tuned.items():
        if not targets(name, w) or name not in aligned or name not in base:
            continue
        if not w.shape == aligned[name].shape == base[name].shape:
            raise ValueError(f"{name}: shapes differ (tuned {tuple(w.shape)}, aligned {tuple(aligned[name].shape)}, "
                             f"base {tuple(base[name].shape)})")
        a = aligned[name].to(w.device)
        update, cos, projected = project_update(w - a, alignment_projection(a, base[name].to(w.device)), threshold)
        report.cosines[name] = cos
        if projected:
            report.projected.append(name)
            out[name] = a + update.to(w.dtype)
    return out, report


def project_model(model, aligned_model, base_model, threshold: float = 0.5):
    """Apply SafeLoRA to ``model`` (full fine-tune or PEFT LoRA model, merged first) given the aligned
    model it was fine-tuned from and that model's unaligned base; returns ``(model, report)``."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    state, report = project_state(
        {k: v.detach() for k, v in model.state_dict().items()}, aligned_model.state_dict(), base_model.state_dict(),
        threshold)
    with torch.no_grad():
        model.load_state_dict(state)
    log.debug("SafeLoRA: %d of %d layers projected (threshold %g)", len(report.projected), report.n_layers, threshold)
    return model, report
