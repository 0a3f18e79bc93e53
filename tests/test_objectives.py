"""Token-wise constrained objective: gradients against formulas written out here, positions, accumulation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_llama

from deepalign.errors import DeepAlignError
from deepalign.train.objectives import (
    BetaSchedule,
    constrained_loss,
    response_positions,
    sft_loss,
    token_logps,
)

V = 23
PAPER_BETAS = [0.5, 2.0, 2.0, 2.0, 2.0, 0.1]


def _labels(prompt_lens: list[int], resp_lens: list[int], side: str = "right", seed: int = 0) -> torch.Tensor:
    """Labels [B, L]: -100 on prompt and padding, random ids in [0, V) on each row's response."""
    g = torch.Generator().manual_seed(seed)
    width = max(p + r for p, r in zip(prompt_lens, resp_lens, strict=True)) + 1
    labels = torch.full((len(prompt_lens), width), -100)
    for b, (p, r) in enumerate(zip(prompt_lens, resp_lens, strict=True)):
        start = p if side == "right" else width - r
        labels[b, start : start + r] = torch.randint(0, V, (r,), generator=g)
    return labels


def _loop_objective(logits, ref_lp, labels, betas: list[float]) -> torch.Tensor:
    """The paper's objective written token by token: token mean of -(2/b) log sigmoid(b * Delta_t)."""
    terms = []
    for b in range(labels.shape[0]):
        t = 0
        for i in range(1, labels.shape[1]):
            if labels[b, i] == -100:
                continue
            t += 1
            beta = betas[min(t, len(betas)) - 1]
            lp = torch.log_softmax(logits[b, i - 1], dim=-1)[labels[b, i]]
            terms.append(-(2 / beta) * F.logsigmoid(beta * (lp - ref_lp[b, i])))
    return torch.stack(terms).mean()


def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def test_exact_gradient_matches_formula_loop():
    labels = _labels([3, 1, 5], [9, 4, 7])
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(*labels.shape, V, generator=g, dtype=torch.float64)
    ref_lp = token_logps(logits + 0.7 * torch.randn(logits.shape, generator=g, dtype=torch.float64), labels)

    def ours(x):
        return constrained_loss(token_logps(x, labels, chunk_size=4), ref_lp, labels).mean()

    expected = _grad(lambda x: _loop_objective(x, ref_lp, labels, PAPER_BETAS), logits)
    assert torch.allclose(_grad(ours, logits), expected, atol=1e-6, rtol=0)
    out = constrained_loss(token_logps(logits, labels), ref_lp, labels)
    expected_value = _loop_objective(logits, ref_lp, labels, PAPER_BETAS).item()
    assert out.objective_sum / out.n_tokens == pytest.approx(expected_value)


def test_token_logps_matches_cross_entropy_and_uses_float32():
    labels = _labels([2, 4], [6, 3], side="left")
    logits = torch.randn(*labels.shape, V) * 4
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="none")
    expected = torch.cat([torch.zeros(2, 1), -shifted.view(2, -1)], dim=1)
    assert torch.allclose(token_logps(logits, labels), expected, atol=1e-5)
    assert torch.equal(token_logps(logits, labels, chunk_size=1), token_logps(logits, labels))
    lp16 = token_logps(logits.bfloat16(), labels)
    assert lp16.dtype == torch.float32
    assert torch.allclose(lp16, token_logps(logits.bfloat16().float(), labels), atol=1e-5)
    assert torch.equal(token_logps(logits.bfloat16(), labels, chunk_size=1), lp16)  # chunking changes nothing
    # float32 logits are read in place; on CPU that is bitwise the target logit minus the logsumexp of the
    # gathered supervised rows, values and gradients alike
    x = logits.clone().requires_grad_(True)
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    picked = x[rows, cols]
    gathered = torch.zeros(labels.shape).index_put((rows, cols + 1), picked.gather(
        -1, labels[rows, cols + 1].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1))
    direct = token_logps(x, labels)
    assert torch.equal(direct, gathered)
    weights = torch.rand(labels.shape)
    assert torch.equal(*(torch.autograd.grad((t * weights).sum(), x)[0] for t in (direct, gathered)))


def test_column_zero_and_empty_batch():
    labels = torch.tensor([[5, 6, 7], [-100, -100, -100]])
    assert response_positions(labels).tolist() == [[0, 1, 2], [0, 0, 0]]
    logits = torch.randn(2, 3, V, requires_grad=True)
    empty = sft_loss(token_logps(logits, torch.full((2, 3), -100)), torch.full((2, 3), -100))
    assert empty.n_tokens == 0 and empty.mean().item() == 0.0
    empty.mean().backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("surrogate", [False, True])
