"""Trainer: objective at init, reference cache, normalisation (accumulation, processes), LoRA, train()."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llama

from deepalign.chat import encode_example
from deepalign.data.schemas import PairRecord, TripletRecord
from deepalign.io import read_jsonl
from deepalign.models import load_model
from deepalign.train import reference as reference_module
from deepalign.train.augment import AugmentConfig, SafetyRecoveryDataset, encode_records
from deepalign.train.collator import DeepAlignCollator
from deepalign.train.config import DeepAlignConfig
from deepalign.train.objectives import token_logps
from deepalign.train.reference import scatter_reference
from deepalign.train.run import train
from deepalign.train.trainer import DeepAlignTrainer

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Hello there, how are you today?", "Tell me about the weather.", "Sure?", "What about the river?"]
ANSWERS = [
    "I am fine, thank you very much.",
    "The quick brown fox jumps over the lazy dog in the garden and the river.",
    "Sure.",
    "Please tell me about apples, pears and plums.",
]


def _pairs(n: int) -> list[PairRecord]:
    return [PairRecord(f"p{i}", PROMPTS[i % 4] + " " * (i // 4), ANSWERS[(i * 3) % 4]) for i in range(n)]


def _triplets(n: int) -> list[TripletRecord]:
    return [TripletRecord(f"t{i}", PROMPTS[i % 4], ANSWERS[(i + 1) % 4], ANSWERS[0]) for i in range(n)]


def _config(tmp_path: Path, **overrides) -> DeepAlignConfig:
    options = dict(
        output_dir=str(tmp_path / "ck"),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
        ref_cache_dir=str(tmp_path / "ref"),
        dataloader_pin_memory=False,
    )
    return DeepAlignConfig(**{**options, **overrides})


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _batch_logps(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_logps(logits, batch["labels"])


@pytest.mark.parametrize("augmented", [False, True])
def test_constrained_first_step_equals_sft_step(tiny_tokenizer, tmp_path, augmented):
    """At init pi_theta = pi_ref, so every token weight is 1 and the step is the SFT step (cached and
    on-the-fly reference)."""
    after = {}
    for objective in ("sft", "constrained"):
        model = build_tiny_llama(len(tiny_tokenizer), seed=0)
        data = (
            SafetyRecoveryDataset(tiny_tokenizer, _triplets(4), config=AugmentConfig(seed=0))
            if augmented
            else encode_records(tiny_tokenizer, _pairs(4))
        )
        cfg = _config(tmp_path, objective=objective, optim="adamw_torch")
        trainer = DeepAlignTrainer(model, cfg, data, tiny_tokenizer)
        assert (trainer.ref_model is not None) == (augmented and objective == "constrained")
        trainer.train()
        after[objective] = _params(model)
    init = _params(build_tiny_llama(len(tiny_tokenizer), seed=0))
    assert max((after["sft"][k] - init[k]).abs().max() for k in init) > 5e-4  # the step moved the weights
    for k in init:
        torch.testing.assert_close(after["constrained"][k], after["sft"][k], atol=1e-6, rtol=0)


def test_reference_cache_hit_and_matching_under_shuffling(tiny_tokenizer, tmp_path, monkeypatch):
    examples = encode_records(tiny_tokenizer, _pairs(10))
    cfg = _config(tmp_path, objective="constrained", per_device_train_batch_size=3)
    first = DeepAlignTrainer(build_tiny_llama(len(tiny_tokenizer), seed=0), cfg, examples, tiny_tokenizer)
    files = list((tmp_path / "ref").glob("*.safetensors"))
    assert len(files) == 1 and len(first.reference) == 10

    def no_recompute(*args, **kwargs):
        raise AssertionError("the reference was recomputed despite a cached file")

    monkeypatch.setattr(reference_module, "compute_reference_logps", no_recompute)
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    second = DeepAlignTrainer(model, cfg, list(reversed(examples)), tiny_tokenizer)  # other order: same cache
    assert second.reference.keys() == first.reference.keys()
    for key, value in first.reference.items():
        assert torch.equal(second.reference[key], value)

    served = []
    for epoch in range(
        2
    ):  # shuffled, padded batches: cached values match a fresh forward, example by example
        loader = second.get_train_dataloader()
        loader.set_epoch(epoch)
        for batch in loader:
            ref = scatter_reference(second.reference, batch["example_keys"], batch["labels"])
            torch.testing.assert_close(ref, _batch_logps(model, batch).float(), atol=2e-5, rtol=0)
            assert (ref != 0).sum() == (batch["labels"][:, 1:] != -100).sum()
            served += batch["example_keys"]
    assert sorted(served[:10]) == sorted(e["example_key"] for e in examples)
    assert served[:10] != served[10:] and served[:10] != [e["example_key"] for e in reversed(examples)]

    monkeypatch.undo()
    DeepAlignTrainer(build_tiny_llama(len(tiny_tokenizer), seed=1), cfg, examples, tiny_tokenizer)
    assert len(list((tmp_path / "ref").glob("*.safetensors"))) == 2  # other weights: another cache entry


@pytest.mark.parametrize("objective", ["sft", "constrained"])
def test_grad_accumulation_matches_full_batch(tiny_tokenizer, tmp_path, objective):
    """grad-accum 2 x batch 2 == batch 4 == one SGD step on transformers' own token-mean loss of all 4."""
    examples = encode_records(tiny_tokenizer, _pairs(4))
    counts = sorted(sum(label != -100 for label in e["labels"]) for e in examples)
    assert counts[0] < counts[-1]  # unequal lengths: a mean of micro-batch means would differ
    lr = 0.5

    def run(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        model = build_tiny_llama(len(tiny_tokenizer), seed=0)
        cfg = _config(
            tmp_path,
            objective=objective,
            optim="sgd",
            learning_rate=lr,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        DeepAlignTrainer(model, cfg, examples, tiny_tokenizer).train()
        return _params(model)

    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)(examples)
    model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss.backward()
    expected = {k: (p - lr * p.grad).detach() for k, p in model.named_parameters()}
    for got in (run(4, 1), run(2, 2)):
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], atol=2e-6, rtol=1e-5)


