"""ConstrainedSFTTrainer (deepalign.trl): same loss and gradient as DeepAlignTrainer, equal to TRL's SFT at
init, reference cached by data + model, packing refused, PEFT adapters, multi-turn response positions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import build_tiny_llama
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from deepalign.chat import encode_turns
from deepalign.errors import DeepAlignError
from deepalign.train import reference as reference_module
from deepalign.train.augment import make_example
from deepalign.train.config import DeepAlignConfig
from deepalign.train.objectives import BetaSchedule, response_positions
from deepalign.train.trainer import DeepAlignTrainer
from deepalign.trl import ConstrainedSFTConfig, ConstrainedSFTTrainer

PROMPTS = ["Hello there, how are you today?", "Tell me about the weather.", "Sure?", "What about the river?"]
ANSWERS = ["I am fine, thank you very much.", "The quick brown fox jumps over the lazy dog in the garden.",
           "Sure.", "Please tell me about apples, pears and plums."]
# bf16=False: TRL's SFTConfig defaults to bf16, and the cached reference is computed under the training
# autocast, so a float32 comparison with DeepAlignTrainer must ask for float32
COMMON = dict(per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3, disable_tqdm=True, seed=0,
              use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, max_grad_norm=0.0, bf16=False)


def _rows(conversational: bool = True) -> list[dict]:
    if conversational:
        return [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]}
                for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    return [{"prompt": p, "completion": " " + a} for p, a in zip(PROMPTS, ANSWERS, strict=True)]


def _trainer(tmp_path, tok, model, rows=None, **options):
    config = ConstrainedSFTConfig(output_dir=str(tmp_path / "out"), ref_cache_dir=str(tmp_path / "ref"),
                                  **{**COMMON, **options})
    return ConstrainedSFTTrainer(model, config, train_dataset=Dataset.from_list(rows or _rows()),
                                 processing_class=tok)


def _batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def _loss_and_grads(trainer, model, batch, **kwargs):
    model.zero_grad()
    model.train()
    loss = trainer.compute_loss(model, batch, **kwargs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture()
def model(tiny_tokenizer):
    return build_tiny_llama(len(tiny_tokenizer))


def test_same_loss_and_gradient_as_deepalign_trainer(tmp_path, tiny_tokenizer, model):
    trl_model, da_model = model, copy.deepcopy(model)
    trl_trainer = _trainer(tmp_path / "trl", tiny_tokenizer, trl_model)
    rows = [trl_trainer.train_dataset[i] for i in range(len(trl_trainer.train_dataset))]
    examples = [make_example(r["input_ids"], r["labels"]) for r in rows]
    da_config = DeepAlignConfig(output_dir=str(tmp_path / "da"), ref_cache_dir=str(tmp_path / "da-ref"),
                                objective="constrained", **COMMON)
    da_trainer = DeepAlignTrainer(da_model, da_config, examples, tiny_tokenizer)
    # move the policy away from the (already cached) reference, identically in both, so Delta_t != 0
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p_trl, p_da in zip(trl_model.parameters(), da_model.parameters(), strict=True):
            noise = 0.05 * torch.randn(p_trl.shape, generator=gen)
            p_trl.add_(noise)
            p_da.add_(noise)
    batch = _batch(trl_trainer)
    n_items = int((batch["labels"][:, 1:] != -100).sum())
    loss_trl, grads_trl = _loss_and_grads(trl_trainer, trl_model, batch, num_items_in_batch=n_items)
    da_batch = da_trainer.data_collator(examples)
    loss_da, grads_da = _loss_and_grads(da_trainer, da_model, da_batch, num_items_in_batch=n_items)
    assert torch.equal(batch["labels"], da_batch["labels"])
    positions = response_positions(batch["labels"])
    at_init = float((2 * math.log(2) / BetaSchedule().betas(positions)[positions > 0]).sum() / n_items)
    assert abs(float(loss_trl) - at_init) > 1e-3  # Delta_t != 0: not the loss at initialisation
    torch.testing.assert_close(loss_trl, loss_da, rtol=1e-6, atol=1e-7)
    assert grads_trl.keys() == grads_da.keys() and grads_trl
    for name in grads_trl:
        torch.testing.assert_close(grads_trl[name], grads_da[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("conversational", [True, False])
def test_equal_to_trl_sft_at_initialisation(tmp_path, tiny_tokenizer, model, conversational):
    rows = _rows(conversational)
    sft_model = copy.deepcopy(model)
    trainer = _trainer(tmp_path, tiny_tokenizer, model, rows)
    sft = SFTTrainer(sft_model, SFTConfig(output_dir=str(tmp_path / "sft"), **COMMON),
                     train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer)
    batch = _batch(trainer)
    assert torch.equal(batch["labels"], _batch(sft)["labels"])  # TRL's own completion-only masks
    loss, grads = _loss_and_grads(trainer, model, batch)
    _, sft_grads = _loss_and_grads(sft, sft_model, _batch(sft))
    for name in grads:  # w_t = 2 sigmoid(0) = 1: the constrained gradient is the cross-entropy gradient
        torch.testing.assert_close(grads[name], sft_grads[name], rtol=1e-5, atol=1e-7)
    positions = response_positions(batch["labels"])
    betas = BetaSchedule().betas(positions)[positions > 0]
    expected = float((2 * math.log(2) / betas).mean())  # -(2/beta) log sigmoid(0) per token, token mean
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_reference_is_cached_by_data_and_model(tmp_path, tiny_tokenizer, model, monkeypatch):
    first = _trainer(tmp_path, tiny_tokenizer, copy.deepcopy(model))
    files = list((tmp_path / "ref").glob("*.safetensors"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the reference was computed again")

    monkeypatch.setattr(reference_module, "compute_reference_logps", fail)
    second = _trainer(tmp_path, tiny_tokenizer, copy.deepcopy(model))  # loaded, not computed
    assert second.reference.keys() == first.reference.keys()
    for key in first.reference:
        assert torch.equal(second.reference[key], first.reference[key])
    with pytest.raises(AssertionError, match="computed again"):  # other data: another cache entry
        _trainer(tmp_path, tiny_tokenizer, copy.deepcopy(model), _rows(conversational=False))


@pytest.mark.parametrize("option", [{"packing": True}, {"padding_free": True}])
def test_packing_is_refused(tmp_path, option):
    with pytest.raises(DeepAlignError, match="packing"):
        ConstrainedSFTConfig(output_dir=str(tmp_path), **option)


def test_refuses_unmasked_rows_and_foreign_loss(tmp_path, tiny_tokenizer, model):
    chats = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
             for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    with pytest.raises(DeepAlignError, match="every token is supervised"):
        _trainer(tmp_path, tiny_tokenizer, model, chats, completion_only_loss=False)
    with pytest.raises(DeepAlignError, match="ConstrainedSFTConfig"):
        ConstrainedSFTTrainer(model, SFTConfig(output_dir=str(tmp_path), **COMMON),
                              train_dataset=Dataset.from_list(_rows()), processing_class=tiny_tokenizer)


def test_peft_adapter_trains_against_the_base(tmp_path, tiny_tokenizer, model):
    from peft import LoraConfig

    base_logps = {}
    trainer = ConstrainedSFTTrainer(
        copy.deepcopy(model),
        ConstrainedSFTConfig(output_dir=str(tmp_path / "out"), ref_cache_dir=str(tmp_path / "ref"),
                             **{**COMMON, "max_steps": 3}),
        train_dataset=Dataset.from_list(_rows()), processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    examples = trainer._examples(trainer.train_dataset)
    base_logps = reference_module.compute_reference_logps(model, examples, batch_size=4,
                                                          pad_id=tiny_tokenizer.pad_token_id)
    for key, value in base_logps.items():  # the reference is the base model, the adapter left out
        torch.testing.assert_close(trainer.reference[key], value)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "objective" in h]
    assert len(logged) == 3 and all(math.isfinite(h["objective"]) for h in logged)
    assert logged[-1]["objective"] != logged[0]["objective"]  # the adapter moved the policy


def test_multi_turn_positions_restart_at_every_assistant_turn(tiny_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[0]},
                {"role": "assistant", "content": ANSWERS[0]}, {"role": "user", "content": PROMPTS[1]},
                {"role": "assistant", "content": ANSWERS[2]}]
    ids, labels = encode_turns(tiny_tokenizer, messages)
    eos = tiny_tokenizer.eos_token_id
    # independent expectation: each reply is its own ids + EOS, right after its "<|im_start|>assistant\n"
    replies = [tiny_tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in (ANSWERS[0], ANSWERS[2])]
    spans, start = [], None
    for i, label in enumerate(labels + [-100]):
        if label != -100 and start is None:
            start = i
        elif label == -100 and start is not None:
            spans.append(labels[start:i])
            start = None
    assert spans == replies
    positions = response_positions(torch.tensor([labels]))[0].tolist()
    expected = [t for reply in replies for t in range(1, len(reply) + 1)]
    assert [p for p in positions if p] == expected
    assert ids[-1] == eos and len(ids) == len(labels)
    _, last = encode_turns(tiny_tokenizer, messages, last_turn_only=True)
    assert [x for x in last if x != -100] == replies[1]
