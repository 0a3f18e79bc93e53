"""`deepalign reproduce`: every claim reaches the report, and a run killed with SIGKILL at random points
resumes to exactly the rows and numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import image_sources

CLAIMS = 9


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "deepalign.cli", "reproduce", "--quick", "--seeds", "0", "--out", str(out),
            "--no-progress"]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DEEPALIGN_CACHE": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _rows(run: Path) -> dict[str, list[str]]:
    """Every JSONL results file of a run, as sorted lines (rows carry no timings)."""
    return {str(p.relative_to(run)): sorted(p.read_text().splitlines()) for p in sorted(run.rglob("*.jsonl"))
            if p.name not in ("training_log.jsonl",)}  # training logs carry wall-clock speeds


def _untimed(obj):
    """``obj`` without its wall-clock timings (``seconds``, ``train_seconds``) at any depth."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not k.endswith("seconds")}
    return [_untimed(v) for v in obj] if isinstance(obj, list) else obj


def _numbers(run: Path) -> dict:
    """Every stage summary without timings, with the run folder's path cut out."""
    return {str(p.relative_to(run)): json.dumps(_untimed(json.loads(p.read_text().replace(str(run), "RUN"))),
                                                sort_keys=True)
            for p in sorted(run.glob("seed*/*/summary.json"))}


@pytest.mark.slow
def test_killed_reproduce_resumes_to_the_uninterrupted_result(tmp_path):
    env = _env(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cmd(whole), env=env, check=True, capture_output=True, timeout=900)

    report = (whole / "report.md").read_text()
    assert report.count("\n## ") == CLAIMS and "not measured" not in report.split("\n## ")[0]
    page = (whole / "report.html").read_text()
    sources = image_sources(page)
    assert len(sources) >= CLAIMS and all(s.startswith("data:image/png;base64,") for s in sources)

    rng = random.Random(0)
    for _ in range(3):  # SIGKILL at random points, then resume
        proc = subprocess.Popen(_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3, 25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(_cmd(killed), env=env, check=True, capture_output=True, timeout=900)

    assert _rows(killed) == _rows(whole)
    for lines in _rows(killed).values():
        ids = [json.loads(line).get("id") for line in lines]
        assert len(ids) == len(set(ids))  # no duplicates
    assert _numbers(killed) == _numbers(whole)
    def untimed(text: str) -> str:  # without the compute-time line and the stage-times table
        return re.sub(r"Compute time of the stages: [0-9.]+ min", "", text.split("### Stage times")[0])

    assert json.loads((killed / "claims.json").read_text()) == json.loads((whole / "claims.json").read_text())
    assert untimed((killed / "report.md").read_text()) == untimed(report)
