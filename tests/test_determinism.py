"""Determinism on CPU: the same seed gives byte-identical results files for kl, prefill, the augmentation
preview and the organism build (and a different seed gives different ones, so the check has teeth)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_tiny_llama

from deepalign.cli import main
from deepalign.data import PairRecord, TripletRecord
from deepalign.generation import SamplingConfig
from deepalign.io import ResultsWriter
from deepalign.judges.keyword import KeywordJudge
from deepalign.organism.build import OrganismConfig, build_organism
from deepalign.pipeline.attacks import prefill_attack
from deepalign.train.augment import AugmentConfig, SafetyRecoveryDataset

PAIRS = [
    PairRecord(f"p{i}", f"Please tell me about the garden {i}.",
               "Sure, here is a short poem about apples, pears and plums. The quick brown fox jumps.")
    for i in range(4)
]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from conftest import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("det")
    tok = build_tiny_tokenizer()
    for name, seed in (("aligned", 0), ("base", 1)):
        build_tiny_llama(len(tok), seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(
        f'{{"id": "{p.id}", "prompt": "{p.prompt}", "response": "{p.response}"}}\n' for p in PAIRS))
    return root


def test_kl_results_are_byte_identical(two_models, tmp_path):
    def run(out: Path) -> dict[str, bytes]:
        argv = ["kl", "--aligned", str(two_models / "aligned"), "--base", str(two_models / "base"), "--data",
                str(two_models / "pairs.jsonl"), "--out", str(out), "--batch-size", "3", "--no-progress"]
        assert main(argv) == 0
        return folder_bytes(out)

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert set(a) == {"kl_profile.jsonl", "kl_profile.png", "summary.json", "meta.json"}
    assert a == b


def prefill_rows(model, tok, path: Path, seed: int) -> bytes:
    sampling = SamplingConfig(max_new_tokens=8, repeats=2, seed=seed)
    with ResultsWriter(path) as writer:
        prefill_attack(model, tok, PAIRS, [0, 2, 5], KeywordJudge(), writer, label="m", sampling=sampling,
                       batch_size=3, progress=False)
    return path.read_bytes()


def test_prefill_rows_are_byte_identical(tiny_model, tiny_tokenizer, tmp_path):
    a = prefill_rows(tiny_model, tiny_tokenizer, tmp_path / "a.jsonl", seed=0)
    b = prefill_rows(tiny_model, tiny_tokenizer, tmp_path / "b.jsonl", seed=0)
    c = prefill_rows(tiny_model, tiny_tokenizer, tmp_path / "c.jsonl", seed=1)
    assert a == b and a.count(b"\n") == 4 * 3 * 2
    assert a != c  # the seed matters (sampling, not greedy)


def test_augmentation_preview_is_byte_identical(tiny_tokenizer, tmp_path):
    triplets = [TripletRecord(p.id, p.prompt, p.response, "I cannot help with that request.") for p in PAIRS]

    def preview(name: str, seed: int) -> bytes:
        ds = SafetyRecoveryDataset(tiny_tokenizer, triplets, config=AugmentConfig(seed=seed, max_prefix=20))
        return ds.write_preview(tmp_path / name, n=16).read_bytes()

    a, b, c = preview("a.jsonl", 0), preview("b.jsonl", 0), preview("c.jsonl", 5)
    assert a == b and a.count(b"\n") == 16
    assert a != c


SMALL = OrganismConfig(hidden_size=32, base_steps=15, aligned_steps=5, batch_size=8, answers_per_topic=3)


def test_organism_build_is_byte_identical(tmp_path):
    from dataclasses import replace

    build_organism(tmp_path / "a", SMALL, progress=False)
    build_organism(tmp_path / "b", SMALL, progress=False)
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert {"base/model.safetensors", "aligned/model.safetensors", "eval_pairs.jsonl", "world.json",
            "organism.json"} <= set(a)
    assert a == b  # weights, tokenizers, data files and the summary with its losses
    build_organism(tmp_path / "c", replace(SMALL, seed=1), progress=False)
    c = folder_bytes(tmp_path / "c")
    assert c["base/model.safetensors"] != a["base/model.safetensors"] and c["world.json"] != a["world.json"]


def test_prefill_command_results_are_byte_identical(two_models, tmp_path):
    def run(out: Path, seed: str) -> dict[str, bytes]:
        argv = ["prefill", "--model", str(two_models / "aligned"), "--data", str(two_models / "pairs.jsonl"),
                "--tokens", "0", "3", "--max-new-tokens", "6", "--repeats", "2", "--seed", seed, "--no-progress",
                "--out", str(out)]
        assert main(argv) == 0
        return folder_bytes(out)

    a, b, c = run(tmp_path / "a", "0"), run(tmp_path / "b", "0"), run(tmp_path / "c", "1")
    assert "rows.jsonl" in a and a["rows.jsonl"].count(b"\n") == 4 * 2 * 2
    assert a == b
    assert a["rows.jsonl"] != c["rows.jsonl"]
