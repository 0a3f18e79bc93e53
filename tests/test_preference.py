"""Alignment stages on a tiny random Llama: DPO through TRL (LoRA, merged) and refusal SFT; preference rows."""

from __future__ import annotations

import pytest
import torch

from deepalign.data.schemas import PairRecord
from deepalign.data.texts import REFUSALS, SORRY_REFUSALS
from deepalign.train.preference import (
    PreferenceConfig,
    RefusalSFTConfig,
    dpo_align,
    preference_rows,
    read_align_result,
    refusal_sft,
    truncate_tokens,
)

HARMFUL = [PairRecord(f"h{i}", f"Please tell me about the river {i}.",
                      "Sure, here is a short poem about apples, pears and plums.") for i in range(4)]
BENIGN = [PairRecord(f"b{i}", f"Hello there, how are you today {i}?",
                     "I am fine, thank you very much. The weather in the garden is nice.") for i in range(2)]


def _logp(model, tok, prompt, response):
    from deepalign.chat import encode_example

    enc = encode_example(tok, prompt, response)
    ids = torch.tensor([enc.prompt_ids + enc.response_ids])
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    n = len(enc.prompt_ids)
    return float(logp[n - 1:].gather(-1, targets[n - 1:, None]).sum())


def test_preference_rows_truncate_and_prefer_refusals(tiny_tokenizer):
    rows = preference_rows(tiny_tokenizer, HARMFUL, BENIGN, PreferenceConfig(rejected_tokens=4, benign_tokens=5))
    assert len(rows) == 6
    for r in rows[:4]:
        assert r["chosen"][0]["content"] in REFUSALS
        rejected = r["rejected"][0]["content"]
        assert len(tiny_tokenizer(rejected, add_special_tokens=False)["input_ids"]) == 4
        assert HARMFUL[0].response.startswith(rejected)
    for r in rows[4:]:
        assert r["rejected"][0]["content"] in REFUSALS
        assert BENIGN[0].response.startswith(r["chosen"][0]["content"])
    whole = preference_rows(tiny_tokenizer, HARMFUL, BENIGN, PreferenceConfig(rejected_tokens=None, benign=False))
    assert len(whole) == 4 and whole[0]["rejected"][0]["content"] == HARMFUL[0].response
    assert truncate_tokens(tiny_tokenizer, "Hello", 50) == "Hello"
    assert PreferenceConfig(rejected_tokens=0).rejected_tokens is None  # 0 = no truncation (the CLI's way)
    with pytest.raises(ValueError, match="rejected_tokens"):
        PreferenceConfig(rejected_tokens=-1)
    sorry = preference_rows(tiny_tokenizer, HARMFUL, BENIGN, PreferenceConfig(refusals="sorry"))
    assert all(r["chosen"][0]["content"] in SORRY_REFUSALS for r in sorry[:4])
    assert all(r["rejected"][0]["content"] in SORRY_REFUSALS for r in sorry[4:])


@pytest.fixture
def start_model(tmp_path, tiny_model, tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path / "start")
    tiny_tokenizer.save_pretrained(tmp_path / "start")
    return str(tmp_path / "start")


def test_dpo_prefers_the_refusal_over_the_harmful_start(tmp_path, start_model, tiny_model, tiny_tokenizer):
    from deepalign.models import load_model

    config = PreferenceConfig(learning_rate=5e-3, epochs=4, batch_size=2, warmup_steps=0, lora_r=8, lora_alpha=16,
                              rejected_tokens=4, benign_tokens=8)
    result = dpo_align(start_model, HARMFUL, BENIGN, tmp_path / "dpo", config)
    assert result.method == "dpo" and result.steps == 12 and result.n_harmful == 4 and result.n_benign == 2
    assert read_align_result(tmp_path / "dpo") == result
    merged, tok = load_model(str(tmp_path / "dpo"))
    assert not (tmp_path / "dpo" / "adapter_config.json").exists()  # a plain model folder
    rows = preference_rows(tok, HARMFUL, BENIGN, config)

    def gap(model):
        return sum(_logp(model, tok, r["prompt"][0]["content"], r["chosen"][0]["content"])
                   - _logp(model, tok, r["prompt"][0]["content"], r["rejected"][0]["content"]) for r in rows[:4])

    assert gap(merged) > gap(tiny_model) + 1.0


def test_refusal_sft_raises_the_refusals_likelihood(tmp_path, start_model, tiny_model, tiny_tokenizer):
    from deepalign.models import load_model
    from deepalign.train.augment import fallback_refusal

    config = RefusalSFTConfig(learning_rate=5e-3, epochs=3, batch_size=2, warmup_steps=0, lora_r=8, lora_alpha=16)
    result = refusal_sft(start_model, HARMFUL, BENIGN, tmp_path / "sft", config)
    assert result.method == "refusal-sft" and result.steps == 9 and result.last_loss < result.first_loss
    merged, tok = load_model(str(tmp_path / "sft"))
    for p in HARMFUL:
        refusal = fallback_refusal(p.id, 0)
        assert _logp(merged, tok, p.prompt, refusal) > _logp(tiny_model, tok, p.prompt, refusal)


def test_align_cli_sft_then_dpo(tmp_path, start_model, capsys):
    import json

    from deepalign.cli import main

    for name, records in (("harmful", HARMFUL), ("benign", BENIGN)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r.__dict__) + "\n" for r in records))
    common = ["--harmful", str(tmp_path / "harmful.jsonl"), "--benign", str(tmp_path / "benign.jsonl"),
              "--epochs", "1", "--batch-size", "3", "--lora-r", "4", "--no-progress"]
    assert main(["align", "sft", "--model", start_model, "--out", str(tmp_path / "sft"), *common]) == 0
    assert main(["align", "dpo", "--model", str(tmp_path / "sft"), "--out", str(tmp_path / "dpo"),
                 "--rejected-tokens", "0", "--beta", "0.2", *common]) == 0
    result = read_align_result(tmp_path / "dpo")
    assert result.method == "dpo" and result.steps == 2 and result.n_benign == 2
    config = json.loads((tmp_path / "dpo" / "align.json").read_text())["config"]
    assert config["beta"] == 0.2 and config["rejected_tokens"] is None and config["lora_r"] == 4
    assert "aligned model written to" in capsys.readouterr().out
    assert main(["align", "dpo", "--model", start_model, "--harmful", str(tmp_path / "nope.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2
