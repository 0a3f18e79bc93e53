"""Fitting the probe: L2-regularised logistic regression (LBFGS, balanced classes) on standardised features,
model selection of (layer, L2) on held-out prompts of the training data, and the refit on all of it.

Everything here sees only the probe's own training examples (:mod:`deepalign.judges.probe_data`): no
human-labelled evaluation row is used for fitting, selection or the threshold (0.5, fixed).
"""

from __future__ import annotations

import random
from typing import Any

from deepalign.judges.probe_features import design_matrix


def fit_logistic(x, y, l2: float, weights=None, max_iter: int = 200):
    """L2-regularised logistic regression on standardised ``x`` (float64); returns (w, b, mean, std)."""
    import torch

    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    y = y.double()
    if weights is None:
        pos = y.mean().clamp(1e-6, 1 - 1e-6)
        weights = torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        logits = z @ w + b
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), mean, std


def predict(x, w, b, mean, std):
    import torch

    return torch.sigmoid(((x - mean) / std) @ w + b)


def split_by_prompt(examples: list[dict], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    groups = sorted({e["group"] for e in examples})
    rng = random.Random(seed + 3)
    held = set(rng.sample(groups, round(holdout * len(groups))))
    train = [i for i, e in enumerate(examples) if e["group"] not in held]
    test = [i for i, e in enumerate(examples) if e["group"] in held]
    return train, test


def select_and_fit(raw: dict[int, Any], examples: list[dict], layers, l2s, holdout: float, seed: int) -> dict[str, Any]:
    """Choose (layer, L2) by accuracy on the held-out ``holdout`` share of the examples' prompts (ties: the
    earlier layer, then the stronger L2), then refit on every example.

    ``raw``: ``{layer: [N, 3H]}`` raw features (:class:`~deepalign.judges.probe_features.FeatureExtractor`).
    Returns the tensors to save (``weight``, ``bias``, ``mean``, ``std``, ``centre_response``,
    ``centre_prompt``) and the selection's record (``layer``, ``l2``, ``selection``, ``heldout_accuracy``,
    ``heldout_by_kind``, ``n_train``, ``n_heldout``, ``n_positive``)."""
    import torch

    prompts = [e["prompt"] for e in examples]
    responses = [e["response"] for e in examples]
    y = torch.tensor([e["label"] for e in examples])
    train, test = split_by_prompt(examples, holdout, seed)
    hidden = next(iter(raw.values())).shape[1] // 3
    selection = []
    for layer in layers:
        tr = raw[layer][train]
        c_r, c_p = tr[:, :hidden].mean(0), tr[:, 2 * hidden :].mean(0)
        x = design_matrix(raw[layer], prompts, responses, c_r, c_p)
        for l2 in l2s:
            w, b, mean, std = fit_logistic(x[train], y[train], l2)
            p = predict(x[test], w, b, mean, std)
            acc = float(((p >= 0.5).long() == y[test]).double().mean())
            selection.append({"layer": layer, "l2": l2, "heldout_accuracy": acc})
    best = max(selection, key=lambda s: (round(s["heldout_accuracy"], 4), -s["layer"], s["l2"]))
    layer, l2 = best["layer"], best["l2"]
    c_r, c_p = raw[layer][:, :hidden].mean(0), raw[layer][:, 2 * hidden :].mean(0)
    x = design_matrix(raw[layer], prompts, responses, c_r, c_p)
    w, b, mean, std = fit_logistic(x, y, l2)
    tensors = {"weight": w, "bias": b, "mean": mean, "std": std, "centre_response": c_r.double(),
               "centre_prompt": c_p.double()}
    held_kind = _per_kind(examples, test, raw[layer], prompts, responses, y, l2, train, hidden)
    return {"tensors": tensors, "layer": layer, "l2": l2, "hidden_size": hidden, "selection": selection,
            "heldout_accuracy": best["heldout_accuracy"], "heldout_by_kind": held_kind, "n_train": len(train),
            "n_heldout": len(test), "n_positive": int(y.sum())}


def _per_kind(examples, test, raw, prompts, responses, y, l2, train, hidden) -> dict[str, float]:
    """Held-out accuracy per example kind of the chosen (layer, l2), fit on the training split."""
    tr = raw[train]
    x = design_matrix(raw, prompts, responses, tr[:, :hidden].mean(0), tr[:, 2 * hidden :].mean(0))
    w, b, mean, std = fit_logistic(x[train], y[train], l2)
    hit = ((predict(x[test], w, b, mean, std) >= 0.5).long() == y[test]).tolist()
    out: dict[str, list[int]] = {}
    for i, ok in zip(test, hit, strict=True):
        out.setdefault(examples[i]["kind"], []).append(int(ok))
    return {k: sum(v) / len(v) for k, v in sorted(out.items())}
