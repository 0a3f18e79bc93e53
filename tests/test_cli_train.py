"""The training CLI end to end: augment (preview), train (tiny model), finetune (organism)."""

from __future__ import annotations

import json

import pytest
from conftest import build_tiny_llama

from deepalign.cli import main
from deepalign.io import read_jsonl
from deepalign.pipeline.builtins import resolve_model_path


def test_augment_preview_of_organism_triplets(tmp_path, capsys):
    org = resolve_model_path("organism-aligned").rsplit("/", 1)[0]
    out = tmp_path / "aug"
    rc = main(["augment", "--triplets", f"{org}/train_triplets.jsonl", "--model", "organism-aligned", "--out",
               str(out), "--n-preview", "30", "--seed", "1", "--no-progress"])
    assert rc == 0
    rows = read_jsonl(out / "preview.jsonl")
    assert len(rows) == 30 and {r["k"] == 0 for r in rows} == {True, False}
    triplets = {r["id"]: r for r in read_jsonl(f"{org}/train_triplets.jsonl")}
    for r in rows:
        t = triplets[r["triplet_id"]]
        assert " ".join(t["response"].split()[: r["k"]]) == r["prefix"].strip()  # word-level: k words
        assert r["refusal"].startswith(t["refusal"])


def test_train_cli_on_tiny_model_with_lora(tiny_tokenizer, tmp_path):
    src = tmp_path / "init"
    build_tiny_llama(len(tiny_tokenizer), seed=0).save_pretrained(src)
    tiny_tokenizer.save_pretrained(src)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": "Sure, here is a short poem."}) + "\n"
                            for p in ("Hello there?", "Tell me about the river.", "What about the weather?")))
    out = tmp_path / "out"
    rc = main(["train", "--model", str(src), "--data", str(data), "--out", str(out), "--objective", "constrained",
               "--use-lora", "--lora_r", "4", "--max_steps", "2", "--per_device_train_batch_size", "3",
               "--learning_rate", "1e-3", "--use_cpu", "--ref_cache_dir", str(tmp_path / "ref"), "--no-progress"])
    assert rc == 0
    assert (out / "adapter_config.json").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["objective"] == "constrained" and meta["reference"] == "cached" and meta["peft"]["r"] == 4
    assert [r["step"] for r in read_jsonl(out / "training_log.jsonl")] == [1, 2]


def test_train_cli_rejects_unknown_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "x", "--data", "y", "--out", str(tmp_path), "--nonsense_flag", "1"])
    rc = main(["train", "--model", "organism-aligned", "--data", str(tmp_path / "missing.jsonl"), "--out",
               str(tmp_path / "o"), "--objective", "dpo"])
    assert rc == 2 and "objective" in capsys.readouterr().err


def test_finetune_cli_harmful_on_organism(tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["finetune", "--model", "organism-aligned", "--recipe", "harmful", "--objective", "constrained",
            "--out", str(out), "--max-steps", "3", "--n-eval", "4", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["n_eval"] == 4 and summary["n_train"] == 100
    assert summary["initial"]["asr"]["n"] == 4 and summary["after"]["asr"]["n"] == 4
    rows = read_jsonl(out / "eval.jsonl")
    assert len(rows) == 8 and all(r["judge"] == "exact" for r in rows)
    assert "after: ASR" in capsys.readouterr().out
    assert main(argv) == 0  # rerun: resumes (no training, no new generations)
    assert len(read_jsonl(out / "eval.jsonl")) == 8