def test_lora_reference_is_the_base_model(tiny_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    vocab = len(tiny_tokenizer)
    base = build_tiny_llama(vocab, seed=0)
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False
    )

    # fixed data: the cached reference is computed with the adapter disabled
    examples = encode_records(tiny_tokenizer, _pairs(4))
    cfg = _config(tmp_path, objective="constrained")
    trainer = DeepAlignTrainer(
        get_peft_model(build_tiny_llama(vocab, seed=0), lora), cfg, examples, tiny_tokenizer
    )
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)(examples)
    expected = _batch_logps(base, batch).float()
    torch.testing.assert_close(trainer.reference_logps(trainer.model, batch), expected, atol=2e-5, rtol=0)
    assert (
        _batch_logps(trainer.model, batch) - expected
    ).abs().max() > 1e-3  # the adapter does change the model

    # redrawn data: on the fly, the same model with its adapter disabled (no second copy), after training
    data = SafetyRecoveryDataset(tiny_tokenizer, _triplets(4), config=AugmentConfig(seed=0))
    cfg = _config(tmp_path, objective="constrained", optim="adamw_torch", learning_rate=5e-2, max_steps=2)
    model = get_peft_model(
        build_tiny_llama(vocab, seed=0), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    trainer = DeepAlignTrainer(model, cfg, data, tiny_tokenizer)
    assert trainer.ref_model is None and trainer.reference is None
    trainer.train()
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    expected = _batch_logps(base, batch).float()
    torch.testing.assert_close(trainer.reference_logps(model, batch), expected, atol=2e-5, rtol=0)
    assert (_batch_logps(model, batch) - expected).abs().max() > 1e-3


def _model_dir(tokenizer, path: Path) -> Path:
    build_tiny_llama(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_train_saves_model_and_log(tiny_tokenizer, tmp_path):
    src = _model_dir(tiny_tokenizer, tmp_path / "init")
    cfg = _config(tmp_path, objective="constrained", surrogate=True, max_steps=-1, num_train_epochs=3)
    out = train(str(src), _pairs(4), cfg, out_dir=tmp_path / "out")  # one batch of all 4 examples per step
    rows = read_jsonl(out / "training_log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["learning_rate"] > 0 and r["grad_norm"] > 0 for r in rows)
    # step 1 (at init, every token weight 1): the trained surrogate is the CE token mean, and the exact
    # objective the token mean of (2 / beta_t) log 2 with the paper's beta_1 = 0.5, beta_2..5 = 2, then 0.1
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)(encode_records(tiny_tokenizer, _pairs(4)))
    init, _ = load_model(str(src))
    ce = init(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss
    betas = [0.5, 2, 2, 2, 2] + [0.1] * 100
    terms = [2 / betas[t] * math.log(2) for row in batch["labels"] for t in range(int((row != -100).sum()))]
    assert rows[0]["loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert rows[0]["objective"] == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert rows[2]["loss"] < rows[0]["loss"]
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "meta.json").read_text())["reference"] == "cached"
    trained, tok = load_model(str(out))
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), init.parameters(), strict=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["pairs", "triplets"])
def test_two_processes_match_one_process(tiny_tokenizer, tmp_path, kind):
    """accelerate launch, 2 CPU processes x batch 2 == 1 process x batch 4: same weights and logged losses.

    pairs: cached reference split over the processes; triplets: augmentation redrawn per epoch in step
    on both processes, reference from a frozen copy."""
    if shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("accelerate launcher not installed")
    src = _model_dir(tiny_tokenizer, tmp_path / "init")
    records = _pairs(8) if kind == "pairs" else _triplets(8)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
    common = dict(
        objective="constrained",
        num_train_epochs=2,
        learning_rate=1e-2,
        max_grad_norm=0.0,
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    cfg = DeepAlignConfig(**common, per_device_train_batch_size=4, ref_cache_dir=str(tmp_path / "ref1"))
    one = train(str(src), records, cfg, out_dir=tmp_path / "one")
    options = dict(common, per_device_train_batch_size=2, ref_cache_dir=str(tmp_path / "ref2"))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(ROOT / "configs/accelerate/ddp.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(ROOT / "tests/ddp_train_worker.py"),
        str(src),
        str(data),
        kind,
        str(tmp_path / "two"),
        json.dumps(options),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log1, log2 = read_jsonl(one / "training_log.jsonl"), read_jsonl(tmp_path / "two" / "training_log.jsonl")
    assert len(log1) == len(log2) == 4
    for a, b in zip(log1, log2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-5)
    w1, _ = load_model(str(one))
    w2, _ = load_model(str(tmp_path / "two"))
    for (name, a), b in zip(w1.named_parameters(), w2.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / f"configs/accelerate/{name}.yaml"))
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
    assert str(config.distributed_type).endswith(expected) and config.num_machines == 1
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        assert config.deepspeed_config["zero3_init_flag"] is False
    if name == "fsdp":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert config.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False


def test_forward_logps_keeps_only_needed_logits(tiny_tokenizer, tiny_model):
    examples = encode_records(tiny_tokenizer, _pairs(4))
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)(examples)
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        kept, out = reference_module.forward_logps(tiny_model, *args, keep_logits=True)
        full, out_full = reference_module.forward_logps(tiny_model, *args, keep_logits=False)
    first = min(len(encode_example(tiny_tokenizer, p.prompt, p.response).prompt_ids) for p in _pairs(4))
    assert out_full.logits.shape[1] == batch["input_ids"].shape[1]
    assert out.logits.shape[1] == batch["input_ids"].shape[1] - first + 1  # from the first prediction on
    torch.testing.assert_close(kept, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, _batch_logps(tiny_model, batch), atol=1e-6, rtol=0)


def test_heap_trim_only_after_growth(monkeypatch):
    """malloc_trim runs at the end of a step only once resident memory exceeds 1.25x the first step's."""
    from deepalign.train import callbacks

    rss = iter([100, 110, 126, 120, 125, 200])
    monkeypatch.setattr(callbacks, "resident_bytes", lambda: next(rss))
    calls = []
    trim = callbacks.HeapTrimCallback()
    trim._trim = calls.append
    for _ in range(6):
        trim.on_step_end(None, None, None)
    assert trim.baseline == 100 and trim.trims == 2 and calls == [0, 0]  # at 126 and at 200


def test_heap_trim_is_real_on_this_machine():
    """Under glibc the callback finds malloc_trim and a real call returns (1: memory was released, 0: none)."""
    from deepalign.train.callbacks import HeapTrimCallback, resident_bytes

    trim = HeapTrimCallback()
    if trim._trim is None:
        pytest.skip("not glibc")
    assert trim._trim(0) in (0, 1) and resident_bytes() > 0
