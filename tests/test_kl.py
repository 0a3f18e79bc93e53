"""The KL depth profile against an independent per-example computation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_llama, build_tiny_tokenizer

from deepalign.chat import encode_example
from deepalign.depth.kl import KLConfig, KLProfile, build_items, kl_profile
from deepalign.errors import DeepAlignError

PAIRS = [
    SimpleNamespace(prompt="Hello there", response="Sure, here is a poem about apples."),
    SimpleNamespace(prompt="Tell me about the weather in the garden today", response="I cannot help."),
    SimpleNamespace(prompt="Fox?", response="The quick brown fox jumps over the lazy dog 0123456789."),
    SimpleNamespace(prompt="How are you?", response="I am fine, thank you very much."),
    SimpleNamespace(prompt="Pears", response="Pears and plums."),
]


def reference_profile(aligned, base, tok, pairs) -> dict[int, list[float]]:
    """KL per position, one unpadded example at a time, from full-sequence logits."""
    per_position: dict[int, list[float]] = {}
    for pair in pairs:
        enc = encode_example(tok, pair.prompt, pair.response)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            la = F.log_softmax(aligned(ids).logits[0].double(), -1)
            lb = F.log_softmax(base(ids).logits[0].double(), -1)
        p = len(enc.prompt_ids)
        for t in range(1, len(enc.response_ids) + 1):
            i = p + t - 2  # logits at i predict token i + 1 = response token t
            per_position.setdefault(t, []).append(float((la[i].exp() * (la[i] - lb[i])).sum()))
    return per_position


@pytest.fixture(scope="module")
def setup():
    tok = build_tiny_tokenizer()
    return tok, build_tiny_llama(len(tok), seed=0), build_tiny_llama(len(tok), seed=1)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batched_profile_equals_one_example_at_a_time(setup, batch_size):
    tok, aligned, base = setup
    config = KLConfig(batch_size=batch_size, base_template="same")
    prof = kl_profile(aligned, base, build_items(tok, tok, PAIRS, config), config, pad_id=tok.pad_token_id,
                      progress=False)
    ref = reference_profile(aligned, base, tok, PAIRS)
    assert len(prof.mean) == max(ref)
    for t, values in ref.items():
        assert prof.count[t - 1] == len(values)
        assert prof.mean[t - 1] == pytest.approx(sum(values) / len(values), abs=1e-5)
        if len(values) > 1:
            sem = torch.tensor(values).std().item() / len(values) ** 0.5
            assert prof.sem[t - 1] == pytest.approx(sem, abs=1e-5)


def test_identical_models_have_zero_kl(setup):
    tok, aligned, _ = setup
    config = KLConfig(batch_size=3)
    prof = kl_profile(aligned, aligned, build_items(tok, tok, PAIRS, config), config, pad_id=tok.pad_token_id,
                      progress=False)
    assert max(abs(m) for m in prof.mean) < 1e-5
    assert prof.share_first(5) is None or prof.share_first(5) >= 0


def test_base_template_changes_only_the_base_prompt(setup):
    tok, _, _ = setup
    same = build_items(tok, tok, PAIRS, KLConfig(base_template="same"))
    plain = build_items(tok, tok, PAIRS, KLConfig(base_template="plain"))
    for a, b in zip(same, plain, strict=True):
        assert a.response == b.response and a.aligned_prompt == b.aligned_prompt
        assert b.base_prompt != a.base_prompt and "User:" in tok.decode(b.base_prompt)


def test_vocabulary_mismatch_is_refused(setup, llama2_tokenizer):
    tok, _, _ = setup
    other = build_tiny_tokenizer()
    other.add_tokens(["<extra_token>"])
    with pytest.raises(DeepAlignError, match="different vocabularies"):
        build_items(tok, other, PAIRS, KLConfig())


def test_summary_statistics():
    prof = KLProfile(mean=[8.0, 1.0, 0.5, 0.25, 0.25, 0.0, 0.0], sem=[0.0] * 7, count=[3] * 7)
    assert prof.share_first(5) == pytest.approx(1.0)
    assert prof.share_first(1) == pytest.approx(0.8)
    assert prof.position_holding(0.9) == 2
    assert [r["position"] for r in prof.rows()] == list(range(1, 8))


def test_cli_kl_writes_profile_plot_and_summary(tmp_path, setup):
    from deepalign.cli import main

    tok, aligned, base = setup
    for name, model in (("aligned", aligned), ("base", base)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "response": p.response}) + "\n" for p in PAIRS))
    out = tmp_path / "out"
    rc = main(["kl", "--aligned", str(tmp_path / "aligned"), "--base", str(tmp_path / "base"), "--data", str(data),
               "--out", str(out), "--batch-size", "2", "--no-progress"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "kl_profile.jsonl").read_text().splitlines()]
    ref = reference_profile(aligned, base, tok, PAIRS)
    assert [r["count"] for r in rows] == [len(ref[t]) for t in sorted(ref)]
    assert rows[0]["mean"] == pytest.approx(sum(ref[1]) / len(ref[1]), abs=1e-5)
    assert (out / "kl_profile.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == len(PAIRS) and 0 < summary["share_first_5"] <= 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["base_template"] == "chat" and meta["trust_remote_code"] is False


def test_cli_bad_input_exits_2_without_output(tmp_path, capsys):
    from deepalign.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    rc = main(["kl", "--aligned", "organism-nope", "--base", "x", "--data", str(data), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "pairs.jsonl:1" in err and "response" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
