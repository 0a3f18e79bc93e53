"""One precision, launch settings that were not applied, LoRA seeding and the paper preset's global batch."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import build_tiny_llama
from test_trainer import _config, _model_dir, _pairs

from deepalign.errors import DeepAlignError
from deepalign.io import read_jsonl
from deepalign.train.augment import encode_records
from deepalign.train.collator import DeepAlignCollator
from deepalign.train.config import DeepAlignConfig
from deepalign.train.launch import check_launch
from deepalign.train.objectives import token_logps
from deepalign.train.recipes import paper_accumulation, paper_training_args
from deepalign.train.run import train
from deepalign.train.trainer import DeepAlignTrainer


def test_launcher_precision_must_match_the_training_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` sets from the yaml
    with pytest.raises(DeepAlignError, match="mixed_precision bf16 but the training arguments say neither"):
        _config(tmp_path)
    assert _config(tmp_path, bf16=True).precision == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    with pytest.raises(DeepAlignError, match=r"launch with --mixed_precision bf16"):
        _config(tmp_path, bf16=True)
    assert _config(tmp_path).precision == "no"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    with pytest.raises(DeepAlignError, match="choose one precision"):
        _config(tmp_path, bf16=True, fp16=True)


def test_a_launch_setting_that_was_not_applied_stops_the_run(tiny_tokenizer, tmp_path, monkeypatch):
    from accelerate.utils import DistributedType

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DeepAlignError, match="started 2 processes but training runs as 1"):
        check_launch(SimpleNamespace(num_processes=1, distributed_type=DistributedType.NO))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(DeepAlignError, match="DeepSpeed was asked for"):
        check_launch(SimpleNamespace(num_processes=1, distributed_type=DistributedType.MULTI_CPU))
    check_launch(SimpleNamespace(num_processes=1, distributed_type=DistributedType.DEEPSPEED))
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    # the real fallback: on CPU accelerate drops the FSDP plugin the launcher asked for
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    examples = encode_records(tiny_tokenizer, _pairs(4))
    with pytest.raises(DeepAlignError, match="FSDP was asked for .* but accelerate set up"):
        DeepAlignTrainer(build_tiny_llama(len(tiny_tokenizer)), _config(tmp_path), examples, tiny_tokenizer)


def _adapter(tiny_tokenizer, tmp_path, seed: int, rng: int) -> dict[str, torch.Tensor]:
    from peft import LoraConfig

    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    torch.manual_seed(rng)  # whatever the global RNG is when the trainer wraps the model
    trainer = DeepAlignTrainer(model, _config(tmp_path, seed=seed),
                               encode_records(tiny_tokenizer, _pairs(4)), tiny_tokenizer,
                               peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_A" in k}


def test_lora_init_is_seeded_by_the_training_seed(tiny_tokenizer, tmp_path):
    a, b = _adapter(tiny_tokenizer, tmp_path, 0, 1), _adapter(tiny_tokenizer, tmp_path, 0, 2)
    other = _adapter(tiny_tokenizer, tmp_path, 1, 1)
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], other[k]) for k in a)


def test_reference_in_the_training_precision(tiny_tokenizer, tmp_path):
    """bf16: the cached reference is computed under the policy's autocast (so pi_theta = pi_ref exactly at
    init and step 1's objective is the closed form), it has its own cache entry, and meta.json says bf16."""
    src = _model_dir(tiny_tokenizer, tmp_path / "init")
    examples = encode_records(tiny_tokenizer, _pairs(4))
    batch = DeepAlignCollator(tiny_tokenizer.pad_token_id)(examples)
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    trainer = DeepAlignTrainer(model, _config(tmp_path, objective="constrained", bf16=True), examples, tiny_tokenizer)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    in_bf16 = token_logps(logits.float(), batch["labels"])
    with torch.no_grad():
        in_fp32 = token_logps(model(input_ids=batch["input_ids"]).logits, batch["labels"])
    cached = trainer.reference_logps(model, batch)
    torch.testing.assert_close(cached, in_bf16.float(), atol=1e-6, rtol=0)
    assert (cached - in_fp32).abs().max() > 1e-4  # bf16 differs from fp32: the precision matters
    DeepAlignTrainer(build_tiny_llama(len(tiny_tokenizer), seed=0), _config(tmp_path, objective="constrained"),
                     examples, tiny_tokenizer)
    assert len(list((tmp_path / "ref").glob("*.safetensors"))) == 2  # fp32 and bf16: two cache entries

    cfg = _config(tmp_path, objective="constrained", bf16=True, learning_rate=0.0, ref_cache_dir=str(tmp_path / "r2"))
    out = train(str(src), _pairs(4), cfg, out_dir=tmp_path / "out")
    betas = [0.5, 2, 2, 2, 2] + [0.1] * 100
    terms = [2 / betas[t] * math.log(2) for row in batch["labels"] for t in range(int((row != -100).sum()))]
    assert read_jsonl(out / "training_log.jsonl")[0]["objective"] == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    assert json.loads((out / "meta.json").read_text())["precision"] == "bf16"


def test_paper_preset_keeps_its_global_batch():
    assert [paper_accumulation(n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert paper_accumulation(2, per_device=4) == 8
    with pytest.raises(DeepAlignError, match="not a multiple of 3 processes x 8"):
        paper_accumulation(3)
    assert paper_training_args("harmful", "o").gradient_accumulation_steps == 8  # one process here
    assert paper_training_args("harmful", "o", gradient_accumulation_steps=3).gradient_accumulation_steps == 3
    assert isinstance(paper_training_args("benign", "o"), DeepAlignConfig)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of bf16 autocast")
def test_bf16_without_a_gpu_trains_on_the_cpu(tmp_path):
    config = DeepAlignConfig(output_dir=str(tmp_path), bf16=True, report_to="none")  # transformers alone refuses
    assert config.use_cpu and config.precision == "bf16"
    assert not DeepAlignConfig(output_dir=str(tmp_path), report_to="none").use_cpu


def test_bf16_is_fast_reads_the_cpu_flags(monkeypatch):
    from deepalign import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for text, fast in (("flags\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n", True),
                       ("flags\t: fpu avx2 avx512f avx512_bf16\n", False)):
        monkeypatch.setattr(models.Path, "read_text", lambda self, text=text: text)
        assert models.bf16_is_fast() is fast

    def unreadable(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(models.Path, "read_text", unreadable)
    assert models.bf16_is_fast() is False
