"""bench/gpu.py on its tiny CPU path: the kl section runs and writes the JSON that the GPU run writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KL_FIGURES = (
    "build_s",
    "bare_s",
    "profile_s",
    "loop_s",
    "batch1_profile_s",
    "profile_tokens_per_s",
    "bare_tokens_per_s",
    "profile_over_bare",
    "loop_over_profile",
    "batch1_over_profile",
    "wall_s",
)


def test_gpu_bench_tiny_kl_writes_json(tmp_path, monkeypatch):
    out = tmp_path / "gpu_bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OUT", None)
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "gpu.py"),
        "--tiny",
        "--device",
        "cpu",
        "--only",
        "kl",
        "--kl-n",
        "8",
        "--kl-batch-size",
        "4",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    data = json.loads(out.read_text())
    assert set(data) == {"meta", "sections", "targets"}
    meta = data["meta"]
    assert meta["device"] == "cpu" and meta["tiny"] is True and meta["dtype"] == "float32"
    assert meta["shape"]["vocab_size"] == 32000 and meta["args"]["only"] == ["kl"]
    assert meta["wall_s"] > 0
    assert list(data["sections"]) == ["kl"]
    kl = data["sections"]["kl"]
    assert kl["status"] == "ok", kl.get("error")
    assert kl["pairs"] == 8 and kl["batch_size"] == 4 and kl["tokens_per_model"] > 8
    assert kl["params_per_model"] > 0 and kl["peak_gpu_gib"] is None  # no GPU figure on cpu
    for key in KL_FIGURES:
        assert isinstance(kl[key], float) and kl[key] > 0, key
    targets = {t["measure"]: t for t in data["targets"]}
    assert set(targets) == {"profile / bare", "loop / profile"}
    assert targets["profile / bare"]["op"] == "<=" and targets["profile / bare"]["target"] == 1.15
    assert targets["loop / profile"]["op"] == ">=" and targets["loop / profile"]["target"] == 4
    assert all(t["section"] == "kl" and t["value"] > 0 and isinstance(t["pass"], bool) for t in targets.values())

    # the printed target lines follow the convention bench/run_all.py parses
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from run_all import parse_targets

    parsed = {m: (v, op, goal) for m, v, op, goal in parse_targets(proc.stdout)}
    assert set(parsed) == {"kl profile / bare", "kl loop / profile"}
    assert parsed["kl profile / bare"][1:] == ("<=", 1.15)
    assert "== summary ==" in proc.stdout
