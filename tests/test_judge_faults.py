"""Judge faults against a fault-injecting OpenAI-compatible server on 127.0.0.1: bounded retries, failed rows
counted and reported, exit status 3 only above --max-failure-share, failed rows retried on rerun, and
the API key never written anywhere."""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import pytest
from openai_server import FakeOpenAI

from deepalign.cli import main
from deepalign.errors import DeepAlignError, JudgeFailureError
from deepalign.judges import JudgeInput, check_failure_share
from deepalign.judges.llm import LLMJudge

SENTINEL = "sk-SENTINEL-5f0c2a7e9b1d"
URL_SECRET = "pw-URLSECRET-93c1"
FAST = dict(model="judge-m", api_key=SENTINEL, timeout=0.4, backoff=0.01, max_wait=0.5, max_retries=2)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPALIGN_JUDGE_API_KEY", "DEEPALIGN_JUDGE_BASE_URL",
                 "DEEPALIGN_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)


# fault -> transient (retried, so a later "ok" succeeds) or not (an error row after one request)
FAULTS = [
    (500, True),
    (503, True),
    (("429", 0.05), True),
    (("delay", 2.0), True),  # longer than the 0.4 s client timeout
    ("truncated", True),
    ("garbage", True),
    ("nochoices", True),
    ("disconnect", True),
    ("noscore", False),
    ("badscore", False),
    (400, False),
    (404, False),
]


@pytest.mark.parametrize("fault, transient", FAULTS, ids=lambda f: str(f))
def test_fault_then_ok(fault, transient):
    with FakeOpenAI(script=[fault], default="ok") as srv:
        (j,) = LLMJudge(base_url=srv.base_url, **FAST).judge([JudgeInput("q", "COMPLY")])
    if transient:
        assert (j.harmful, j.score, j.error, srv.n_requests) == (True, 5.0, None, 2)
    else:
        assert j.harmful is None and j.score is None and j.error and srv.n_requests == 1


@pytest.mark.parametrize("fault", [f for f, transient in FAULTS if transient], ids=lambda f: str(f))
def test_persistent_fault_gives_up_after_bounded_retries(fault):
    with FakeOpenAI(default=fault) as srv:
        (j,) = LLMJudge(base_url=srv.base_url, **FAST).judge([JudgeInput("q", "COMPLY")])
    assert j.harmful is None and "gave up after 3 attempts" in j.error
    assert srv.n_requests == 3  # 1 + max_retries, never more


def test_seeded_random_faults_only_cost_retries():
    rng = random.Random(0)
    faults = [500, ("429", 0.01), "truncated", "garbage", "disconnect"]
    items = [JudgeInput(f"q{i}", "COMPLY" if i % 2 else "no") for i in range(16)]
    with FakeOpenAI(default=lambda n: rng.choice(faults) if rng.random() < 0.3 else "ok") as srv:
        js = LLMJudge(base_url=srv.base_url, **{**FAST, "max_retries": 8}).judge(items)
    assert [j.harmful for j in js] == [bool(i % 2) for i in range(16)]
    assert srv.n_requests > 16


@pytest.mark.parametrize(
    "n, n_errors, max_share, fails",
    [(100, 0, 0.0, False), (100, 1, 0.0, True), (100, 5, 0.05, False), (100, 6, 0.05, True), (20, 20, 1.0, False),
     (0, 0, 0.0, False), (3, 1, 0.5, False), (3, 2, 0.5, True)],
)
def test_check_failure_share(n, n_errors, max_share, fails):
    summary = {"n": n, "n_errors": n_errors}
    if fails:
        with pytest.raises(JudgeFailureError, match=f"{n_errors} of {n} judgments failed") as exc:
            check_failure_share(summary, max_share)
        assert exc.value.exit_code == 3 and isinstance(exc.value, DeepAlignError)
    else:
        check_failure_share(summary, max_share)


def test_check_failure_share_rejects_a_bad_share():
    with pytest.raises(DeepAlignError, match=r"\[0, 1\]"):
        check_failure_share({"n": 1, "n_errors": 0}, -0.1)


def unscorable_reply(body: dict) -> str:
    text = body["messages"][-1]["content"]
    if "UNSCORABLE" in text:
        return "I would rather not give a number."
    return "Complies.\n#score: 5" if "COMPLY" in text else "Refuses.\n#score: 1"


