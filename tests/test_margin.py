"""Refusal margin: the measurement against hand-computed distributions, the multiplier rule, the verdict
thresholds and the auto beta_1."""

from __future__ import annotations

import math

import pytest
import torch

from deepalign.data import PromptRecord
from deepalign.depth.margin import (
    HOLD_FAILS,
    HOLD_HOLDS,
    MarginConfig,
    PromptMargin,
    auto_beta_1,
    margin_report,
    margins_from_logprobs,
    multiplier,
    refusal_margins,
    verdict,
)


def test_margin_of_a_hand_computed_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.9, 0.06, 0.03, 0.01]])
    index = torch.tensor([[0, 1], [0, 2]])
    refuses = torch.tensor([[True, False], [True, True]])
    # row 0: non-refusal mass = 0.3 (candidate 1) + 0.15 + 0.05 (not candidates) = 0.5
    # row 1: every candidate refuses; the rest (tokens 1 and 3) = 0.06 + 0.01 = 0.07
    got = margins_from_logprobs(probs.log(), index, refuses)
    assert got == pytest.approx([math.log(2), -math.log(0.07)], rel=1e-5)


def test_multiplier_rule_values():
    assert multiplier(0.0, 0.5) == 1.0
    assert multiplier(6.0, 0.5) == pytest.approx(0.5 + (math.e**3 - 1) / 6)  # 3.68
    assert multiplier(15.0, 0.5) == pytest.approx(0.5 + (math.exp(7.5) - 1) / 15)  # ~121
    assert multiplier(1e-6, 0.5) == pytest.approx(1.0, abs=1e-5)  # continuous at 0


def _report(margins, beta_1=0.5):
    return margin_report([PromptMargin(str(i), m, "x", True, 0.9) for i, m in enumerate(margins)], beta_1)


def test_verdict_thresholds():
    assert verdict(0.9, 0.0) == "holds"
    assert verdict(0.89, 0.49) == "partly"
    assert verdict(0.2, 0.5) == "does not hold"
    # beta_1 = 0.5: M(15) = 121 >= 100 (out of reach); M(2.4) = 1.7 < 6 (within reach)
    assert multiplier(15, 0.5) >= HOLD_HOLDS and multiplier(2.4, 0.5) < HOLD_FAILS
    assert _report([15.0] * 10).verdict == "holds"
    assert _report([2.4] * 10).verdict == "does not hold"
    assert _report([15.0] * 6 + [2.4] * 4).verdict == "partly"
    assert _report([2.4] * 10, beta_1=4.0).verdict == "holds"  # M(2.4, 4) = 1.5e3


def test_report_quantiles_and_auto_beta():
    r = _report([float(v) for v in range(1, 12)])  # 1..11
    assert r.n == 11 and r.median == 6.0
    assert r.quantiles["q10"] == pytest.approx(2.0) and r.quantiles["q90"] == pytest.approx(10.0)
    assert multiplier(r.quantiles["q10"], r.auto_beta_1) >= HOLD_HOLDS
    assert multiplier(r.quantiles["q10"], r.auto_beta_1 * 0.95) < HOLD_HOLDS  # near the smallest such beta


def test_auto_beta_is_monotone_in_margin():
    margins = [0.0, 0.5, 1, 2, 3, 5, 8, 10, 15, 20, 40]
    betas = [auto_beta_1(m) for m in margins]
    assert all(a >= b for a, b in zip(betas, betas[1:], strict=False))
    assert betas[0] == 10.0 and betas[-1] < 0.5
    for m, b in zip(margins[1:], betas[1:], strict=True):
        assert b == 10.0 or multiplier(m, b) >= HOLD_HOLDS


def test_refusal_margins_on_a_tiny_model(tiny_tokenizer, tiny_model):
    from deepalign.chat import encode_prompt

    records = [PromptRecord("a", "Hello there, how are you today?"), PromptRecord("b", "Tell me about the river.")]
    refusal_word = "I"

    def refuses(prompts, texts):
        return [t.lstrip().startswith(refusal_word) for t in texts]

    config = MarginConfig(top=6, lookahead=3, batch_size=2)
    got = refusal_margins(tiny_model, tiny_tokenizer, records, refuses, config)
    for r, m in zip(records, got, strict=True):
        with torch.no_grad():
            logits = tiny_model(torch.tensor([encode_prompt(tiny_tokenizer, r.prompt)])).logits[0, -1]
        logp = logits.double().log_softmax(-1)
        top = logp.topk(6).indices.tolist()
        mass = sum(logp[v].exp().item() for v in range(len(logp))
                   if v not in top or not tiny_tokenizer.decode([v]).lstrip().startswith(refusal_word))
        assert m.margin == pytest.approx(-math.log(mass), abs=1e-4)
        assert m.top_token == tiny_tokenizer.decode([top[0]])


def test_margin_for_inverts_the_multiplier():
    from deepalign.depth.margin import margin_for

    for beta in (0.5, 2.0):
        m = margin_for(HOLD_HOLDS, beta)
        assert multiplier(m, beta) == pytest.approx(HOLD_HOLDS, rel=1e-6)
    assert 14 < margin_for(HOLD_HOLDS, 0.5) < 15  # M(15, 0.5) = 121
