"""GCG: nanoGCG's token layout, the target loss, target derivation, and a loss that goes down."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.data import PairRecord, PromptRecord, load_pairs
from deepalign.depth.gcg import GCGAttackConfig, derive_target, find_suffixes, gcg_layout, target_loss
from deepalign.errors import DeepAlignError


def test_layout_splits_the_template_at_the_suffix(tiny_tokenizer):
    layout = gcg_layout(tiny_tokenizer, "Hello there", "Sure, here is", ChatFormat())
    suffix = tiny_tokenizer("apples pears", add_special_tokens=False)["input_ids"]
    text = tiny_tokenizer.decode(layout.before + suffix + layout.after)
    assert text == "<|im_start|>user\nHello there apples pears<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(layout.target) == "Sure, here is"


def test_layout_keeps_the_bos_the_tokenizer_does_not_add(tiny_tokenizer, llama2_tokenizer):
    # ChatML with BOS text "<|im_start|>" (as SmolLM2): every turn header is kept
    chatml = gcg_layout(tiny_tokenizer, "Hello there", "Sure", ChatFormat())
    assert chatml.before[0] == tiny_tokenizer.bos_token_id and tiny_tokenizer.bos_token_id in chatml.after
    # Llama-2 template: the template's own "<s>" is dropped and the tokenizer's single BOS is kept
    llama = gcg_layout(llama2_tokenizer, "Hello there", "Sure", ChatFormat())
    prompt = encode_prompt(llama2_tokenizer, "Hello there")
    assert llama.before[0] == llama2_tokenizer.bos_token_id and llama.before.count(llama2_tokenizer.bos_token_id) == 1
    assert llama.after == prompt[len(prompt) - len(llama.after):]


def test_target_loss_is_the_mean_target_cross_entropy(tiny_model, tiny_tokenizer):
    layout = gcg_layout(tiny_tokenizer, "Hello there", "Sure, here is", ChatFormat())
    suffix = tiny_tokenizer("apples", add_special_tokens=False)["input_ids"]
    ids = layout.before + suffix + layout.after
    nll = []
    with torch.no_grad():
        for t in layout.target:  # one forward pass per target token, no batching or shifting tricks
            logp = tiny_model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            nll.append(-logp[t].item())
            ids = ids + [t]
    assert target_loss(tiny_model, layout, suffix) == pytest.approx(sum(nll) / len(nll), abs=1e-4)


def test_targets(tiny_tokenizer):
    config = GCGAttackConfig()
    assert derive_target(tiny_tokenizer, PromptRecord("a", "Tell me about the weather."), config) == (
        "Sure, here is how to tell me about the weather")
    fixed = GCGAttackConfig(target="Sure, here is")
    assert derive_target(tiny_tokenizer, PromptRecord("a", "Hello"), fixed) == "Sure, here is"
    pair = PairRecord("a", "Hello there", "Sure, here is a short poem about apples.")
    first = derive_target(tiny_tokenizer, pair, GCGAttackConfig(answer_tokens=3))
    assert tiny_tokenizer(first, add_special_tokens=False)["input_ids"] == tiny_tokenizer(
        pair.response, add_special_tokens=False)["input_ids"][:3]
    with pytest.raises(DeepAlignError, match="response"):
        derive_target(tiny_tokenizer, PromptRecord("a", "Hello"), GCGAttackConfig(answer_tokens=3))
    with pytest.raises(DeepAlignError, match="chat template"):
        GCGAttackConfig(template="plain")


def test_gcg_lowers_the_target_loss_on_the_organism(tmp_path):
    from deepalign.pipeline.builtins import load_model, resolve_model_path

    model, tok = load_model("organism-aligned")
    pairs = load_pairs(Path(resolve_model_path("organism-aligned")).parent / "eval_pairs.jsonl", limit=1)
    with pytest.raises(DeepAlignError, match="does not know"):  # "Sure, here is" is not in its vocabulary
        derive_target(tok, pairs[0], GCGAttackConfig())
    config = GCGAttackConfig(steps=4, search_width=16, topk=32, answer_tokens=6)
    level, rng = logging.getLogger("nanogcg").level, torch.random.get_rng_state()
    rows = find_suffixes(model, tok, pairs, config, tmp_path / "suffixes.jsonl", progress=False)
    row = rows[pairs[0].id]
    assert row["suffix"].split()[0] != "x" and len(row["suffix_ids"]) == 20  # "x" is unknown: a known init token
    assert row["best_loss"] < row["initial_loss"] and math.isclose(row["best_loss"], min(row["losses"]), rel_tol=1e-3)
    assert not torch.are_deterministic_algorithms_enabled()  # nanoGCG's global switch is restored
    assert logging.getLogger("nanogcg").level == level and torch.equal(torch.random.get_rng_state(), rng)
    assert not set(row["suffix_ids"]) & set(tok.all_special_ids)
    again = find_suffixes(model, tok, pairs, config, tmp_path / "suffixes.jsonl", progress=False)  # resumed: no rerun
    assert again[pairs[0].id] == row
