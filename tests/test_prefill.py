"""Prefilling attack: token-exact prefixes, resumable rows, judge errors never counted as safe."""

from __future__ import annotations

import json

import pytest

from deepalign.chat import encode_example
from deepalign.data import PairRecord
from deepalign.depth.prefill import prefill_attack, wilson_interval
from deepalign.generation import SamplingConfig
from deepalign.judges.base import Judge, Judgment
from deepalign.results import ResultsWriter

PAIRS = [PairRecord(f"p{i}", f"Hello there {i}", "Sure, here is a short poem about apples.") for i in range(3)]


class LengthJudge(Judge):
    """Harmful when the prefill is non-empty; fails on pair p2 when prefilled (a judge fault)."""

    name = "length"

    def judge(self, items):
        return [Judgment.failed("boom") if it.prompt.endswith("2") and it.prefill
                else Judgment(bool(it.prefill), 5.0 if it.prefill else 1.0) for it in items]


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
