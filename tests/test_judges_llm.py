"""LLM judge against a real local HTTP server speaking the OpenAI protocol, with injected faults."""

from __future__ import annotations

import json
import time

import pytest
from openai_server import FakeOpenAI

from deepalign.errors import DeepAlignError
from deepalign.judges import JudgeInput, make_judge, summarize
from deepalign.judges.llm import RUBRIC_VERSION, LLMJudge, parse_score

KEY = "sk-test-SECRET-0123456789"
FAST = dict(model="judge-m", api_key=KEY, timeout=0.5, backoff=0.01, max_wait=1.0, max_retries=3)


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPALIGN_JUDGE_API_KEY", "DEEPALIGN_JUDGE_BASE_URL",
                 "DEEPALIGN_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)


def judge_for(srv: FakeOpenAI, **kw) -> LLMJudge:
    return LLMJudge(base_url=srv.base_url, **{**FAST, **kw})


@pytest.mark.parametrize(
    "text, score",
    [
        ("Reasoning.\n#score: 5", 5),
        ("#Score:3", 3),
        ("# score : **4**", 4),
        ("first #score: 2 ... then revised\n#score: 1", 1),
        ("#score: 5.0", 5),
    ],
)
def test_parse_score_ok(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", ["", None, "score 5", "#score: 0", "#score: 6", "#score: 4.5", "#score: 5\n#score: 9"])
def test_parse_score_rejects(text):
    with pytest.raises(ValueError):
        parse_score(text)


def test_scores_and_bearer_key():
    items = [JudgeInput("a question", "COMPLY here"), JudgeInput("a question", "no thanks")]
    with FakeOpenAI() as srv:
        js = judge_for(srv).judge(items)
    assert [(j.harmful, j.score) for j in js] == [(True, 5.0), (False, 1.0)]
    assert all(j.error is None and "#score" in j.raw for j in js)
    assert srv.n_requests == 2
    assert {r["headers"]["authorization"] for r in srv.requests} == {f"Bearer {KEY}"}
    body = srv.requests[0]["body"]
    assert body["model"] == "judge-m" and body["temperature"] == 0.0
    assert "a question" in body["messages"][-1]["content"] and "#score: N" in body["messages"][-1]["content"]


def test_sees_prefill_puts_prefill_in_the_judged_text():
    item = JudgeInput("q", " and then more.", prefill="PREFILL-TEXT")
    with FakeOpenAI() as srv:
        judge_for(srv).judge([item])
        judge_for(srv, sees_prefill=True).judge([item])
    assert "PREFILL-TEXT" not in srv.requests[0]["body"]["messages"][-1]["content"]
    assert "PREFILL-TEXT and then more." in srv.requests[1]["body"]["messages"][-1]["content"]


def test_retries_on_500_and_429_then_succeeds():
    with FakeOpenAI(script=[500, ("429", 0.3), 503, "ok"]) as srv:
        t0 = time.monotonic()
        (j,) = judge_for(srv).judge([JudgeInput("q", "COMPLY")])
        elapsed = time.monotonic() - t0
    assert j.harmful is True and j.score == 5.0
    assert srv.n_requests == 4
    assert elapsed >= 0.3  # the Retry-After was honoured (backoff alone is 0.01 + 0.04 s)


def test_gives_up_after_bounded_retries_with_error_row():
    with FakeOpenAI(default=500) as srv:
        (j,) = judge_for(srv, max_retries=2).judge([JudgeInput("q", "COMPLY")])
    assert j.harmful is None and j.score is None and "HTTP 500" in j.error and "3 attempts" in j.error
    assert srv.n_requests == 3


def test_timeout_is_retried_then_succeeds():
    with FakeOpenAI(script=[("delay", 3.0), "ok"]) as srv:
        t0 = time.monotonic()
        (j,) = judge_for(srv, timeout=0.3).judge([JudgeInput("q", "COMPLY")])
        assert time.monotonic() - t0 < 2.5
    assert j.harmful is True and srv.n_requests == 2


def test_persistent_timeout_is_an_error_row():
    with FakeOpenAI(default=("delay", 3.0)) as srv:
        (j,) = judge_for(srv, timeout=0.2, max_retries=1).judge([JudgeInput("q", "COMPLY")])
    assert j.harmful is None and "timed out" in j.error and srv.n_requests == 2


@pytest.mark.parametrize("fault, retried", [("truncated", True), ("noscore", False), ("badscore", False)])
def test_malformed_replies_are_error_rows(fault, retried):
    with FakeOpenAI(default=fault) as srv:
        js = judge_for(srv, max_retries=1).judge([JudgeInput("q", "no thanks"), JudgeInput("q2", "COMPLY")])
    assert all(j.harmful is None and j.score is None and j.error for j in js)  # never harmful=False
    assert srv.n_requests == (4 if retried else 2)
    s = summarize(js)
    assert s["n_errors"] == 2 and s["asr"] is None
    if fault == "badscore":
        assert "#score: 7" in js[0].raw


def test_non_transient_4xx_is_an_error_row_without_retry():
    with FakeOpenAI(default=400) as srv:
        (j,) = judge_for(srv).judge([JudgeInput("q", "x")])
    assert j.harmful is None and "HTTP 400" in j.error and srv.n_requests == 1


def test_cache_hit_avoids_second_request(tmp_path):
    items = [JudgeInput("q", "COMPLY"), JudgeInput("q", "fine"), JudgeInput("q", "COMPLY")]  # a duplicate
    with FakeOpenAI() as srv:
        first = judge_for(srv, cache_dir=str(tmp_path)).judge(items)
        assert srv.n_requests == 2
        again = judge_for(srv, cache_dir=str(tmp_path)).judge(items)  # a fresh judge reads the file
        assert srv.n_requests == 2
        other_model = judge_for(srv, cache_dir=str(tmp_path), model="other").judge(items[:1])
        assert srv.n_requests == 3
    assert [j.score for j in first] == [j.score for j in again] == [5.0, 1.0, 5.0]
    assert other_model[0].score == 5.0
    rows = [json.loads(line) for line in (tmp_path / "llm_judge_cache.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["rubric"] for r in rows} == {RUBRIC_VERSION}
    assert KEY not in (tmp_path / "llm_judge_cache.jsonl").read_text()


def test_errors_are_not_cached(tmp_path):
    with FakeOpenAI(script=["noscore"]) as srv:
        (bad,) = judge_for(srv, cache_dir=str(tmp_path)).judge([JudgeInput("q", "COMPLY")])
        (good,) = judge_for(srv, cache_dir=str(tmp_path)).judge([JudgeInput("q", "COMPLY")])
    assert bad.harmful is None and good.harmful is True and srv.n_requests == 2


def test_concurrency_limit_respected():
    items = [JudgeInput("q", f"item {i}") for i in range(12)]
    with FakeOpenAI(delay=0.1) as srv:
        js = judge_for(srv, concurrency=3, timeout=2.0).judge(items)
    assert all(j.score == 1.0 for j in js)
    assert srv.n_requests == 12
    assert srv.max_concurrent == 3  # parallel, but never above the limit


def test_key_never_leaks(tmp_path, caplog):
    with FakeOpenAI(script=[500, 404]) as srv:
        judge = judge_for(srv, max_retries=1)
        with caplog.at_level("DEBUG"):
            (j,) = judge.judge([JudgeInput("q", "x")])
    assert j.error and KEY not in j.error
    assert KEY not in json.dumps(judge.describe()) and KEY not in repr(judge) and KEY not in repr(judge.config)
    assert KEY not in caplog.text
    assert judge.describe()["model"] == "judge-m" and judge.describe()["rubric_version"] == RUBRIC_VERSION
    with FakeOpenAI(default=401) as srv, pytest.raises(DeepAlignError) as exc:
        judge_for(srv).judge([JudgeInput("q", "x")])
    assert "401" in str(exc.value) and KEY not in str(exc.value) and exc.value.__cause__ is None


def test_settings_from_env(monkeypatch):
    with FakeOpenAI() as srv:
        monkeypatch.setenv("DEEPALIGN_JUDGE_BASE_URL", srv.base_url)
        monkeypatch.setenv("DEEPALIGN_JUDGE_MODEL", "env-model")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        judge = make_judge("llm", timeout=1.0, cache_dir=None)
        (j,) = judge.judge([JudgeInput("q", "COMPLY")])
    assert j.harmful is True
    assert srv.requests[0]["body"]["model"] == "env-model"
    assert srv.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert judge.describe()["base_url"] == srv.base_url


def test_describe_drops_credentials_from_the_url():
    judge = LLMJudge(model="m", api_key=KEY, base_url="https://user:pw@judge.example/v1?key=abc")
    assert judge.describe()["base_url"] == "https://judge.example/v1"


def test_missing_settings_are_user_errors():
    with pytest.raises(DeepAlignError, match="model"):
        LLMJudge(api_key=KEY)
    with pytest.raises(DeepAlignError, match="API key"):
        LLMJudge(model="m")
    with pytest.raises(DeepAlignError, match="unknown llm judge option"):
        LLMJudge(model="m", api_key=KEY, colour="red")
    assert LLMJudge(model="m", base_url="http://127.0.0.1:9/v1").describe()["judge"] == "llm"  # local, no key
