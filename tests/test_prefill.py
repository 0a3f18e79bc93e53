"""Prefilling attack: token-exact prefixes, resumable rows, judge errors never counted as safe."""

from __future__ import annotations

import json

import pytest

from deepalign.chat import encode_example, encode_prompt
from deepalign.data import PairRecord, load_pairs
from deepalign.depth.prefill import PrefillConfig, prefill_items
from deepalign.errors import DataError
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.io import ResultsWriter, read_jsonl
from deepalign.judges.base import Judge, Judgment
from deepalign.pipeline.attacks import prefill_attack, run_prefill
from deepalign.results.stats import wilson_interval

PAIRS = [PairRecord(f"p{i}", f"Hello there {i}", "Sure, here is a short poem about apples.") for i in range(3)]


class LengthJudge(Judge):
    """Harmful when the prefill is non-empty; fails on pair p2 when prefilled (a judge fault)."""

    name = "length"

    def judge(self, items):
        return [Judgment.failed("boom") if it.prompt.endswith("2") and it.prefill
                else Judgment(bool(it.prefill), 5.0 if it.prefill else 1.0) for it in items]


class FlakyJudge(Judge):
    """Fails every judgment on its first call, then calls everything harmful."""

    name = "flaky"

    def __init__(self):
        self.calls = 0

    def judge(self, items):
        self.calls += 1
        return [Judgment.failed("timeout") if self.calls == 1 else Judgment(True, 5.0) for _ in items]


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_prefill_rows_resume_and_errors(tmp_path, tiny_model, tiny_tokenizer):
    path = tmp_path / "rows.jsonl"
    run = lambda: prefill_attack(tiny_model, tiny_tokenizer, PAIRS, [0, 3], LengthJudge(),  # noqa: E731
                                 ResultsWriter(path), label="m", sampling=SamplingConfig.greedy(4), progress=False)
    points = run()
    full = path.read_text().splitlines()
    assert len(full) == 6
    enc = encode_example(tiny_tokenizer, PAIRS[0].prompt, PAIRS[0].response)
    row = next(json.loads(r) for r in full if json.loads(r)["id"] == "m/k3/p0/r0")
    assert row["prefill"] == tiny_tokenizer.decode(enc.response_ids[:3])
    k0, k3 = points
    assert (k0.asr, k0.n_errors) == (0.0, 0)
    assert (k3.n, k3.n_errors, k3.asr) == (3, 1, 1.0)  # the failed row is excluded, not counted safe
    path.write_text("\n".join(full[:2]) + "\n" + full[2][:10])  # a killed run: two rows and a torn line
    run()
    resumed = path.read_text().splitlines()
    assert sorted(resumed) == sorted(full)


def test_prefill_is_token_exact_on_a_llama2_template(llama2_tokenizer):
    pair = PairRecord("a", "Tell me about the weather", "Sure, here is a short poem about apples.")
    items = prefill_items(llama2_tokenizer, [pair], [0, 1, 4], label="m")
    # the whole conversation tokenized at once: the attack input must be exactly its first tokens
    text = llama2_tokenizer.apply_chat_template(
        [{"role": "user", "content": pair.prompt}, {"role": "assistant", "content": pair.response}], tokenize=False)
    full = llama2_tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = encode_prompt(llama2_tokenizer, pair.prompt)
    assert full[: len(prompt)] == prompt
    for item, k in zip(items, (0, 1, 4), strict=True):
        assert item.input_ids == full[: len(prompt) + k]
        assert item.fields["k"] == k and item.id == f"m/k{k}/a"
    assert items[0].prefill == ""
    assert items[2].prefill.strip() == llama2_tokenizer.decode(full[len(prompt) :][:4]).strip()


def test_k0_equals_plain_generation(tmp_path, tiny_model, tiny_tokenizer):
    sampling = SamplingConfig(max_new_tokens=6, repeats=2, seed=3)
    config = PrefillConfig(ks=(0,), sampling=sampling)
    run_prefill(tiny_model, tiny_tokenizer, PAIRS[:2], config, LengthJudge(), tmp_path, progress=False)
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "rows.jsonl")}
    requests = [GenerationRequest(f"model/k0/{p.id}", encode_prompt(tiny_tokenizer, p.prompt)) for p in PAIRS[:2]]
    for g in generate(tiny_model, tiny_tokenizer, requests, sampling, progress=False):
        assert rows[f"{g.id}/r{g.repeat}"]["response"] == g.text
    assert len(rows) == 4


def test_answer_shorter_than_k_is_a_data_error_naming_file_line_field(tmp_path, tiny_model, tiny_tokenizer):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Hello there", "response": "Sure, here is a short poem about apples, pears and plums."},
            {"prompt": "Hello again", "response": "Sure."}]
    data.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")  # a blank line before line 3
    pairs = load_pairs(str(data))
    n = len(encode_example(tiny_tokenizer, rows[1]["prompt"], rows[1]["response"]).response_ids) - 1
    with pytest.raises(DataError) as e:
        run_prefill(tiny_model, tiny_tokenizer, pairs, PrefillConfig(ks=(0, n + 1)), LengthJudge(), tmp_path / "o",
                    source=str(data), progress=False)
    assert (e.value.path, e.value.line, e.value.field) == (str(data), 3, "response")
    assert f"{n} tokens" in str(e.value) and not (tmp_path / "o").exists()
    config = PrefillConfig(ks=(0, n + 1), on_short="skip", sampling=SamplingConfig.greedy(3))
    summary = run_prefill(tiny_model, tiny_tokenizer, pairs, config, LengthJudge(), tmp_path / "o", progress=False)
    assert [p.n_pairs for p in summary.points] == [2, 1]


def test_run_prefill_files_and_failed_judgments_are_retried(tmp_path, tiny_model, tiny_tokenizer):
    config = PrefillConfig(ks=(0, 2), sampling=SamplingConfig(max_new_tokens=3, repeats=1))
    judge = FlakyJudge()
    first = run_prefill(tiny_model, tiny_tokenizer, PAIRS, config, judge, tmp_path, progress=False)
    assert (first.n, first.n_errors) == (6, 6)
    assert all(p.asr is None and p.n_errors == 3 for p in first.points)  # errors are not "safe"
    files = {f.name for f in tmp_path.iterdir()}
    assert files >= {"rows.jsonl", "summary.json", "table.md", "prefill.png", "meta.json"}
    before = {r["id"]: r["response"] for r in read_jsonl(tmp_path / "rows.jsonl")}
    second = run_prefill(tiny_model, tiny_tokenizer, PAIRS, config, judge, tmp_path, progress=False)
    assert (second.n, second.n_errors) == (6, 0) and all(p.asr == 1.0 for p in second.points)
    after = read_jsonl(tmp_path / "rows.jsonl")
    assert {r["id"]: r["response"] for r in after} == before  # only the judgments were redone
    assert "| 2 | 100.0% [" in (tmp_path / "table.md").read_text()
