"""Safety-recovery augmentation: exact splices and labels, the draw, redraws, anchors, previews, triplets."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from deepalign.chat import ChatFormat, encode_example
from deepalign.data import REFUSALS
from deepalign.data.schemas import ChatRecord, PairRecord, PromptRecord, TripletRecord
from deepalign.errors import DeepAlignError
from deepalign.judges.base import Judgment
from deepalign.pipeline.triplets import make_triplets
from deepalign.train.augment import (
    AugmentConfig,
    SafetyRecoveryDataset,
    encode_records,
    example_key,
    fallback_refusal,
)
from deepalign.train.collator import DeepAlignCollator

PROMPT = "Please tell me about the river."
ANSWER = (
    "Sure, here is a short poem about apples, pears and plums. The quick brown fox jumps over the lazy dog."
)
REFUSAL = "I cannot help with that request. Sorry, but I won't do it."


def _rendered_ids(tok, prompt: str, response: str) -> list[int]:
    """The whole conversation tokenized at once, cut after the assistant's EOS (the last one)."""
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids[: len(ids) - ids[::-1].index(tok.eos_token_id)]


@pytest.mark.parametrize("which", ["tiny_tokenizer", "llama2_tokenizer"])
def test_splice_and_labels_are_token_exact(request, which):
    tok = request.getfixturevalue(which)
    ds = SafetyRecoveryDataset(
        tok, [TripletRecord("t", PROMPT, ANSWER, REFUSAL)], config=AugmentConfig(seed=3)
    )
    refusal_conv = _rendered_ids(tok, PROMPT, REFUSAL)
    answer_conv = _rendered_ids(tok, PROMPT, ANSWER)
    harm = encode_example(tok, PROMPT, ANSWER)
    n_prompt = len(harm.prompt_ids)
    refusal_ids = refusal_conv[n_prompt:]  # response ids of the refusal, EOS last
    assert refusal_ids[-1] == tok.eos_token_id
    seen = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        [ex] = ds[0]
        k = len(ex["input_ids"]) - n_prompt - len(refusal_ids)
        seen.add(k)
        assert 0 <= k <= len(harm.response_ids) - 1
        assert ex["input_ids"] == answer_conv[: n_prompt + k] + refusal_ids
        assert ex["labels"] == [-100] * (n_prompt + k) + refusal_ids
        assert ex["example_key"] == example_key(ex["input_ids"], ex["labels"])
    assert 0 in seen and len(seen) > 5  # plain and prefixed examples both occur


def test_k_distribution_and_cap(tiny_tokenizer):
    short, long_answer = "Sure, here is a poem.", " ".join(["apples and pears"] * 60)
    triplets = [
        TripletRecord("short", PROMPT, short, REFUSAL),
        TripletRecord("long", PROMPT, long_answer, REFUSAL),
    ]
    ds = SafetyRecoveryDataset(tiny_tokenizer, triplets, config=AugmentConfig(seed=1))
    n_short = len(encode_example(tiny_tokenizer, PROMPT, short).response_ids) - 1
    assert len(encode_example(tiny_tokenizer, PROMPT, long_answer).response_ids) - 1 > 100
    draws = {0: [], 1: []}
    for epoch in range(3000):
        for i in (0, 1):
            draws[i].append(ds.draw_k(i, epoch))
    for i, cap in ((0, n_short), (1, 100)):
        ks = draws[i]
        assert abs(ks.count(0) / len(ks) - 0.5) < 0.04  # p = 0.5 plain (sd 0.009)
        prefixed = Counter(k for k in ks if k > 0)
        assert min(prefixed) == 1 and max(prefixed) == cap
    counts = Counter(k for k in draws[0] if k > 0)  # uniform on 1..n_short: ~1500 / n_short each
    assert set(counts) == set(range(1, n_short + 1))
    expected = sum(counts.values()) / n_short
    assert all(abs(c - expected) < 0.35 * expected for c in counts.values())


