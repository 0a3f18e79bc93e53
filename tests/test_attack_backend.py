"""`--backend` on the attack commands, without vLLM installed (the real backend runs in tests/vllm_backend)."""

from __future__ import annotations

import json
import sys

import pytest

from deepalign.cli import main
from deepalign.depth import attack as attack_module
from deepalign.depth.gcg import GCGAttackConfig
from deepalign.depth.prefill import PrefillConfig
from deepalign.errors import DeepAlignError
from deepalign.judges.keyword import KeywordJudge
from deepalign.pipeline.attacks import run_prefill


def test_attack_config_checks_the_backend_and_takes_its_batch_size():
    assert (PrefillConfig().backend, PrefillConfig().batch_size) == ("hf", 64)
    assert PrefillConfig(backend="vllm").batch_size == 512
    assert PrefillConfig(backend="vllm", batch_size=3).batch_size == 3
    with pytest.raises(DeepAlignError, match="unknown generation backend 'tgi'"):
        PrefillConfig(backend="tgi")
    with pytest.raises(DeepAlignError, match="backend hf only"):
        GCGAttackConfig(backend="vllm")


def test_run_attack_hands_its_backend_to_generate(monkeypatch, tiny_tokenizer, tmp_path):
    seen = []

    def fake_generate(model, tokenizer, requests, sampling, **kwargs):
        seen.append((model, kwargs["backend"], kwargs["batch_size"], [r.input_ids for r in requests]))
        return []

    monkeypatch.setattr(attack_module, "generate", fake_generate)
    from deepalign.data.schemas import PairRecord

    pairs = [PairRecord(id="a", prompt="Hello there", response="Sure, here is a short poem about apples.")]
    config = PrefillConfig(ks=(0, 2), backend="vllm", batch_size=4)
    run_prefill("an-engine", tiny_tokenizer, pairs, config, KeywordJudge(), tmp_path, progress=False)
    assert [(m, b, n) for m, b, n, _ in seen] == [("an-engine", "vllm", 4)] and len(seen[0][3]) == 2
    assert json.loads((tmp_path / "meta.json").read_text())["config"]["backend"] == "vllm"


@pytest.mark.parametrize("command", ["prefill", "refusal-prefix", "decoding-attack"])
def test_backend_vllm_without_vllm_is_one_line_with_the_install_hint(command, monkeypatch, tmp_path, capsys,
                                                                     tiny_model, tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "prompt": "Hello there", "response": "Sure, here is a poem."}) + "\n")
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, installed or not
    capsys.readouterr()
    argv = [command, "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "o"),
            "--backend", "vllm", "--no-progress"]
    assert main(argv + (["--tokens", "1"] if command == "prefill" else [])) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make install-vllm" in err


def test_gcg_has_no_backend_option(capsys):
    with pytest.raises(SystemExit):
        main(["gcg", "--model", "m", "--data", "d", "--out", "o", "--backend", "vllm"])
    assert "unrecognized arguments: --backend vllm" in capsys.readouterr().err
