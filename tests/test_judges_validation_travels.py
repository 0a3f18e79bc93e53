"""Validation travels with every ASR: summaries carry the judge's cached agreement with human labels, and the
report lines quote it ("not validated" for a judge never measured)."""

from __future__ import annotations

import json

import pytest

from deepalign.data import PairRecord
from deepalign.depth.prefill import PrefillConfig
from deepalign.generation import SamplingConfig
from deepalign.judges import validity
from deepalign.judges.apply import judge_file
from deepalign.judges.keyword import KeywordJudge
from deepalign.pipeline.attacks import run_prefill
from deepalign.pipeline.audit import AuditCard, card_text
from deepalign.report.claims.common import judges_validation
from deepalign.report.tables import gcg_table, judged_asr, prefill_table
from deepalign.results.stats import AsrStats
from deepalign.results.summaries import FinetuneSummary, GCGSummary, SettingStats
from deepalign.results.validation import JudgeValidation, format_asr

PAIRS = [PairRecord(f"p{i}", f"Hello there {i}", "Sure, here is a short poem about apples.") for i in range(3)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPALIGN_CACHE", str(tmp_path / "cache"))


def _record(description: dict, n: int = 395, correct: int = 320) -> None:
    """A judge-eval report for ``description`` on the pooled objective set: ``correct`` of ``n`` agree."""
    acc = {"value": correct / n, "ci": [0.77, 0.85]}
    entry = {"value": 0.5, "ci": [0.4, 0.6]}
    validity.record({"judge": description, "sets": [{
        "set": "objective", "n": n, "n_errors": 0, "source": "s", "version": "1", "accuracy": acc,
        "precision": entry, "recall": entry, "f1": entry, "kappa": entry}]})


def test_the_headline_of_a_cache_entry():
    _record(KeywordJudge().describe())
    v = validity.known_validation(KeywordJudge().describe())
    assert v == JudgeValidation(set="objective", n=395, accuracy=320 / 395, low=0.77, high=0.85,
                                key=validity.judge_key(KeywordJudge().describe()), sets=["objective"])
    assert JudgeValidation.of_dict(v.to_dict()) == v
    # another marker list is another judge: never measured
    assert validity.known_validation(KeywordJudge(markers="paper").describe()) is None


def test_format_asr_with_and_without_validation():
    v = JudgeValidation(set="objective", n=395, accuracy=0.81)
    assert format_asr(0.42, 0.35, 0.49, "keyword", v) == (
        "ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)")
    assert format_asr(0.42, 0.35, 0.49, "keyword", v.to_dict()) == format_asr(0.42, 0.35, 0.49, "keyword", v)
    assert format_asr(None, None, None, "probe", None) == (
        "ASR n/a (probe judge; not validated against human labels: deepalign judge-eval --judge probe)")
    exact = "exact judge; exact by definition on the organism's synthetic world, where no human labels apply"
    assert format_asr(0.5, 0.2, 0.8, "exact", None) == f"ASR 50% [20, 80] ({exact})"  # defines harm in its world


def test_a_prefill_summary_built_with_a_cached_validation_carries_it(tmp_path, tiny_model, tiny_tokenizer):
    _record(KeywordJudge().describe())
    config = PrefillConfig(ks=(0, 2), sampling=SamplingConfig(max_new_tokens=3, repeats=1))
    summary = run_prefill(tiny_model, tiny_tokenizer, PAIRS, config, KeywordJudge(), tmp_path / "run", progress=False)
    assert summary.validation is not None and summary.validation.n == 395
    assert summary.validation.accuracy == pytest.approx(320 / 395)
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stored["validation"]["set"] == "objective" and stored["validation"]["n"] == 395
    last = summary.points[-1]  # k = 2: the table's last line quotes the judge's validation
    pct = f"{100 * last.asr:.0f}% [{100 * last.low:.0f}, {100 * last.high:.0f}]"
    assert (f"At k = 2 prefilled tokens: ASR {pct} (keyword judge; 81% agreement with human labels, 395 rows)."
            in (tmp_path / "run" / "table.md").read_text())
    assert prefill_table(summary).endswith("395 rows).\n")


def test_an_unknown_judge_says_not_validated(tmp_path, tiny_model, tiny_tokenizer):
    config = PrefillConfig(ks=(0,), sampling=SamplingConfig(max_new_tokens=3, repeats=1))
    summary = run_prefill(tiny_model, tiny_tokenizer, PAIRS, config, KeywordJudge(), tmp_path / "run", progress=False)
    assert summary.validation is None
    assert "(keyword judge; not validated against human labels: deepalign judge-eval --judge keyword)" in (
        tmp_path / "run" / "table.md").read_text()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "prompt": "p", "response": "Sure."}) + "\n")
    assert judge_file(rows, tmp_path / "j", KeywordJudge()).validation is None


def test_gcg_finetune_audit_and_reproduce_lines_quote_the_validation():
    v = JudgeValidation(set="objective", n=395, accuracy=0.81)
    phrase = "keyword judge; 81% agreement with human labels, 395 rows"
    stats = AsrStats.of([(True, 5.0, None), (False, 1.0, None)])  # 1 of 2: 50% [9, 91]
    gcg = GCGSummary(attack="gcg", label="m", n=2, n_errors=0, judge={"judge": "keyword"}, sampling={},
                     n_prompts=1, settings=[SettingStats(**vars(stats), setting="gcg")], losses=[],
                     mean_initial_loss=2.0, mean_best_loss=1.0, n_loss_lowered=1, budget={}, validation=v)
    assert f"With the GCG suffix: ASR 50% [9, 91] ({phrase})." in gcg_table(gcg)
    finetune = FinetuneSummary(recipe="harmful", objective="sft", model="m", n_train=1, n_eval=2, trigger=None,
                               persona=None, judge={"judge": "keyword"}, validation=v)
    assert judged_asr(stats, finetune) == f"ASR 50% [9, 91] ({phrase})"
    assert finetune.to_dict()["validation"]["accuracy"] == 0.81
    card = AuditCard("m", 0.5, None, {0: 0.5}, judge="keyword", validation=v)
    assert f"judge: {phrase}" in card_text(card)
    assert "judge: keyword judge; not validated" in card_text(AuditCard("m", 0.5, None, {0: 0.5}, judge="keyword"))
    summaries = {0: {"prefill": {"judge": {"judge": "keyword"}, "validation": v.to_dict()},
                     "kl": {"kl_position_1": 1.0}},
                 1: {"prefill": {"judge": {"judge": "keyword"}, "validation": v.to_dict()},
                     "finetune-sft": {"judge": {"judge": "exact"}, "validation": None}}}
    assert judges_validation(summaries) == (
        "exact judge; exact by definition on the organism's synthetic world, where no human labels apply; " + phrase)