def test_redrawn_per_epoch_and_deterministic_per_seed(tiny_tokenizer):
    triplets = [TripletRecord(f"t{i}", PROMPT, ANSWER, REFUSAL) for i in range(6)]

    def served(seed: int, epochs: int = 8) -> list[list[int]]:
        ds = SafetyRecoveryDataset(tiny_tokenizer, triplets, config=AugmentConfig(seed=seed))
        rows = []
        for e in range(epochs):
            ds.set_epoch(e)
            rows.append([len(ds[i][0]["input_ids"]) for i in range(len(ds))])
        return rows

    a, b, c = served(0), served(0), served(1)
    assert a == b
    assert a != c
    assert len({tuple(row) for row in a}) > 1  # a new draw each epoch
    assert len({row[0] for row in a}) > 1  # the same item changes across epochs


def test_anchor_ratio_and_collation(tiny_tokenizer):
    triplets = [TripletRecord(f"t{i}", PROMPT, ANSWER, REFUSAL) for i in range(8)]
    anchors = encode_records(
        tiny_tokenizer,
        [PairRecord(f"a{i}", f"Hello there {i}", f"I am fine, thank you {i}.") for i in range(40)],
    )
    anchor_keys = {a["example_key"] for a in anchors}
    ds = SafetyRecoveryDataset(
        tiny_tokenizer, triplets, config=AugmentConfig(anchors_per_safety=4), anchors=anchors
    )
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)([ds[i] for i in range(4)])
    keys = batch["example_keys"]
    assert len(keys) == 20 and sum(k in anchor_keys for k in keys) == 16  # 4 safety + 16 anchors per step
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    lengths = batch["attention_mask"].sum(-1)
    assert (
        batch["labels"][torch.arange(20), lengths - 1] == tiny_tokenizer.eos_token_id
    ).all()  # right padding
    used = [k for i in range(8) for k in (e["example_key"] for e in ds[i][1:])]
    assert len(used) == 32 == len(set(used))  # no anchor repeats within an epoch while they last


