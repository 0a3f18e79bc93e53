"""The attack commands end to end on the model organism: files written, and a run resumed after a partial
one gives the same rows as a fresh run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepalign.cli import main


@pytest.fixture(scope="module")
def pairs() -> str:
    from deepalign.pipeline.builtins import resolve_model_path

    return str(Path(resolve_model_path("organism-aligned")).parent / "eval_pairs.jsonl")


COMMANDS = {
    "prefill": ["prefill", "--model", "organism-aligned", "--tokens", "0", "3", "--repeats", "2"],
    "refusal-prefix": ["refusal-prefix", "--model", "organism-base", "--prefix", "i cannot", "--repeats", "2"],
    "decoding-attack": ["decoding-attack", "--model", "organism-aligned", "--temperatures", "0.5", "--top-ps", "0.6",
                        "--top-ks", "5"],
    "gcg": ["gcg", "--model", "organism-aligned", "--answer-tokens", "4", "--steps", "2", "--search-width", "8",
            "--topk", "16"],
}
FIGURES = {"prefill": "prefill.png", "refusal-prefix": "refusal_prefix.png", "decoding-attack": "decoding.png",
           "gcg": "gcg_loss.png"}


def _rows(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_attack_command_writes_results_and_resumes(command, pairs, tmp_path, capsys):
    argv = [*COMMANDS[command], "--data", pairs, "--judge", "exact", "--max-new-tokens", "12", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--limit", "1"]) == 0  # a partial run ...
    assert main([*argv, "--out", str(tmp_path / "a"), "--limit", "2"]) == 0  # ... resumed
    assert main([*argv, "--out", str(tmp_path / "b"), "--limit", "2"]) == 0  # a fresh run
    out = capsys.readouterr().out
    assert "| " in out and "judge: exact" in out
    a, b = tmp_path / "a", tmp_path / "b"
    assert _rows(a / "rows.jsonl") == _rows(b / "rows.jsonl")
    summary = json.loads((b / "summary.json").read_text())
    assert summary["attack"] == command and summary["n"] == len(_rows(b / "rows.jsonl")) and summary["n_errors"] == 0
    assert (b / FIGURES[command]).stat().st_size > 1000 and (b / "table.md").read_text().startswith("| ")
    assert json.loads((b / "meta.json").read_text())["judge"]["judge"] == "exact"
    if command == "gcg":
        assert _rows(a / "suffixes.jsonl") == _rows(b / "suffixes.jsonl")


def test_prefill_k_beyond_an_answer_is_one_line_exit_2(pairs, tmp_path, capsys):
    argv = ["prefill", "--model", "organism-aligned", "--data", pairs, "--tokens", "0", "500", "--judge", "exact",
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{pairs}:1: field 'response'" in err and "500" in err
    assert not (tmp_path / "o").exists()
