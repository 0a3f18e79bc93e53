"""FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3 on 2 CPU processes (gloo) train the constrained objective as one
process does: same logged losses and objectives, same weights (full fine-tuning or LoRA adapter), with
the cached reference (pairs) and the on-the-fly one (triplets, augmentation redrawn each epoch).

How each is launched on CPU (docs/scaling.md): FSDP with ``ACCELERATE_USE_CPU=1`` and
``DEEPALIGN_FSDP_ON_CPU=1`` (accelerate sets up FSDP only for multi-accelerator types); DeepSpeed with
``DS_ACCELERATOR=cpu`` and ``--ddp_backend gloo`` (without ``ACCELERATE_USE_CPU``, which would drop
DeepSpeed). The DeepSpeed cases need the optional extra (``pip install 'deepalign[deepspeed]'``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_train_worker import run as train_in_process
from safetensors.torch import load_file
from test_trainer import ROOT, _free_port, _model_dir, _pairs, _triplets

from deepalign.io import read_jsonl

pytestmark = pytest.mark.slow

COMMON = dict(objective="constrained", num_train_epochs=2, learning_rate=1e-2, max_grad_norm=0.0, seed=0,
              disable_tqdm=True, dataloader_pin_memory=False)
CASES = [("pairs", False), ("triplets", False), ("pairs", True), ("triplets", True)]  # (data, LoRA)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in glob.glob(str(folder / "*.safetensors")):
        out.update(load_file(f))
    return out


def _launch_matches_one_process(tiny_tokenizer, tmp_path: Path, config: str, kind: str, lora: bool, env: dict,
                                extra: dict, expected: str) -> None:
    src = _model_dir(tiny_tokenizer, tmp_path / "init")
    records = _pairs(8) if kind == "pairs" else _triplets(8)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
    options = dict(COMMON, lora=lora)
    train_in_process(str(src), str(data), kind, str(tmp_path / "one"),
                     dict(options, per_device_train_batch_size=4, ref_cache_dir=str(tmp_path / "ref1")))
    two = dict(options, per_device_train_batch_size=2, ref_cache_dir=str(tmp_path / "ref2"), **extra)
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / f"configs/accelerate/{config}.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), str(ROOT / "tests/ddp_train_worker.py"), str(src), str(data),
           kind, str(tmp_path / "two"), json.dumps(two)]
    inherited = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    done = subprocess.run(cmd, env={**inherited, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert (meta["distributed"], meta["processes"]) == (expected, 2)  # what ran, not a silent fallback
    assert meta["reference"] == ("cached" if kind == "pairs" else "on the fly")
    log1 = read_jsonl(tmp_path / "one" / "training_log.jsonl")
    log2 = read_jsonl(tmp_path / "two" / "training_log.jsonl")
    assert len(log1) == len(log2) == 4
    for a, b in zip(log1, log2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-5)
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1 and w1.keys() == w2.keys()
    assert any("lora_" in k for k in w1) == lora
    for name, a in w1.items():  # Adam turns summation-order noise in near-zero gradients into ~1e-5 (ZeRO-3)
        torch.testing.assert_close(w2[name].float(), a.float(), atol=5e-5, rtol=1e-4, msg=name)
    if kind == "pairs":  # the sharded reference pass gives the one-process cache file, value for value
        (f1,), (f2,) = (tmp_path / "ref1").glob("*.safetensors"), (tmp_path / "ref2").glob("*.safetensors")
        assert f1.name == f2.name
        r1, r2 = load_file(f1), load_file(f2)
        assert all(torch.equal(r1[k], r2[k]) for k in r1)


@pytest.mark.parametrize(("kind", "lora"), CASES)
def test_fsdp2_matches_one_process(tiny_tokenizer, tmp_path, kind, lora):
    env = {"ACCELERATE_USE_CPU": "1", "DEEPALIGN_FSDP_ON_CPU": "1"}
    _launch_matches_one_process(tiny_tokenizer, tmp_path, "fsdp", kind, lora, env, {}, "FSDP")


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize(("kind", "lora"), CASES)
def test_deepspeed_matches_one_process(tiny_tokenizer, tmp_path, stage, kind, lora):
    pytest.importorskip("deepspeed", reason="optional extra: pip install 'deepalign[deepspeed]'")
    _launch_matches_one_process(tiny_tokenizer, tmp_path, f"deepspeed_zero{stage}", kind, lora,
                                {"DS_ACCELERATOR": "cpu"}, {"ddp_backend": "gloo"}, "DEEPSPEED")


LAUNCHES = {  # config -> (environment, extra finetune options, the distributed type meta.json must record)
    "ddp": ({"ACCELERATE_USE_CPU": "1"}, ["--device", "cpu"], "MULTI_CPU"),
    "fsdp": ({"ACCELERATE_USE_CPU": "1", "DEEPALIGN_FSDP_ON_CPU": "1"}, ["--device", "cpu"], "FSDP"),
    "deepspeed_zero2": ({"DS_ACCELERATOR": "cpu"}, ["--ddp-backend", "gloo"], "DEEPSPEED"),
    "deepspeed_zero3": ({"DS_ACCELERATOR": "cpu"}, ["--ddp-backend", "gloo"], "DEEPSPEED"),
}


@pytest.mark.parametrize("config", list(LAUNCHES))
def test_finetune_on_two_processes_is_rank_safe_and_matches_one(config, tmp_path, capsys):
    """`deepalign finetune` (organism, constrained, LoRA) under accelerate launch: 2 processes x batch 8
    train as 1 x 16 (same losses and objectives), evaluation rows, summary and meta are written once, one
    process prints the result, and the process group is torn down (exit 0)."""
    from deepalign.cli import main

    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="optional extra: pip install 'deepalign[deepspeed]'")
    env, extra, expected = LAUNCHES[config]
    argv = ["finetune", "--model", "organism-aligned", "--recipe", "harmful", "--objective", "constrained",
            "--max-steps", "3", "--n-eval", "4", "--use-lora", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one"), "--batch-size", "16", "--device", "cpu"]) == 0
    capsys.readouterr()
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / f"configs/accelerate/{config}.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), "-m", "deepalign.cli", *argv, "--out", str(tmp_path / "two"),
           "--batch-size", "8", *extra]
    inherited = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    done = subprocess.run(cmd, env={**inherited, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("after: ASR") == 1 and done.stdout.count("results in") == 1
    one, two = tmp_path / "one", tmp_path / "two"
    assert len(read_jsonl(two / "eval.jsonl")) == len(read_jsonl(one / "eval.jsonl")) == 8  # not 16
    model_meta = json.loads((two / "model" / "meta.json").read_text())
    assert (model_meta["distributed"], model_meta["processes"]) == (expected, 2)
    assert json.loads((two / "meta.json").read_text())["processes"] == 2
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["steps"] == s2["steps"] == 3
    log1, log2 = read_jsonl(one / "model" / "training_log.jsonl"), read_jsonl(two / "model" / "training_log.jsonl")
    for a, b in zip(log1, log2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-5)
    assert s1["after"]["asr"]["n_harmful"] == s2["after"]["asr"]["n_harmful"]