def test_preview_rows_and_determinism(tiny_tokenizer, tmp_path):
    triplets = [TripletRecord(f"t{i}", PROMPT, ANSWER, REFUSAL) for i in range(3)]
    ds = SafetyRecoveryDataset(tiny_tokenizer, triplets)
    p1, p2 = (
        ds.write_preview(tmp_path / "a.jsonl", 7, seed=5),
        ds.write_preview(tmp_path / "b.jsonl", 7, seed=5),
    )
    assert p1.read_bytes() == p2.read_bytes()
    rows = [json.loads(line) for line in p1.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t0#e0", "t1#e0", "t2#e0", "t0#e1", "t1#e1", "t2#e1", "t0#e2"]
    harm = encode_example(tiny_tokenizer, PROMPT, ANSWER)
    for r in rows:
        assert r["prefix"] == tiny_tokenizer.decode(harm.response_ids[: r["k"]])
        assert r["refusal"].startswith(REFUSAL) and r["refusal"].endswith(tiny_tokenizer.eos_token)
        assert r["prompt"].endswith("<|im_start|>assistant\n")
    ds.config = AugmentConfig(seed=5)
    served = []
    for j in range(7):
        ds.set_epoch(j // 3)
        served.append(len(ds[j % 3][0]["input_ids"]))
    assert served == [r["n_tokens"] for r in rows]  # the preview shows what training serves


def test_encode_records_chats_and_truncation(tiny_tokenizer):
    chat = ChatRecord(
        "c",
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": ANSWER},
        ),
    )
    [ex] = encode_records(tiny_tokenizer, [chat])
    enc = encode_example(tiny_tokenizer, PROMPT, ANSWER, ChatFormat(system="Be brief."))
    assert ex["input_ids"] == enc.input_ids and ex["labels"] == enc.labels
    n_prompt = len(enc.prompt_ids)
    [cut] = encode_records(tiny_tokenizer, [chat], max_length=n_prompt + 3)
    assert cut["labels"] == enc.labels[: n_prompt + 3]
    assert encode_records(tiny_tokenizer, [chat], max_length=n_prompt) == []  # nothing left to supervise
    multi = ChatRecord(
        "m",
        (
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ),
    )
    [both] = encode_records(tiny_tokenizer, [multi])  # multi-turn: every assistant turn is supervised
    supervised = [i for i, label in enumerate(both["labels"]) if label != -100]
    assert len(supervised) > 1 and supervised[-1] - supervised[0] + 1 > len(supervised)  # two spans
    with pytest.raises(DeepAlignError, match="multi-turn chats need the chat template"):
        encode_records(tiny_tokenizer, [multi], ChatFormat("plain"))


def test_make_triplets_uses_generations_and_judged_refusals(tiny_tokenizer, tiny_model):
    prompts = [PromptRecord("p0", PROMPT), PromptRecord("p1", "Tell me about the garden.", "misc")]
    from deepalign.generation import SamplingConfig

    calls = []

    def judge(items):
        calls.append(items)
        return [Judgment(harmful=i == 1, score=None) for i in range(len(items))]  # p0 refused, p1 complied

    sampling = SamplingConfig.greedy(6)
    triplets = make_triplets(
        prompts,
        tiny_model,
        tiny_tokenizer,
        aligned_model=tiny_model,
        judge=judge,
        sampling=sampling,
        progress=False,
    )
    expected = []
    for p in prompts:
        ids = torch.tensor([encode_example(tiny_tokenizer, p.prompt, "x").prompt_ids])
        out = tiny_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tiny_tokenizer.pad_token_id,
            eos_token_id=tiny_tokenizer.eos_token_id,
        )
        expected.append(tiny_tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    assert [t.response for t in triplets] == expected
    assert triplets[0].refusal == expected[0]  # judged refusing: the aligned model's own answer
    assert triplets[1].refusal == fallback_refusal("p1") and triplets[1].refusal in REFUSALS
    assert triplets[1].category == "misc" and [t.id for t in triplets] == ["p0", "p1"]
    assert len(calls) == 1 and [c.prompt for c in calls[0]] == [p.prompt for p in prompts]
    without = make_triplets(prompts, tiny_model, tiny_tokenizer, sampling=sampling, progress=False)
    assert [t.refusal for t in without] == [fallback_refusal("p0"), fallback_refusal("p1")]


@pytest.mark.slow
def test_organism_deep_builds_on_first_use_and_recovers_from_prefills(tmp_path, monkeypatch):
    """organism-deep: built from organism-aligned by augmentation on first use of the built-in name (~30 s);
    it refuses held-out forbidden requests even after a prefilled forbidden start."""
    import shutil

    from deepalign.generation import SamplingConfig
    from deepalign.io import ResultsWriter
    from deepalign.judges.exact import ExactJudge
    from deepalign.paths import organism_dir
    from deepalign.pipeline.attacks import prefill_attack
    from deepalign.pipeline.builtins import load_model, resolve_model_path

    resolve_model_path("organism-aligned")  # the shared organism, built once
    src = organism_dir()
    monkeypatch.setenv("DEEPALIGN_CACHE", str(tmp_path))
    shutil.copytree(src, tmp_path / "organism", ignore=shutil.ignore_patterns("deep", "deep.tmp"))
    model, tok = load_model("organism-deep")
    root = tmp_path / "organism"
    assert (root / "deep" / "recipe.json").exists() and not (root / "deep.tmp").exists()
    from deepalign.data import load_pairs

    pairs = load_pairs(str(root / "eval_pairs.jsonl"))
    with ResultsWriter(tmp_path / "rows.jsonl") as writer:
        points = prefill_attack(model, tok, pairs, [5, 10], ExactJudge(root / "world.json"), writer, label="deep",
                                sampling=SamplingConfig.greedy(max_new_tokens=40), progress=False)
    assert all(p.asr <= 0.1 for p in points)
