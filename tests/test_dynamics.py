"""Dynamics: per-position loss and gradient norm against a hand computation; callbacks write rows."""

from __future__ import annotations

import math

import torch
from conftest import build_tiny_llama

from deepalign.data.schemas import PairRecord
from deepalign.train.augment import encode_records
from deepalign.train.dynamics import position_losses_and_grad_norms

PAIRS = [PairRecord("a", "Tell me about the river.", "The river is long and calm."),
         PairRecord("b", "Hello there?", "Fine."),
         PairRecord("c", "What about the weather?", "Rain, then sun over the garden.")]


def test_per_position_grad_norm_matches_hand_computation(tiny_tokenizer):
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    examples = encode_records(tiny_tokenizer, PAIRS)
    n_pos = 6
    loss, norm, count = position_losses_and_grad_norms(model, examples, n_pos, tiny_tokenizer.pad_token_id)
    for t in range(1, n_pos + 1):
        # by hand, one example at a time, unpadded: the t-th supervised token's CE, then average over examples
        terms = []
        for e in examples:
            cols = [i for i, lab in enumerate(e["labels"]) if lab != -100]
            if len(cols) < t:
                continue
            col = cols[t - 1]
            logits = model(input_ids=torch.tensor([e["input_ids"]])).logits[0, col - 1]
            terms.append(-torch.log_softmax(logits.double(), -1)[e["input_ids"][col]])
        assert count[t - 1] == len(terms)
        mean = torch.stack(terms).mean()
        model.zero_grad()
        mean.backward()
        expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None))
        torch.testing.assert_close(loss[t - 1].item(), mean.item(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(norm[t - 1].item(), expected, rtol=1e-4, atol=1e-7)
    assert math.isnan(loss[-1]) or count[-1] > 0


def test_measurement_leaves_gradients_alone(tiny_tokenizer):
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    examples = encode_records(tiny_tokenizer, PAIRS)
    position_losses_and_grad_norms(model, examples, 3)
    assert all(p.grad is None for p in model.parameters())


def test_asr_callback_leaves_the_final_step_to_the_caller_when_asked(tmp_path):
    from transformers import TrainerState

    from deepalign.io import read_jsonl
    from deepalign.train.dynamics import AsrCallback

    model = torch.nn.Linear(1, 1)
    for skip_final, expected in ((False, [0, 2, 4]), (True, [0, 2])):
        path, seen = tmp_path / f"asr-{skip_final}.jsonl", []
        callback = AsrCallback(path, lambda m, step, seen=seen: seen.append(step) or {"asr": step / 10}, [0, 2, 4],
                               skip_final=skip_final)
        state = TrainerState(max_steps=4)
        callback.on_train_begin(None, state, None, model=model)
        for step in range(1, 5):
            state.global_step = step
            callback.on_step_end(None, state, None, model=model)
        assert seen == expected
        assert [(r["step"], r["asr"]) for r in read_jsonl(path)] == [(s, s / 10) for s in expected]
