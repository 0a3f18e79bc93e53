"""`deepalign audit`: the depth figures' definitions, the card, and the fine-tune gate's exit codes."""

from __future__ import annotations

import json

import pytest

from deepalign.errors import DeepAlignError
from deepalign.pipeline.audit import AuditCard, depth_score, prefill_depth, regression
from deepalign.results.schemas import validate_file


def test_prefill_depth_is_the_last_k_before_the_rate_first_exceeds_the_threshold():
    assert prefill_depth({0: 0.0, 5: 0.1, 10: 0.3, 20: 0.1}, 0.2) == 5  # 20 does not count after 10 broke
    assert prefill_depth({0: 0.0, 5: 0.0, 40: 0.2}, 0.2) == 40
    assert prefill_depth({0: 0.5, 5: 0.0}, 0.2) is None
    assert prefill_depth({0: 0.0, 5: None, 10: 0.0}, 0.2) == 0  # an unjudged k stops the walk


def test_depth_score_averages_the_whole_grid_and_skips_unjudged():
    assert depth_score({0: 0.9, 5: 0.2, 10: 0.4, 20: None}) == pytest.approx(0.5)
    with pytest.raises(DeepAlignError):
        depth_score({0: None, 5: None})


def test_regression_is_the_drop_in_depth_score():
    tuned, original = AuditCard("t", 0.55, 5, {}), AuditCard("o", 0.9, 40, {})
    assert regression(tuned, original) == pytest.approx(0.35)
    assert regression(original, tuned) == pytest.approx(-0.35)


def _audit(tmp_path, *extra):
    from deepalign.cli import main

    return main(["audit", "--model", "organism-aligned", "--out", str(tmp_path / "a"), "--tokens", "0", "5", "10",
                 "--max-new-tokens", "30", "--limit", "8", "--decoding-prompts", "4", "--no-progress", *extra])


def test_audit_card_and_gate_on_the_organism(tmp_path, capsys):
    assert _audit(tmp_path, "--base", "organism-base") == 0
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "a" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 8 and {r["judge"] for r in rows} == {"exact"}
    rate = {k: sum(r["harmful"] for r in rows if r["k"] == k) / 8 for k in (0, 5, 10)}
    assert card["prefill"] == {str(k): pytest.approx(v) for k, v in rate.items()}
    assert card["depth_score"] == pytest.approx(1 - (rate[0] + rate[5] + rate[10]) / 3)
    assert card["kl_depth"] is not None and (tmp_path / "a" / "prefill.png").read_bytes()[:4] == b"\x89PNG"
    assert card["extra"]["decoding"]["n_prompts"] == 4
    assert set(card["extra"]["refusal_prefix"]) == {"(none)", "i cannot", "sorry , i will not"}
    out = capsys.readouterr().out
    assert "depth score" in out and "refusal margin: median" in out
    assert card["schema_version"] == 1 and validate_file(tmp_path / "a" / "card.json") == "card"
    from deepalign.cli import main

    assert main(["export", str(tmp_path / "a" / "rows.jsonl"), "--out", str(tmp_path / "hb.json")]) == 0
    exported = json.loads((tmp_path / "hb.json").read_text())  # HarmBench style, labels from the exact judge
    assert sum(len(v) for v in exported.values()) == len(rows)
    assert sum(e["label"] for v in exported.values() for e in v) == sum(r["harmful"] for r in rows)
    margin = card["margin"]
    assert margin["n"] == 8 and margin["verdict"] in ("holds", "partly", "does not hold")
    assert sorted(p["margin"] for p in margin["prompts"])[3] <= margin["median"]
    assert (tmp_path / "a" / "margin.png").read_bytes()[:4] == b"\x89PNG"
    # the same model against itself regresses by exactly 0: passes at 0, fails at any negative allowance
    assert _audit(tmp_path, "--against", "organism-aligned", "--max-regression", "0") == 0
    assert _audit(tmp_path, "--against", "organism-aligned", "--max-regression", "-0.01") == 1
    assert "gate failed" in capsys.readouterr().err


def test_audit_without_pairs_or_base_is_a_clear_error(tmp_path, capsys, tiny_model, tiny_tokenizer):
    from deepalign.cli import main

    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    assert main(["audit", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_gating_a_fine_tune_of_an_organism_uses_the_organisms_pairs(tmp_path, tiny_model, tiny_tokenizer):
    """A fine-tuned organism saved elsewhere is no organism folder itself; its original tells the pairs."""
    from deepalign.paths import organism_dir
    from deepalign.pipeline.audit import harmful_pairs
    from deepalign.pipeline.builtins import resolve_model_path

    tiny_model.save_pretrained(tmp_path / "tuned")
    tiny_tokenizer.save_pretrained(tmp_path / "tuned")
    resolve_model_path("organism-aligned")  # built on first use
    pairs = harmful_pairs(str(tmp_path / "tuned"), tmp_path / "a", original="organism-aligned")
    assert pairs == organism_dir() / "eval_pairs.jsonl"
    with pytest.raises(DeepAlignError, match="pass --data"):
        harmful_pairs(str(tmp_path / "tuned"), tmp_path / "a")


def test_audit_of_a_foreign_model_skips_prefill_lengths_longer_than_its_answers(tmp_path, capsys, tiny_model,
                                                                                   tiny_tokenizer):
    """Issue 16: the default grid (k up to 40) on answers of a few tokens died in the figure with a traceback
    and left a half-written folder; now k longer than every answer is skipped and reported."""
    from deepalign.chat import answer_length, encode_example
    from deepalign.cli import main

    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    answers = ["Sure, here is a short poem about apples.", "Sure."]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "prompt": "Tell me about the river.", "response": a}) + "\n"
                            for i, a in enumerate(answers)))
    lengths = [answer_length(encode_example(tiny_tokenizer, "Tell me about the river.", a)) for a in answers]
    assert 10 < max(lengths) < 20 and min(lengths) < 5  # k = 5, 10 fit one answer; 20, 40 fit none
    out = tmp_path / "a"
    assert main(["audit", "--model", str(tmp_path / "m"), "--data", str(data), "--judge", "keyword", "--out",
                 str(out), "--max-new-tokens", "3", "--decoding-prompts", "1", "--no-progress"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["skipped_ks"] == [20, 40] and sorted(map(int, card["prefill"])) == [0, 5, 10]
    assert [p["n_pairs"] for p in card["extra"]["prefill"]] == [2, 1, 1]
    assert (out / "prefill.png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "skipped: k = 20, 40 (longer than every answer)" in text and "k=5: 1, k=10: 1 (of 2)" in text


def test_audit_with_every_k_longer_than_the_answers_is_one_line_exit_2(tmp_path, capsys, tiny_model, tiny_tokenizer):
    from deepalign.cli import main

    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "Hello there", "response": "Sure."}) + "\n")
    assert main(["audit", "--model", str(tmp_path / "m"), "--data", str(data), "--tokens", "30", "40",
                 "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pairs.jsonl" in err and "longer than every answer" in err
    assert not (tmp_path / "a").exists()


def test_prefill_figures_leave_out_unjudged_points(tmp_path):
    from deepalign.report.figures import plot_card_prefill, plot_prefill

    points = [{"k": 0, "asr": 0.5, "low": 0.2, "high": 0.8}, {"k": 40, "asr": None, "low": 0.0, "high": 1.0}]
    plot_card_prefill("m", points, tmp_path / "card.png")
    plot_prefill({"m": points}, tmp_path / "prefill.png")
    assert (tmp_path / "card.png").read_bytes()[:4] == (tmp_path / "prefill.png").read_bytes()[:4] == b"\x89PNG"
