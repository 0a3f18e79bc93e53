"""Batched generation: equals one-at-a-time decoding, per-(id, repeat) seeding, EOS/stop strings, resume."""

from __future__ import annotations

import builtins
import math
from collections import Counter

import pytest
import torch
from conftest import build_tiny_llama, build_tiny_tokenizer

from deepalign.errors import DeepAlignError
from deepalign.generation import (
    Generation,
    GenerationRequest,
    RowSampler,
    SamplingConfig,
    generate,
    request_seed,
    vllm_sampling_kwargs,
)

TEXTS = [
    "Hello there",
    "Please tell me about the weather in the garden and the river.",
    "Sure",
    "The quick brown fox jumps over the lazy dog.",
    "I am fine, thank you very much.",
]
FREE = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}  # plain softmax sampling: samples vary a lot


@pytest.fixture
def requests(tiny_tokenizer) -> list[GenerationRequest]:
    return [GenerationRequest(f"p{i}", tiny_tokenizer(t)["input_ids"]) for i, t in enumerate(TEXTS)]


def run(model, tok, reqs, config, **kw) -> list[Generation]:
    return generate(model, tok, reqs, config, progress=False, **kw)


def manual_greedy(model, ids: list[int], n: int) -> list[int]:
    """Reference: argmax of a full forward pass on the unpadded sequence, n times, no cache."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def test_batched_greedy_equals_one_at_a_time(tiny_model, tiny_tokenizer, requests):
    cfg = SamplingConfig.greedy(max_new_tokens=12)
    batched = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=8)
    single = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=1)
    assert [g.id for g in batched] == [r.id for r in requests]  # input order, despite the length sort
    for g, s, r in zip(batched, single, requests, strict=True):
        assert g.token_ids == s.token_ids == manual_greedy(tiny_model, r.input_ids, 12)
        assert not g.finished and len(g.token_ids) == 12  # the random model never says EOS here
        assert g.text == tiny_tokenizer.decode(g.token_ids, skip_special_tokens=True)


def test_sampling_is_seeded_and_independent_of_batch(tiny_model, tiny_tokenizer, requests):
    cfg = SamplingConfig(max_new_tokens=10, seed=7, **FREE)
    full = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=5)
    again = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=2)
    alone = run(tiny_model, tiny_tokenizer, requests[1:2], cfg, batch_size=1)
    assert [g.token_ids for g in full] == [g.token_ids for g in again]
    assert alone[0].token_ids == full[1].token_ids
    other_seed = run(tiny_model, tiny_tokenizer, requests, SamplingConfig(max_new_tokens=10, seed=8, **FREE))
    assert [g.token_ids for g in other_seed] != [g.token_ids for g in full]
    greedy = run(tiny_model, tiny_tokenizer, requests, SamplingConfig.greedy(10))
    assert [g.token_ids for g in greedy] != [g.token_ids for g in full]


def test_repeats_give_different_samples(tiny_model, tiny_tokenizer, requests):
    cfg = SamplingConfig(max_new_tokens=10, repeats=3, **FREE)
    gens = run(tiny_model, tiny_tokenizer, requests[:2], cfg)
    assert [(g.id, g.repeat) for g in gens] == [("p0", 0), ("p0", 1), ("p0", 2), ("p1", 0), ("p1", 1), ("p1", 2)]
    for rid in ("p0", "p1"):
        assert len({tuple(g.token_ids) for g in gens if g.id == rid}) == 3


def test_row_sampler_follows_the_warped_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    free = RowSampler(SamplingConfig(**FREE), seeds=[1])
    draws = Counter(int(free(None, logits.clone()).argmax()) for _ in range(4000))
    for v, p in enumerate([0.5, 0.3, 0.15, 0.05]):
        assert abs(draws[v] / 4000 - p) < 0.03
    nucleus = RowSampler(SamplingConfig(temperature=1.0, top_p=0.7, top_k=0), seeds=[2])
    assert {int(nucleus(None, logits.clone()).argmax()) for _ in range(300)} == {0, 1}  # 0.5 + 0.3 covers 0.7
    top1 = RowSampler(SamplingConfig(temperature=1.0, top_p=1.0, top_k=1), seeds=[3])
    assert {int(top1(None, logits.clone()).argmax()) for _ in range(50)} == {0}
    out = free(None, logits.clone())
    assert (out == 0).sum() == 1 and torch.isinf(out).sum() == 3  # one-hot in score space


def test_stop_strings_cut_text(tiny_model, tiny_tokenizer, requests):
    plain = run(tiny_model, tiny_tokenizer, requests, SamplingConfig.greedy(12))
    long = max(plain, key=lambda g: len(g.text))
    stop = long.text[4:6]
    cut = run(tiny_model, tiny_tokenizer, requests, SamplingConfig.greedy(12, stop_strings=(stop,)))
    for p, c in zip(plain, cut, strict=True):
        if stop in p.text:
            assert c.finished and c.text == p.text[: p.text.index(stop)]
            assert c.token_ids == p.token_ids[: len(c.token_ids)] and len(c.token_ids) < 12
            assert stop in tiny_tokenizer.decode(c.token_ids) and stop not in tiny_tokenizer.decode(c.token_ids[:-1])
        else:
            assert c == p


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_eos_list_stops_and_trims(tiny_tokenizer, requests, pad_is_eos):
    tok = build_tiny_tokenizer()
    if pad_is_eos:  # like SmolLM2: rows that stopped are padded with the EOS id itself
        tok.pad_token = tok.eos_token
    model = build_tiny_llama(len(tok))
    plain = run(model, tok, requests, SamplingConfig.greedy(12))
    eos_extra = plain[1].token_ids[3]  # make a token the model emits an (additional) EOS
    model.generation_config.eos_token_id = [eos_extra, tok.eos_token_id]
    stopped = run(model, tok, requests, SamplingConfig.greedy(12), batch_size=5)
    alone = [run(model, tok, [r], SamplingConfig.greedy(12))[0] for r in requests]
    assert stopped == alone
    for p, s in zip(plain, stopped, strict=True):
        if eos_extra in p.token_ids:
            n = p.token_ids.index(eos_extra) + 1
            assert s.finished and s.token_ids == p.token_ids[:n]
        else:
            assert not s.finished and s.token_ids == p.token_ids
    assert stopped[1].finished and len(stopped[1].token_ids) <= 4


def test_max_new_tokens_respected(tiny_model, tiny_tokenizer, requests):
    for n in (1, 5):
        gens = run(tiny_model, tiny_tokenizer, requests, SamplingConfig(max_new_tokens=n, **FREE))
        assert all(len(g.token_ids) == n for g in gens if not g.finished)
        assert all(len(g.token_ids) <= n for g in gens)


def test_skip_and_on_batch_resume(tiny_model, tiny_tokenizer, requests):
    cfg = SamplingConfig(max_new_tokens=8, repeats=2)
    full = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=3)
    skip = {("p0", 0), ("p1", 1), ("p3", 0), ("p3", 1)}
    batches: list[list[Generation]] = []
    rest = run(tiny_model, tiny_tokenizer, requests, cfg, batch_size=3, skip=skip, on_batch=batches.append)
    assert {(g.id, g.repeat) for g in rest} == {(g.id, g.repeat) for g in full} - skip
    assert rest == [g for g in full if (g.id, g.repeat) not in skip]
    key = lambda g: (g.id, g.repeat)  # noqa: E731
    assert [len(b) for b in batches] == [3, 3]
    assert sorted((g for b in batches for g in b), key=key) == sorted(rest, key=key)
    assert run(tiny_model, tiny_tokenizer, requests, cfg, skip={(g.id, g.repeat) for g in full}) == []


def test_request_seed_is_stable_and_distinct():
    seeds = {request_seed(s, i, k) for s in (0, 1) for i in ("a", "b") for k in (0, 1)}
    assert len(seeds) == 8 and all(0 <= x < 2**63 for x in seeds)
    assert request_seed(0, "a", 0) == request_seed(0, "a", 0)


def test_user_errors(tiny_model, tiny_tokenizer, requests):
    with pytest.raises(DeepAlignError, match="unique"):
        run(tiny_model, tiny_tokenizer, [requests[0], requests[0]], SamplingConfig.greedy(2))
    with pytest.raises(DeepAlignError, match="backend"):
        run(tiny_model, tiny_tokenizer, requests, SamplingConfig.greedy(2), backend="tgi")
    with pytest.raises(DeepAlignError, match="no input ids"):
        run(tiny_model, tiny_tokenizer, [GenerationRequest("x", [])], SamplingConfig.greedy(2))
    for bad in ({"temperature": 0.0}, {"top_p": 1.5}, {"repeats": 0}, {"stop_strings": ("",)}):
        with pytest.raises(DeepAlignError):
            SamplingConfig(**bad)
    SamplingConfig.greedy(4, temperature=0.0)  # temperature is irrelevant when greedy


def test_vllm_missing_gives_install_hint(monkeypatch, requests):
    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(DeepAlignError, match=r"pip install 'deepalign\[vllm\]'"):
        generate("some/model/path", None, requests, SamplingConfig.greedy(4), backend="vllm", progress=False)


def test_vllm_sampling_kwargs_mapping():
    sampled = vllm_sampling_kwargs(SamplingConfig(stop_strings=("\nUser:",)), seed=11, stop_token_ids=[2])
    assert sampled == {
        "n": 1, "max_tokens": 512, "seed": 11, "stop": ["\nUser:"], "stop_token_ids": [2],
        "skip_special_tokens": True, "temperature": 0.9, "top_p": 0.6, "top_k": 50,
    }
    greedy = vllm_sampling_kwargs(SamplingConfig.greedy(48), seed=0)
    assert greedy["temperature"] == 0.0 and greedy["max_tokens"] == 48 and "top_p" not in greedy
    no_k = vllm_sampling_kwargs(SamplingConfig(top_k=0, top_p=1.0, temperature=0.5), seed=0)
    assert (no_k["top_k"], no_k["top_p"], no_k["temperature"]) == (-1, 1.0, 0.5)
    zero_p = vllm_sampling_kwargs(SamplingConfig(top_p=0.0), seed=0)  # top-p -> 0 keeps only the top token
    assert (zero_p["top_k"], zero_p["top_p"]) == (1, 1.0)
    assert math.isclose(vllm_sampling_kwargs(SamplingConfig(temperature=0.05), seed=0)["temperature"], 0.05)
