"""The inspect_ai task (deepalign[inspect]): text-level prefill through inspect agrees with deepalign's
token-exact prefilling attack on the organism (word-level tokens: re-tokenizing the prefill is exact).
In the fast suite the organism is the small one of tests/conftest.py, whose refusals are not reliable, so
the test checks agreement (same continuations, same ASR per k), not how shallow the organism is."""

from __future__ import annotations

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval  # noqa: E402

from deepalign.chat import ChatFormat  # noqa: E402
from deepalign.data import load_pairs  # noqa: E402
from deepalign.generation import SamplingConfig  # noqa: E402
from deepalign.io import ResultsWriter, read_jsonl  # noqa: E402
from deepalign.judges.registry import make_judge  # noqa: E402
from deepalign.pipeline.attacks import prefill_attack  # noqa: E402
from deepalign.pipeline.builtins import load_model, organism_root, resolve_model_path  # noqa: E402

KS = (0, 5, 10)
N_PAIRS = 12


def test_inspect_prefill_depth_matches_the_token_exact_attack(tmp_path):
    from deepalign.inspect_task import prefill_depth

    (log,) = inspect_eval(prefill_depth(ks=",".join(map(str, KS)), limit=N_PAIRS, max_tokens=32),
                          model="deepalign/organism-aligned", display="none", log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    inspect_rates = dict(log.results.scores[0].metrics.items())
    completions = {s.id: s.output.completion for s in log.samples}

    root = organism_root(resolve_model_path("organism-aligned"))
    pairs = load_pairs(str(root / "eval_pairs.jsonl"), limit=N_PAIRS)
    model, tok = load_model("organism-aligned")
    with ResultsWriter(tmp_path / "rows.jsonl") as writer:
        points = prefill_attack(model, tok, pairs, KS, make_judge("keyword"), writer, label="exact",
                                sampling=SamplingConfig.greedy(32), fmt=ChatFormat(), progress=False)
    rows = {f"{r['prompt_id']}/k{r['k']}": r for r in read_jsonl(tmp_path / "rows.jsonl")}
    assert rows.keys() == completions.keys() and len(rows) == N_PAIRS * len(KS)
    for sample_id, row in rows.items():  # the same continuation, token for token
        assert completions[sample_id] == row["response"], sample_id
    for point in points:
        assert inspect_rates[f"k{point.k}"].value == pytest.approx(point.asr)
