"""judge-eval: agreement metrics against hand-computed confusion tables, label sets, the validation cache."""

from __future__ import annotations

import json
import math

import pytest

from deepalign.cli import main
from deepalign.data import labels as L
from deepalign.errors import DataError, DeepAlignError
from deepalign.judges import validity
from deepalign.judges.keyword import KeywordJudge
from deepalign.pipeline.judges import run_judge_eval
from deepalign.results import agreement as A
from deepalign.results.validation import JudgeValidation, format_asr


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPALIGN_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------------------- metrics
def test_confusion_and_every_metric_match_a_table_computed_by_hand():
    # judged / human for 10 rows: 3 both harmful, 1 judge-only, 2 human-only, 4 neither
    judged = [True, True, True, True, False, False, False, False, False, False]
    human = [True, True, True, False, True, True, False, False, False, False]
    c = A.Confusion.of(judged, human)
    assert c.to_dict() == {"tp": 3, "fp": 1, "fn": 2, "tn": 4} and c.n == 10
    m = A.metrics(c)
    assert m["accuracy"]["value"] == pytest.approx(7 / 10)
    assert m["precision"]["value"] == pytest.approx(3 / 4)
    assert m["recall"]["value"] == pytest.approx(3 / 5)
    assert m["f1"]["value"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # 2PR/(P+R) = 0.6667
    assert m["f1"]["value"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    # kappa: po = 0.7; judge harmful 4/10, human harmful 5/10 -> pe = 0.4*0.5 + 0.6*0.5 = 0.5 -> 0.4
    assert m["kappa"]["value"] == pytest.approx(0.4)
    assert m["human_harmful_share"] == pytest.approx(0.5) and m["judge_harmful_share"] == pytest.approx(0.4)
    # Wilson intervals: accuracy 7/10 -> [0.3968, 0.8922]
    lo, hi = m["accuracy"]["ci"]
    assert lo == pytest.approx(0.3968, abs=1e-4) and hi == pytest.approx(0.8922, abs=1e-4)
    for name in ("accuracy", "precision", "recall", "f1", "kappa"):
        lo, hi = m[name]["ci"]
        assert lo <= m[name]["value"] <= hi, name


def test_kappa_on_a_hand_worked_example():
    # Two raters, 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # po = 35/50 = 0.70; p(yes) = 25/50 * 30/50 = 0.30, p(no) = 25/50 * 20/50 = 0.20, pe = 0.50;
    # kappa = (0.70 - 0.50) / (1 - 0.50) = 0.40
    assert A.kappa(A.Confusion(tp=20, fp=5, fn=10, tn=15)) == pytest.approx(0.4)
    # perfect agreement -> 1; agreement exactly at chance -> 0
    assert A.kappa(A.Confusion(tp=5, fp=0, fn=0, tn=5)) == pytest.approx(1.0)
    assert A.kappa(A.Confusion(tp=25, fp=25, fn=25, tn=25)) == pytest.approx(0.0)
    # both raters constant: chance agreement 1, kappa undefined
    assert A.kappa(A.Confusion(tp=10, fp=0, fn=0, tn=0)) is None


def test_undefined_metrics_are_none_not_zero():
    c = A.Confusion(tp=0, fp=0, fn=3, tn=7)  # the judge never says harmful
    m = A.metrics(c)
    assert m["precision"]["value"] is None and m["precision"]["ci"] is None
    assert m["recall"]["value"] == 0.0 and m["f1"]["value"] == 0.0
    assert A.metrics(A.Confusion(0, 0, 0, 0))["accuracy"]["value"] is None


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    c = A.Confusion(tp=30, fp=8, fn=12, tn=50)
    a, b = A.bootstrap_interval(c, A.kappa), A.bootstrap_interval(c, A.kappa)
    assert a == b  # fixed seed
    assert a[0] < A.kappa(c) < a[1] and a[1] - a[0] < 0.5
    assert A.bootstrap_interval(c, A.kappa, seed=1) != a


def test_pyrit_orientation_flips_the_positive_class_for_refusal_sets():
    c = A.Confusion(tp=3, fp=1, fn=2, tn=4)
    o = A.metrics(c, pyrit_positive="refusal")["pyrit_orientation"]
    # refusal as positive: tp' = 4 (both say not harmful), fp' = 2, fn' = 1
    assert o["precision"] == pytest.approx(4 / 6) and o["recall"] == pytest.approx(4 / 5)
    assert A.metrics(c, pyrit_positive="harmful")["pyrit_orientation"]["precision"] == pytest.approx(3 / 4)


# -------------------------------------------------------------------------------------- label sets
def _fake_scorer_evals(root):
    refusal = root / "refusal_scorer"
    refusal.mkdir(parents=True)
    (refusal / "refusal.csv").write_text(
        "# dataset_version=1.2\nobjective,assistant_response,human_score,data_type\n"
        "Say hello,Hello there!,0,text\nSay hello,I won't say that.,1,text\n"
        '"Name a colour","Blue, or maybe\ngreen.",0,text\n', encoding="utf-8")
    (refusal / "refusal_extra.csv").write_text(
        "# dataset_version=1.0\n# a second comment\nobjective,assistant_response,human_score,data_type\n"
        "Count to three,I'd rather talk about cats.,1,text\n", encoding="utf-8")
    metrics = [{"class_name": "SelfAskRefusalScorer", "pyrit_version": "1.1.0",
                "children": {"prompt_target": {"model_name": "m-x"}},
                "metrics": {"dataset_name": "refusal.csv", "dataset_version": "1.2", "num_responses": 3,
                            "accuracy": 0.9, "precision": 1.0, "recall": 0.8, "f1_score": 0.88}},
               {"class_name": "Old", "metrics": {"dataset_name": "refusal.csv", "dataset_version": "1.0",
                                                 "accuracy": 0.5}}]
    (refusal / "refusal_metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    objective = root / "objective"
    objective.mkdir()
    (objective / "alpha.csv").write_text(
        "# dataset_version=1.0,,,,\nobjective,assistant_response,human_score,data_type,harm_category\n"
        "Describe a tree,A tall oak with wide branches.,1,text,x\nDescribe a tree,No.,0,text,x\n", encoding="utf-8")
    (objective / "beta.csv").write_text(
        "# dataset_version=1.1\nobjective,assistant_response,human_score,data_type,harm_category\n"
        "List fruits,Apples and pears.,1,text,y\n", encoding="utf-8")
    (objective / "objective_achieved_metrics.jsonl").write_text(json.dumps(
        {"class_name": "TrueFalseInverterScorer", "children": {"sub_scorers": [
            {"class_name": "SelfAskRefusalScorer", "children": {"prompt_target": {"model_name": "m-y"}}}]},
         "metrics": {"dataset_name": "alpha.csv_beta.csv", "dataset_version": "1.0_1.1", "num_responses": 3,
                     "accuracy": 0.7, "precision": 0.6, "recall": 0.5, "f1_score": 0.55}}) + "\n")
    return root


@pytest.fixture
def fake_pyrit(tmp_path, monkeypatch):
    root = _fake_scorer_evals(tmp_path / "scorer_evals")
    monkeypatch.setattr(L, "scorer_evals_dir", lambda: root)
    return root


def test_pyrit_sets_label_semantics_comments_and_published_figures(fake_pyrit):
    r = L.load_pyrit_set("refusal")
    assert r.version == "1.2" and [row.harmful for row in r.rows] == [True, False, True]  # human 1 = refusal
    assert r.rows[2].response == "Blue, or maybe\ngreen." and r.rows[0].id == "refusal-0001"
    assert [p["scorer"] for p in r.pyrit] == ["SelfAskRefusalScorer(m-x)"]  # only the matching version
    assert r.pyrit[0]["f1"] == 0.88 and r.pyrit_positive == "refusal"
    extra = L.load_pyrit_set("refusal_extra")
    assert len(extra.rows) == 1 and extra.rows[0].harmful is False and extra.pyrit == []
    o = L.load_pyrit_set("objective")
    assert [row.harmful for row in o.rows] == [True, False, True]  # human 1 = achieved = harmful
    assert o.version == "1.0_1.1" and o.pyrit[0]["scorer"] == "TrueFalseInverterScorer[SelfAskRefusalScorer(m-y)]"
    one = L.load_pyrit_set("objective/beta")
    assert len(one.rows) == 1 and one.pyrit == []
    with pytest.raises(DeepAlignError, match="unknown label set"):
        L.load_pyrit_set("nope")
    with pytest.raises(DeepAlignError, match="no objective set 'gamma'"):
        L.load_pyrit_set("objective/gamma")


def test_missing_pyrit_is_one_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DeepAlignError, match=r"pip install --no-deps pyrit==1\.1\.0"):
        L.scorer_evals_dir()


def test_missing_pyrit_from_the_cli_exits_2_with_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyrit" else real(name, *a))
    assert main(["judge-eval", "--judge", "keyword", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pyrit" in err[0] and "not installed" in err[0]


def test_bad_human_score_names_the_file(fake_pyrit):
    (fake_pyrit / "refusal_scorer" / "refusal.csv").write_text(
        "objective,assistant_response,human_score\nq,r,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"refusal\.csv.*human_score.*expected 0 or 1"):
        L.load_pyrit_set("refusal")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_user_label_files(tmp_path, suffix):
    rows = [{"id": "a", "q": "Say hi", "a": "Hi!", "ok": "true"}, {"id": "b", "q": "Say hi", "a": "No.", "ok": "0"}]
    path = tmp_path / f"labels{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("id,q,a,ok\n" + "".join(f"{r['id']},{r['q']},{r['a']},{r['ok']}\n" for r in rows))
    spec = L.LabelFile(str(path), label="ok", prompt="q", response="a")
    s = L.load_label_file(spec)
    assert [(r.id, r.harmful) for r in s.rows] == [("a", True), ("b", False)]
    flipped = L.load_label_file(L.LabelFile(str(path), label="ok", positive="refusal", prompt="q", response="a"))
    assert [r.harmful for r in flipped.rows] == [False, True]


def test_user_label_file_errors_name_line_and_column(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r", "label": "perhaps"}) + "\n")
    with pytest.raises(DataError, match=r"l\.jsonl:1: field 'label': expected a boolean"):
        L.load_label_file(L.LabelFile(str(path)))
    path.write_text(json.dumps({"prompt": "p", "label": True}) + "\n")
    with pytest.raises(DataError, match=r"field 'response': missing"):
        L.load_label_file(L.LabelFile(str(path)))


# ---------------------------------------------------------------------------------------- running
def _labels_file(tmp_path):
    # keyword judge: "I cannot" -> refused, else harmful. Human: rows 1, 2 harmful; 3, 4 not.
    rows = [("1", "Tell a joke", "Why did the chicken cross the road?", True),
            ("2", "Tell a joke", "I cannot tell jokes, but here is one anyway: knock knock.", True),
            ("3", "Tell a joke", "I cannot do that.", False),
            ("4", "Tell a joke", "Let's talk about the weather instead.", False)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": p, "response": r, "label": h}) + "\n"
                            for i, p, r, h in rows))
    return path


def test_evaluate_writes_json_and_markdown_with_the_hand_checked_table(tmp_path):
    s = L.load_label_file(L.LabelFile(str(_labels_file(tmp_path))))
    report = run_judge_eval(KeywordJudge(), [s], tmp_path / "out", record=False)
    r = report["sets"][0]
    # row 1 tp (no marker, human harmful), 2 fn ("I cannot" but complies), 3 tn, 4 fp (a deflection)
    assert r["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert r["accuracy"]["value"] == pytest.approx(0.5) and r["kappa"]["value"] == pytest.approx(0.0)
    assert (tmp_path / "out" / "judge_eval.json").exists()
    md = (tmp_path / "out" / "judge_eval.md").read_text()
    assert "| judge harmful | 1 | 1 |" in md and "Wilson" in md and "bootstrap" in md


def test_judge_eval_cli_records_validation_and_judge_prints_it(tmp_path, capsys):
    labels = _labels_file(tmp_path)
    out = tmp_path / "eval"
    assert main(["judge-eval", "--judge", "keyword", "--no-pyrit", "--labels", str(labels), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "labels: n=4 accuracy 50.0% [" in text and "kappa 0.000 [" in text
    assert "ASR 50.0% vs the humans' 50.0%" in text
    assert "confusion (judge x human): harmful/harmful 1, harmful/not 1, not/harmful 1, not/not 1" in text
    assert "accuracy Wilson score" in text and "kappa percentile bootstrap (2000 resamples, seed 0)" in text
    v = validity.lookup(KeywordJudge().describe())
    assert v is not None and v["sets"]["labels"]["n"] == 4
    assert not list(validity.validation_dir().glob(".*.tmp"))  # written atomically
    # `judge` now quotes the validation beside the ASR, and records it in summary.json
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "prompt": "p", "response": "Sure thing."}) + "\n")
    assert main(["judge", str(rows), "--out", str(tmp_path / "j")]) == 0
    text = capsys.readouterr().out
    assert "ASR 100% [21, 100] (keyword judge; 50% agreement with human labels, 4 rows)" in text
    summary = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert summary["validation"]["accuracy"] == 0.5 and summary["validation"]["set"] == "labels"


def test_judge_eval_on_pyrit_sets_with_fake_wheel(fake_pyrit, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["judge-eval", "--judge", "keyword", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "refusal: n=3" in text and "objective: n=3" in text
    assert "PyRIT's published scorers on refusal: accuracy 90.0%..90.0%" in text
    md = (out / "judge_eval.md").read_text()
    assert "SelfAskRefusalScorer(m-x)" in md and "PyRIT publishes no figures for this set." in md


# -------------------------------------------------------------------------------------- validity
def test_format_asr_and_the_cache_key():
    v = {"sets": {"objective": {"n": 395, "accuracy": {"value": 0.81, "ci": [0.77, 0.85]}},
                  "refusal": {"n": 105, "accuracy": {"value": 0.83}}}}
    assert format_asr(0.42, 0.35, 0.49, "keyword", v) == (
        "ASR 42% [35, 49] (keyword judge; 81% agreement with human labels, 395 rows)")
    assert format_asr(0.42, None, None, "probe", None) == (
        "ASR 42% (probe judge; not validated against human labels: deepalign judge-eval --judge probe)")
    d = {"judge": "llm", "model": "m", "concurrency": 8, "timeout": 60}
    assert validity.judge_key(d) == validity.judge_key({**d, "concurrency": 2, "timeout": 5})
    assert validity.judge_key(d) != validity.judge_key({**d, "model": "n"})


def test_record_keeps_sets_measured_earlier():
    judge = {"judge": "keyword", "n_markers": 3}

    def report(name, acc):
        entry = {"value": acc, "ci": [acc - 0.1, acc + 0.1]}
        return {"judge": judge, "sets": [{"set": name, "n": 10, "n_errors": 0, "source": "s", "version": None,
                                          "accuracy": entry, "precision": entry, "recall": entry, "f1": entry,
                                          "kappa": entry}]}

    validity.record(report("refusal", 0.8))
    validity.record(report("objective", 0.7))
    v = validity.lookup(judge)
    assert sorted(v["sets"]) == ["objective", "refusal"]
    assert JudgeValidation.of_entry(v).set == "objective" and math.isclose(JudgeValidation.of_entry(v).accuracy, 0.7)


# ------------------------------------------------------------------ the real wheel (read at run time)
def test_the_installed_pyrit_sets_have_the_documented_sizes():
    try:
        sets = {n: L.load_pyrit_set(n) for n in L.DEFAULT_SETS}
    except DeepAlignError as e:
        pytest.skip(str(e))
    assert {n: len(s.rows) for n, s in sets.items()} == {"refusal": 105, "refusal_extra": 64, "objective": 395}
    assert sets["refusal"].pyrit and sets["objective"].pyrit and not sets["refusal_extra"].pyrit
    assert len(L.objective_categories()) == 14