def test_at_initialisation_constrained_gradient_equals_sft(surrogate):
    model = build_tiny_llama(V, seed=3)
    input_ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :4] = -100
    labels[1, 10:] = -100

    def grads(loss_fn):
        model.zero_grad()
        lp = token_logps(model(input_ids).logits, labels)
        loss_fn(lp).mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    with torch.no_grad():
        ref = token_logps(model(input_ids).logits, labels)
    sft = grads(lambda lp: sft_loss(lp, labels))
    cons = grads(lambda lp: constrained_loss(lp, ref, labels, surrogate=surrogate))
    assert sft.abs().max() > 1e-3
    assert torch.allclose(cons, sft, atol=1e-7, rtol=1e-5)
    out = constrained_loss(ref, ref, labels, surrogate=surrogate)
    assert torch.equal(out.weights, (labels != -100).float().index_fill(1, torch.tensor([0]), 0.0))


def test_large_beta_pins_constrained_positions_while_sft_moves_them():
    """Toy policy logits (one free row per token, starting at the reference), SGD on the token sum.
    beta = 50 on response tokens 1-2 stops their log-prob rising past ~0.15 nats (w = 2 sigmoid(-50 Delta)
    is ~0.001 there); beta = 1e-4 later lets the rest move like SFT, which moves tokens 1-2 by nats."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, V, (4, 10), generator=g)
    labels[:, :3] = -100
    labels[1, 8:] = -100
    ref_logits = torch.randn(4, 10, V, generator=g)
    ref = token_logps(ref_logits, labels)
    pos = response_positions(labels)
    early, late = (pos >= 1) & (pos <= 2), pos > 2

    def train(loss_fn) -> torch.Tensor:
        theta = ref_logits.clone().requires_grad_(True)
        opt = torch.optim.SGD([theta], lr=0.05)
        for _ in range(200):
            opt.zero_grad()
            loss_fn(token_logps(theta, labels)).loss_sum.backward()
            opt.step()
        return (token_logps(theta, labels) - ref).detach()

    cons = train(lambda lp: constrained_loss(lp, ref, labels, BetaSchedule((50.0, 50.0, 1e-4))))
    sft = train(lambda lp: sft_loss(lp, labels))
    assert sft[early].min() > 2.0 and sft[late].min() > 1.5
    assert cons[early].abs().max() < 0.2
    assert torch.allclose(cons[late], sft[late], atol=1e-3)


@pytest.mark.parametrize("side", ["right", "left"])
def test_beta_1_lands_on_each_examples_own_first_response_token(side):
    labels = _labels([2, 6], [7, 3], side=side)
    pos = response_positions(labels)
    betas = BetaSchedule().betas(pos)
    for b, (p, r) in enumerate([(2, 7), (6, 3)]):
        start = p if side == "right" else labels.shape[1] - r
        assert pos[b].tolist() == [0] * start + list(range(1, r + 1)) + [0] * (labels.shape[1] - start - r)
        expected = [PAPER_BETAS[min(t, 6) - 1] for t in range(1, r + 1)]
        assert betas[b, start : start + r].tolist() == pytest.approx(expected)
        assert betas[b].sum().item() == pytest.approx(sum(expected))


def test_surrogate_value_differs_gradient_equal_without_clamp_and_clamped_with_it():
    labels = _labels([2, 3], [8, 5])
    mask = response_positions(labels) > 0
    g = torch.Generator().manual_seed(2)
    policy = -torch.rand(labels.shape, generator=g, dtype=torch.float64) * 3 * mask
    ref = policy + 0.5 * torch.randn(labels.shape, generator=g, dtype=torch.float64) * mask

    def run(ref_lp, surrogate):
        p = policy.clone().requires_grad_(True)
        out = constrained_loss(p, ref_lp, labels, surrogate=surrogate)
        out.loss_sum.backward()
        return out, p.grad

    exact, g_exact = run(ref, False)
    sur, g_sur = run(ref, True)
    assert sur.loss_sum.item() != pytest.approx(exact.loss_sum.item(), rel=1e-2)
    assert sur.objective_sum == pytest.approx(exact.objective_sum)
    assert torch.allclose(g_sur, g_exact, atol=1e-12)
    # Delta_t = +10 at the first response token of row 0: w = 2 sigmoid(-5) = 0.013 unclamped;
    # Delta_t = +10 at the second token (beta 2): w = 2 sigmoid(-20) < 1e-3, so the surrogate uses 1e-3.
    ref_far = ref.clone()
    first = int(mask[0].nonzero()[0])
    ref_far[0, first : first + 2] = policy[0, first : first + 2] - 10
    _, g_exact = run(ref_far, False)
    _, g_sur = run(ref_far, True)
    assert g_exact[0, first].item() == pytest.approx(-2 * torch.sigmoid(torch.tensor(-5.0)).item())
    assert g_sur[0, first].item() == pytest.approx(g_exact[0, first].item())
    assert g_exact[0, first + 1].item() == pytest.approx(-2 * torch.sigmoid(torch.tensor(-20.0)).item())
    assert g_sur[0, first + 1].item() == pytest.approx(-1e-3)
    others = torch.ones_like(mask)
    others[0, first : first + 2] = False
    assert torch.allclose(g_sur[others], g_exact[others], atol=1e-12)


def test_gradient_accumulation_normalises_by_global_token_count():
    model = build_tiny_llama(V, seed=7)
    g = torch.Generator().manual_seed(3)
    batches = []
    for n_rows, width, prompt in [(2, 14, 3), (3, 9, 6)]:
        ids = torch.randint(0, V, (n_rows, width), generator=g)
        labels = ids.clone()
        labels[:, :prompt] = -100
        batches.append((ids, labels))
    with torch.no_grad():
        refs = [token_logps(model(ids).logits, lab) + 0.3 for ids, lab in batches]

    def grads(step):
        model.zero_grad()
        step()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def accumulated():
        outs = [
            constrained_loss(token_logps(model(i).logits, lab), r, lab)
            for (i, lab), r in zip(batches, refs, strict=True)
        ]
        n_global = torch.tensor(sum(o.n_tokens for o in outs))
        for o in outs:
            o.mean(n_global).backward()

    def one_batch():  # right-pad the short batch to the long width: padded tokens are ignored labels
        ids = torch.cat([batches[0][0], F.pad(batches[1][0], (0, 5))])
        labels = torch.cat([batches[0][1], F.pad(batches[1][1], (0, 5), value=-100)])
        ref = torch.cat([refs[0], F.pad(refs[1], (0, 5))])
        constrained_loss(token_logps(model(ids).logits, labels), ref, labels).mean().backward()

    def per_micro_mean():
        for (i, lab), r in zip(batches, refs, strict=True):
            (constrained_loss(token_logps(model(i).logits, lab), r, lab).mean() / 2).backward()

    full = grads(one_batch)
    assert torch.allclose(grads(accumulated), full, atol=1e-7, rtol=1e-5)
    assert not torch.allclose(grads(per_micro_mean), full, atol=1e-7, rtol=1e-3)


def test_small_beta_gradient_approaches_sft():
    labels = _labels([2, 4], [6, 5])
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(*labels.shape, V, generator=g, dtype=torch.float64)
    ref = token_logps(logits + torch.randn(logits.shape, generator=g, dtype=torch.float64), labels)
    tiny = BetaSchedule.uniform(1e-4)
    g_cons = _grad(lambda x: constrained_loss(token_logps(x, labels), ref, labels, tiny).mean(), logits)
    g_sft = _grad(lambda x: sft_loss(token_logps(x, labels), labels).mean(), logits)
    # |w_t - 1| = |tanh(beta Delta_t / 2)| <= beta |Delta_t| / 2 bounds the gradients' difference
    bound = 1e-4 * (token_logps(logits, labels) - ref).abs().max() / 2 * g_sft.abs().max()
    assert 0 < (g_cons - g_sft).abs().max() <= bound
    big = BetaSchedule.uniform(2.0)
    g_big = _grad(lambda x: constrained_loss(token_logps(x, labels), ref, labels, big).mean(), logits)
    assert not torch.allclose(g_big, g_sft, atol=1e-2, rtol=0)


def test_beta_schedule_parse_and_validation():
    assert BetaSchedule.parse("0.5,2,2,2,2,0.1") == BetaSchedule()
    assert str(BetaSchedule()) == "0.5,2,2,2,2,0.1"
    assert BetaSchedule.parse(" 0.1 ") == BetaSchedule.uniform(0.1)
    pos = torch.tensor([[0, 1, 2, 3, 7, 100]])
    assert BetaSchedule.parse("1,3").betas(pos).tolist() == [[0.0, 1.0, 3.0, 3.0, 3.0, 3.0]]
    for bad in ["", "0.5,,1", "a", "0", "-1,2", "nan"]:
        with pytest.raises(DeepAlignError):
            BetaSchedule.parse(bad)


def _public_code_betas(n: int, beta=0.1, bias_factor=20.0, first_token_bias_factor=5.0, bias_length=5) -> list[float]:
    """The public code's per-row beta list from its four flags (README values by default): the first
    response token gets beta * first_token_bias_factor, tokens 2..bias_length beta * bias_factor, the rest beta."""
    out = []
    for t in range(1, n + 1):
        if t == 1 and bias_length > 0:
            out.append(beta * first_token_bias_factor)
        elif t <= bias_length:
            out.append(beta * bias_factor)
        else:
            out.append(beta)
    return out


def _public_code_surrogate(logits: torch.Tensor, ref_lp: torch.Tensor, labels: torch.Tensor, clamp_min=1e-3):
    """The soft-SFT loss of Unispac/shallow-vs-deep-alignment (finetuning_buckets/trainer/trainer.py), written
    out here from its definition: per row, the supervised tokens' log-probs in order (label i scored by
    logits row i - 1), weight clamp(2 (1 - sigmoid(beta_t (logp - logp_ref))), min).detach() times logp,
    all rows' tokens concatenated, negated and averaged (one micro-batch's token mean)."""
    terms = []
    for b in range(labels.shape[0]):
        idx = [i for i in range(1, labels.shape[1]) if labels[b, i] != -100]
        lp = torch.stack([torch.log_softmax(logits[b, i - 1], dim=-1)[labels[b, i]] for i in idx])
        ref = ref_lp[b, idx]
        beta = torch.tensor(_public_code_betas(len(idx)), dtype=torch.float32).to(lp)  # a float32 list there
        w = (2 * (1 - torch.sigmoid(beta * (lp - ref)))).detach().clamp(min=clamp_min)
        terms.append(w * lp)
    return -torch.cat(terms).mean()


@pytest.mark.parametrize("clamped", [False, True])
def test_surrogate_matches_public_code_formula_value_and_gradient(clamped):
    """Our surrogate's micro-batch token mean == the public code's soft-SFT loss, value and gradient, with
    the clamp at 1e-3 inactive (|Delta| small) and active (Delta = +8 on some tokens: w = 2 sigmoid(-2 * 8))."""
    assert BetaSchedule().values == tuple(_public_code_betas(6))  # our default is the README's flags
    labels = _labels([3, 1, 5, 2], [9, 3, 7, 5], seed=5)  # response lengths below, at and above bias_length
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(*labels.shape, V, generator=g, dtype=torch.float64)
    ref_lp = token_logps(logits + 0.3 * torch.randn(logits.shape, generator=g, dtype=torch.float64), labels)
    pos = response_positions(labels)
    if clamped:  # the reference far below the policy at response tokens 2 and 3 of every row
        far = (pos == 2) | (pos == 3)
        ref_lp = torch.where(far, token_logps(logits, labels) - 8.0, ref_lp)
    out = constrained_loss(token_logps(logits, labels), ref_lp, labels, surrogate=True)
    mask = pos > 0
    w = 2 * torch.sigmoid(-BetaSchedule().betas(pos).double() * (token_logps(logits, labels) - ref_lp))
    assert bool((w[mask] < 1e-3).any()) == clamped  # the clamp is (in)active as the case says
    assert torch.allclose(out.weights[mask], w[mask].clamp(min=1e-3).to(out.weights), rtol=1e-6)
    expected = _public_code_surrogate(logits, ref_lp, labels)
    assert out.mean().item() == pytest.approx(expected.item(), rel=1e-12)
    ours = _grad(lambda x: constrained_loss(token_logps(x, labels), ref_lp, labels, surrogate=True).mean(), logits)
    theirs = _grad(lambda x: _public_code_surrogate(x, ref_lp, labels), logits)
    assert theirs.abs().max() > 1e-3
    assert torch.allclose(ours, theirs, atol=1e-12, rtol=1e-10)
    # the exact objective has the same gradient where the clamp is inactive, and a smaller one where it bites
    exact = _grad(lambda x: constrained_loss(token_logps(x, labels), ref_lp, labels).mean(), logits)
    assert torch.allclose(exact, theirs, atol=1e-12, rtol=1e-10) != clamped
