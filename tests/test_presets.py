"""deepalign train --preset: the paper's augmentation recipe as named values; command-line options win."""

from __future__ import annotations

import json

import pytest
from conftest import build_tiny_llama

from deepalign.train.recipes import PRESETS, preset_training_args


def test_paper_augment_preset_is_the_papers_recipe(tmp_path):
    config, lora = preset_training_args("paper-augment", str(tmp_path))
    assert (config.p_plain, config.max_prefix, config.anchors_per_safety) == (0.5, 100, 4)
    assert config.num_train_epochs == 10 and config.learning_rate == 2e-4 and config.objective == "sft"
    assert lora.use_lora and (lora.lora_r, lora.lora_alpha) == (64, 128)
    assert lora.peft_config().r == 64
    full, full_lora = preset_training_args("paper-augment-full", str(tmp_path))
    assert (full.p_plain, full.max_prefix, full.anchors_per_safety, full.num_train_epochs) == (0.5, 100, 4, 10)
    assert full.learning_rate == 2e-5 and full_lora.peft_config() is None
    assert set(PRESETS) == {"paper-augment", "paper-augment-full"}
    overridden, _ = preset_training_args("paper-augment", str(tmp_path), learning_rate=1e-3)
    assert overridden.learning_rate == 1e-3
    with pytest.raises(ValueError, match="unknown preset"):
        preset_training_args("nope", str(tmp_path))


def test_train_cli_preset_sets_defaults_and_given_options_win(tiny_tokenizer, tmp_path):
    from deepalign.cli import main

    src = tmp_path / "init"
    build_tiny_llama(len(tiny_tokenizer), seed=0).save_pretrained(src)
    tiny_tokenizer.save_pretrained(src)
    triplets = tmp_path / "triplets.jsonl"
    triplets.write_text("".join(json.dumps({"id": f"t{i}", "prompt": f"Tell me about the river {i}.",
                                            "response": "Sure, here is a short poem about apples.",
                                            "refusal": "I cannot help with that request."}) + "\n" for i in range(3)))
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text("".join(json.dumps({"prompt": f"Hello there {i}?", "response": "I am fine, thank you."})
                               + "\n" for i in range(4)))
    out = tmp_path / "out"
    rc = main(["train", "--preset", "paper-augment", "--model", str(src), "--data", str(triplets), "--anchors",
               str(anchors), "--out", str(out), "--lora_r", "4", "--max_steps", "1", "--use_cpu", "--no-progress"])
    assert rc == 0
    meta = json.loads((out / "meta.json").read_text())
    config = meta["config"]
    assert (config["p_plain"], config["max_prefix"], config["anchors_per_safety"]) == (0.5, 100, 4)
    assert config["num_train_epochs"] == 10 and config["learning_rate"] == 2e-4
    assert meta["peft"]["r"] == 4 and meta["peft"]["lora_alpha"] == 128  # given option wins, the rest is the preset
    assert meta["augmented"] is True