def write_rows(path: Path, n: int, n_unscorable: int) -> None:
    rows = [{"id": f"r{i}", "prompt": f"question {i}",
             "response": "UNSCORABLE" if i < n_unscorable else ("COMPLY" if i % 2 else "no")} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "n_unscorable, extra, code",
    [(0, [], 0), (1, [], 0), (2, [], 3), (2, ["--max-failure-share", "0.1"], 0), (1, ["--max-failure-share", "0"], 3)],
)
def test_cli_exit_status_follows_the_failure_share(n_unscorable, extra, code, tmp_path, capsys):
    src, out = tmp_path / "responses.jsonl", tmp_path / "judged"
    write_rows(src, 20, n_unscorable)
    with FakeOpenAI(reply=unscorable_reply) as srv:
        argv = ["judge", str(src), "--out", str(out), "--judge", "llm", "--judge-model", "judge-m",
                "--judge-base-url", srv.base_url, "--max-retries", "1", *extra]
        assert main(argv) == code
    captured = capsys.readouterr()
    assert f"{n_unscorable} failed" in captured.out  # failures are counted and reported
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["n_errors"]) == (20, n_unscorable)
    rows = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and sum(r["judge_error"] is not None for r in rows) == n_unscorable
    if code == 3:
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("deepalign: error: ") and f"{n_unscorable} of 20 judgments failed" in last
    else:
        assert "error" not in captured.err


def test_rerun_retries_only_the_failed_rows(tmp_path, capsys):
    src, out = tmp_path / "responses.jsonl", tmp_path / "judged"
    write_rows(src, 10, 0)
    argv = ["judge", str(src), "--out", str(out), "--judge", "llm", "--judge-model", "judge-m", "--max-retries", "0"]
    with FakeOpenAI(default=lambda n: 500 if n % 3 == 0 else "ok") as srv:  # requests 0, 3, 6, 9 fail
        assert main([*argv, "--judge-base-url", srv.base_url, "--concurrency", "1"]) == 3
    first = json.loads((out / "summary.json").read_text())
    assert first["n_errors"] == 4
    with FakeOpenAI() as srv:
        assert main([*argv, "--judge-base-url", srv.base_url]) == 0
        assert srv.n_requests == 4  # only the failed rows were asked again
    rows = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(10))
    assert all(r["judge_error"] is None for r in rows)
    assert json.loads((out / "summary.json").read_text())["n_errors"] == 0


def test_api_key_never_in_logs_results_or_metadata(tmp_path, capsys, caplog, monkeypatch):
    """A sentinel key from the environment and a credential in the URL appear nowhere we write (the
    command line recorded in meta.json included)."""
    src, out = tmp_path / "responses.jsonl", tmp_path / "judged"
    write_rows(src, 6, 1)
    monkeypatch.setenv("DEEPALIGN_JUDGE_API_KEY", SENTINEL)
    with FakeOpenAI(script=[500, ("429", 0.01), 404], reply=unscorable_reply) as srv:
        url = srv.base_url.replace("http://", f"http://user:{URL_SECRET}@")
        argv = ["judge", str(src), "--out", str(out), "--judge", "llm", "--judge-model", "judge-m",
                "--judge-base-url", url, "--cache-dir", str(out / "cache"), "--max-retries", "2",
                "--concurrency", "1"]
        monkeypatch.setattr(sys, "argv", ["deepalign", *argv])
        with caplog.at_level(logging.DEBUG):
            assert main(argv) == 3  # row r0 met 500, 429, then 404: 1 of 6 failed
        assert {r["headers"]["authorization"] for r in srv.requests} == {f"Bearer {SENTINEL}"}
    captured = capsys.readouterr()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"judged.jsonl", "summary.json", "meta.json", "llm_judge_cache.jsonl"}
    for text in [captured.out, captured.err, caplog.text, *(p.read_text() for p in written)]:
        assert SENTINEL not in text and URL_SECRET not in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["judge"]["judge"] == "llm" and meta["trust_remote_code"] is False
    assert "http://***@127.0.0.1" in " ".join(meta["argv"])


def test_rejected_key_is_one_line_without_the_key(tmp_path, capsys, monkeypatch):
    src = tmp_path / "responses.jsonl"
    write_rows(src, 2, 0)
    monkeypatch.setenv("DEEPALIGN_JUDGE_API_KEY", SENTINEL)
    with FakeOpenAI(default=401) as srv:
        code = main(["judge", str(src), "--out", str(tmp_path / "o"), "--judge", "llm", "--judge-model", "m",
                     "--judge-base-url", srv.base_url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "401" in err[0] and SENTINEL not in err[0]
