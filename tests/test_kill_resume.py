"""Crash and resume: `deepalign generate` and `deepalign judge` killed with SIGKILL at seeded random points,
then rerun, give exactly the rows of an uninterrupted run: same row set, no duplicates, nothing lost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import build_tiny_llama
from openai_server import FakeOpenAI

from deepalign.cli import main

CLI = [sys.executable, "-c", "import sys; from deepalign.cli import main; sys.exit(main())"]
N_ROWS = 24
KILLS = 3


def complete_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def kill_after(argv: list[str], rows_file: Path, at_least: int, rng: random.Random, env: dict) -> int | None:
    """Start the command, SIGKILL it once ``rows_file`` holds ``at_least`` rows (plus a random 0-20 ms),
    return its exit status (-9 when killed; None if it never got there)."""
    proc = subprocess.Popen([*CLI, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if len(complete_lines(rows_file)) >= at_least:
                time.sleep(rng.uniform(0, 0.02))
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


def crash_and_resume(argv: list[str], rows_file: Path, seed: int, env: dict) -> list[int]:
    """Kill the command at KILLS seeded random row counts, then let it finish (in this process, which
    must have ``env``'s settings); returns the exit statuses of the killed runs."""
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, N_ROWS), KILLS))
    codes = [kill_after(argv, rows_file, t, rng, env) for t in targets]
    assert main(argv) == 0
    return codes


def assert_same_rows(resumed: Path, fresh: Path) -> None:
    got, want = resumed.read_text().splitlines(), fresh.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in got]
    assert len(ids) == len(set(ids)) == N_ROWS  # no duplicates, nothing lost
    assert sorted(got) == sorted(want)  # identical rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from conftest import build_tiny_tokenizer

    folder = tmp_path_factory.mktemp("kill") / "model"
    tok = build_tiny_tokenizer()
    build_tiny_llama(len(tok), hidden=64).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_generate_killed_and_resumed_equals_uninterrupted(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i:02d}", "prompt": f"Hello there {i}"}) + "\n"
                               for i in range(N_ROWS)))
    common = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--max-new-tokens", "24",
              "--batch-size", "1", "--seed", "3", "--no-progress"]
    resumed = tmp_path / "resumed"
    codes = crash_and_resume([*common, "--out", str(resumed)], resumed / "generations.jsonl", seed=0,
                             env=child_env())
    assert codes.count(-signal.SIGKILL) >= 2, codes  # really killed mid-run
    assert main([*common, "--out", str(tmp_path / "fresh")]) == 0
    assert_same_rows(resumed / "generations.jsonl", tmp_path / "fresh" / "generations.jsonl")


def test_judge_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    rows = [{"id": f"r{i:02d}", "prompt": f"question {i}", "response": "COMPLY now" if i % 3 else "No, thanks."}
            for i in range(N_ROWS)]
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["judge", str(src), "--judge", "llm", "--judge-batch-size", "2", "--concurrency", "2",
              "--timeout", "5", "--no-progress"]
    with FakeOpenAI(delay=0.03, lifetime=300) as srv:
        settings = {"DEEPALIGN_JUDGE_BASE_URL": srv.base_url, "DEEPALIGN_JUDGE_MODEL": "judge-m",
                    "DEEPALIGN_JUDGE_API_KEY": "sk-kill-test-0000"}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        resumed = tmp_path / "resumed"
        argv = [*common, "--out", str(resumed), "--cache-dir", str(resumed / "cache")]
        codes = crash_and_resume(argv, resumed / "judged.jsonl", seed=1, env=child_env(**settings))
        assert codes.count(-signal.SIGKILL) >= 2, codes
        n_requests = srv.n_requests
        assert main([*common, "--out", str(tmp_path / "fresh")]) == 0
    assert_same_rows(resumed / "judged.jsonl", tmp_path / "fresh" / "judged.jsonl")
    summary = json.loads((resumed / "summary.json").read_text())
    assert (summary["n"], summary["n_errors"], summary["n_harmful"]) == (N_ROWS, 0, 16)
    # the judgment cache spared most repeated requests (at most a batch per kill is asked again)
    assert N_ROWS <= n_requests <= N_ROWS + KILLS * 2


def test_torn_last_line_is_repaired_on_resume(model_dir, tmp_path):
    """A kill in the middle of writing a row leaves a line without a newline; the rerun drops and redoes it."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Hello {i}"}) + "\n" for i in range(3)))
    argv = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--max-new-tokens", "4",
            "--greedy", "--no-progress", "--out", str(tmp_path / "g")]
    assert main(argv) == 0
    path = tmp_path / "g" / "generations.jsonl"
    full = path.read_text().splitlines(keepends=True)
    path.write_text(full[0] + full[1][: len(full[1]) // 2])
    assert main(argv) == 0
    assert sorted(path.read_text().splitlines(keepends=True)) == sorted(full)
