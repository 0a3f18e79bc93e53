"""A killed `deepalign train` / `finetune` continues from its newest checkpoint when rerun (issue 16): SIGKILL
between two checkpoints, rerun, and the final weights and training log equal an uninterrupted run's."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_kill_resume import kill_after

from deepalign.cli import main
from deepalign.io import read_jsonl
from deepalign.pipeline.builtins import resolve_model_path

STEPS, EVERY = 24, 8


def kill_between_checkpoints(argv: list[str], out: Path, env: dict) -> None:
    """Run the command and SIGKILL it once two steps past the first checkpoint are logged (the checkpoint is
    written before the next step), then check that it was killed before the next checkpoint."""
    code = kill_after(argv, out / "training_log.jsonl", EVERY + 2, random.Random(0), env)
    assert code == -signal.SIGKILL
    assert (out / f"checkpoint-{EVERY}" / "trainer_state.json").exists()
    assert not (out / "model.safetensors").exists() and not (out / f"checkpoint-{2 * EVERY}").exists()


def assert_same_training(resumed: Path, fresh: Path) -> None:
    a, b = load_file(resumed / "model.safetensors"), load_file(fresh / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    log_a, log_b = read_jsonl(resumed / "training_log.jsonl"), read_jsonl(fresh / "training_log.jsonl")
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b] == list(range(1, STEPS + 1))
    for ra, rb in zip(log_a, log_b, strict=True):
        for key in ("loss", "objective", "learning_rate", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra, rb)


@pytest.mark.parametrize("data", ["harmful_ft.jsonl", "train_triplets.jsonl"])
def test_train_killed_between_checkpoints_resumes_to_the_uninterrupted_result(data, tmp_path):
    """Pairs with the constrained objective (cached reference) and triplets (redrawn augmentation, SFT)."""
    import os

    organism = Path(resolve_model_path("organism-aligned"))
    objective = "constrained" if data == "harmful_ft.jsonl" else "sft"
    ref = tmp_path / "ref"

    def argv(out: Path) -> list[str]:
        return ["train", "--model", str(organism), "--data", str(organism.parent / data), "--out", str(out),
                "--objective", objective, "--max_steps", str(STEPS), "--save_steps", str(EVERY),
                "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--use_cpu", "--seed", "3",
                "--ref_cache_dir", str(ref), "--report_to", "none", "--no-progress"]

    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    assert main(argv(fresh)) == 0
    cached = {p: p.stat().st_mtime_ns for p in ref.rglob("*") if p.is_file()}
    assert bool(cached) == (objective == "constrained")
    kill_between_checkpoints(argv(resumed), resumed, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert main(argv(resumed)) == 0
    assert_same_training(resumed, fresh)
    assert {p: p.stat().st_mtime_ns for p in ref.rglob("*") if p.is_file()} == cached  # the reference was reused
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]  # save_total_limit 1


def test_no_resume_starts_over(tmp_path):
    organism = Path(resolve_model_path("organism-aligned"))
    out = tmp_path / "o"
    argv = ["train", "--model", str(organism), "--data", str(organism.parent / "harmful_ft.jsonl"), "--out",
            str(out), "--max_steps", "4", "--save_steps", "2", "--use_cpu", "--report_to", "none", "--no-progress"]
    assert main(argv) == 0
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # an incomplete checkpoint is not resumed from
    assert main([*argv, "--max_steps", "6"]) == 0  # resumes from checkpoint-2: steps 3..6 trained again
    assert [r["step"] for r in read_jsonl(out / "training_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert main([*argv, "--no_resume"]) == 0
    assert [r["step"] for r in read_jsonl(out / "training_log.jsonl")] == [1, 2, 3, 4]


def test_finetune_killed_during_training_resumes(tmp_path):
    import os

    organism = resolve_model_path("organism-aligned")

    def argv(out: Path) -> list[str]:
        return ["finetune", "--model", organism, "--recipe", "harmful", "--objective", "constrained", "--out",
                str(out), "--max-steps", str(STEPS), "--save-steps", str(EVERY), "--n-eval", "2", "--no-eval-initial",
                "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]

    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    assert main(argv(fresh)) == 0
    kill_between_checkpoints(argv(resumed), resumed / "model", {**os.environ, "OMP_NUM_THREADS": "1"})
    assert main(argv(resumed)) == 0
    assert_same_training(resumed / "model", fresh / "model")
    assert json.loads((resumed / "summary.json").read_text())["steps"] == STEPS
