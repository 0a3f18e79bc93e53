"""Malformed input to every command: one line on stderr naming file, line and field; exit status 2;
no traceback; no partial output (the --out folder does not exist or holds no file).

The cases are tables: a new command adds one row per malformed input. ``{name}`` in an argument is
replaced by the path of fixture ``name`` (a model folder or a data file written below), ``{out}`` by a
fresh output folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_llama, build_tiny_tokenizer

from deepalign.cli import main

GOOD_PAIR = {"id": "p1", "prompt": "Hello there, how are you?", "response": "I am fine, thank you very much."}
TEN_MB = 10 * 1024 * 1024

# name -> file contents (bytes); each case below refers to them as {name}
FILES: dict[str, bytes] = {
    "prompts.jsonl": b'{"id": "a", "prompt": "Hello there"}\n{"id": "b", "prompt": "Tell me about the garden"}\n',
    "pairs.jsonl": (json.dumps(GOOD_PAIR) + "\n").encode(),
    "bad_json.jsonl": b'{"prompt": "hi", "response": "ok"}\n{"prompt": \n',
    "not_object.jsonl": b'{"prompt": "hi"}\n["a", "b"]\n',
    "missing_prompt.jsonl": b'{"prompt": "a"}\n{"text": "hi"}\n',
    "int_prompt.jsonl": b'{"prompt": 42}\n',
    "blank_prompt.jsonl": b'{"prompt": "   "}\n',
    "empty.jsonl": b"",
    "blank_lines.jsonl": b"\n  \n\n",
    "latin1.jsonl": b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n',
    "latin1_pairs.jsonl": b'{"prompt": "ok", "response": "fine"}\n{"prompt": "caf\xe9", "response": "x"}\n',
    "huge_line.jsonl": b'{"prompt": "' + b"a" * TEN_MB + b'"}\n',
    "dup_id.jsonl": b'{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n',
    "list_id.jsonl": b'{"id": [1], "prompt": "a"}\n',
    "no_column.csv": b"text\nhello\n",
    "ragged.csv": b"prompt,category\nhi,a,b\n",
    "object.json": b'{"prompt": "x"}',
    "trailing.json": b'[{"prompt": "x"}] junk',
    "prompts.txt": b"hello\n",
    "no_response.jsonl": b'{"id": "a", "prompt": "q"}\n',
    "bad_role.jsonl": b'{"messages": [{"role": "robot", "content": "hi"}]}\n',
    "judge_bad_json.jsonl": b"not json\n",
    "judge_no_response.jsonl": b'{"id": "a", "prompt": "q", "response": "r"}\n{"id": "b", "prompt": "q"}\n',
    "judge_int_response.jsonl": b'{"id": "a", "prompt": "q", "response": 5}\n',
    "judge_no_id.jsonl": b'{"prompt": "q", "response": "r"}\n',
    "judge_bool_id.jsonl": b'{"id": true, "prompt": "q", "response": "r"}\n',
    "judge_dup_id.jsonl": b'{"id": 1, "prompt": "q", "response": "r"}\n{"id": "1", "prompt": "q", "response": "r"}\n',
    "judge_latin1.jsonl": b'{"id": "a", "prompt": "q", "response": "\xff"}\n',
    "judge_list_prefill.jsonl": b'{"id": "a", "prompt": "q", "response": "r", "prefill": ["x"]}\n',
    "judge_huge.jsonl": b'{"id": "a", "prompt": "q", "response": "' + b"a" * TEN_MB + b'"}\n',
    "latin1_triplets.jsonl": b'{"prompt": "ok", "response": "a", "refusal": "b"}\n{"prompt": "\xff"}\n',
    "triplets.jsonl": b'{"prompt": "Hello there", "response": "Sure, here is", "refusal": "I cannot help."}\n',
    "results.jsonl": b'{"id": "a", "prompt": "q", "response": "I cannot help with that."}\n',
    "a_file": b"not a folder\n",
    "chat_bad_turn.jsonl": (b'{"messages": [{"role": "user", "content": "Hello"}, '
                            b'{"role": "assistant", "content": "Hi"}]}\n'
                            b'{"messages": [{"role": "user", "content": "Hello"}, '
                            b'{"role": "assistant", "content": 7}]}\n'),
    "chat_system.jsonl": (b'{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": '
                          b'"Hello"}, {"role": "assistant", "content": "Hi"}]}\n'),
    "pc_bad_completion.jsonl": (b'{"prompt": [{"role": "user", "content": "Hello"}], "completion": '
                                b'[{"role": "assistant", "content": "Hi"}]}\n'
                                b'{"prompt": [{"role": "user", "content": "Hello"}], "completion": '
                                b'[{"role": "user", "content": "Hi"}]}\n'),
}

# (case id, argv, substrings the error line must contain)
DATA_CASES = [
    ("bad-json", ["data", "{bad_json.jsonl}"], ["bad_json.jsonl:2:", "invalid JSON"]),
    ("not-an-object", ["data", "{not_object.jsonl}"], ["not_object.jsonl:2:", "expected a JSON object"]),
    ("missing-field", ["data", "{missing_prompt.jsonl}"], ["missing_prompt.jsonl:2:", "field 'prompt'", "missing"]),
    ("wrong-type", ["data", "{int_prompt.jsonl}"], ["int_prompt.jsonl:1:", "field 'prompt'", "expected a string"]),
    ("blank-field", ["data", "{blank_prompt.jsonl}"], ["blank_prompt.jsonl:1:", "field 'prompt'", "empty"]),
    ("empty-file", ["data", "{empty.jsonl}"], ["empty.jsonl:", "no records"]),
    ("blank-lines-only", ["data", "{blank_lines.jsonl}"], ["blank_lines.jsonl:", "no records"]),
    ("non-utf8", ["data", "{latin1.jsonl}"], ["latin1.jsonl:2:", "not valid UTF-8"]),
    ("10mb-line", ["data", "{huge_line.jsonl}"], ["huge_line.jsonl:1:", "longer than"]),
    ("duplicate-id", ["data", "{dup_id.jsonl}"], ["dup_id.jsonl:2:", "field 'id'", "duplicate"]),
    ("list-id", ["data", "{list_id.jsonl}"], ["list_id.jsonl:1:", "field 'id'"]),
    ("csv-missing-column", ["data", "{no_column.csv}"], ["no_column.csv:1:", "field 'prompt'", "missing column"]),
    ("csv-ragged-row", ["data", "{ragged.csv}"], ["ragged.csv:2:", "expected 2 columns"]),
    ("json-not-a-list", ["data", "{object.json}"], ["object.json:", "expected a JSON list"]),
    ("json-trailing-junk", ["data", "{trailing.json}"], ["trailing.json:1:", "invalid JSON"]),
    ("unsupported-type", ["data", "{prompts.txt}"], ["prompts.txt", "unsupported file type"]),
    ("missing-file", ["data", "{out}/nothing.jsonl"], ["nothing.jsonl", "no such file"]),
    ("hub-dataset-offline", ["data", "hf:someone/some-set"], ["hf:someone/some-set", "offline"]),
    ("not-a-dataset-folder", ["data", "{model}"], ["save_to_disk"]),
    ("pairs-missing-response", ["data", "{no_response.jsonl}", "--kind", "pairs"],
     ["no_response.jsonl:1:", "field 'response'", "missing"]),
    ("chats-bad-role", ["data", "{bad_role.jsonl}", "--kind", "chats"],
     ["bad_role.jsonl:1:", "messages[0].role", "robot"]),
    ("field-syntax", ["data", "{prompts.jsonl}", "--field", "prompt"], ["--field expects NAME=COLUMN"]),
    ("field-unknown", ["data", "{prompts.jsonl}", "--field", "colour=x"], ["unknown field 'colour'"]),
    ("limit-zero", ["data", "{prompts.jsonl}", "--limit", "0"], ["limit must be a positive"]),
]

GEN = ["generate", "--max-new-tokens", "4", "--no-progress", "--out", "{out}"]
GENERATE_CASES = [
    ("unknown-builtin", [*GEN, "--model", "organism-basse", "--prompts", "{prompts.jsonl}"],
     ["unknown model 'organism-basse'", "organism-base"]),
    ("hub-id-offline", [*GEN, "--model", "meta-llama/Llama-2-7b-chat-hf", "--prompts", "{prompts.jsonl}"],
     ["meta-llama/Llama-2-7b-chat-hf", "HF_HUB_OFFLINE"]),
    ("no-chat-template", [*GEN, "--model", "{nochat}", "--prompts", "{prompts.jsonl}"],
     ["no chat template", "--template plain"]),
    ("bad-prompts-file", [*GEN, "--model", "{model}", "--prompts", "{bad_json.jsonl}"],
     ["bad_json.jsonl:2:", "invalid JSON"]),
    ("10mb-prompt-line", [*GEN, "--model", "{model}", "--prompts", "{huge_line.jsonl}"],
     ["huge_line.jsonl:1:", "longer than"]),
    ("folder-without-config", [*GEN, "--model", "{empty_dir}", "--prompts", "{prompts.jsonl}"],
     ["not a model folder"]),
    ("lora-for-another-base", [*GEN, "--model", "{adapter}", "--prompts", "{prompts.jsonl}"],
     ["adapter", "does not fit"]),
    ("corrupt-weights", [*GEN, "--model", "{corrupt}", "--prompts", "{prompts.jsonl}"], ["corrupt", "cannot load"]),
    ("pickle-only-weights", [*GEN, "--model", "{pickled}", "--prompts", "{prompts.jsonl}"],
     ["pickled", "cannot load"]),
    ("zero-temperature", [*GEN, "--model", "{model}", "--prompts", "{prompts.jsonl}", "--temperature", "0"],
     ["temperature must be > 0"]),
    ("top-p-above-1", [*GEN, "--model", "{model}", "--prompts", "{prompts.jsonl}", "--top-p", "2"], ["top_p"]),
    ("zero-new-tokens", [*GEN, "--model", "{model}", "--prompts", "{prompts.jsonl}", "--max-new-tokens", "0"],
     ["max_new_tokens"]),
    ("zero-batch", [*GEN, "--model", "{model}", "--prompts", "{prompts.jsonl}", "--batch-size", "0"],
     ["--batch-size must be >= 1"]),
    ("unknown-dtype", [*GEN, "--model", "{model}", "--prompts", "{prompts.jsonl}", "--dtype", "float8"],
     ["unknown dtype 'float8'"]),
    ("out-is-a-file", ["generate", "--model", "{model}", "--prompts", "{prompts.jsonl}", "--out", "{a_file}"],
     ["a_file", "existing file"]),
]

KL = ["kl", "--no-progress", "--out", "{out}"]
KL_CASES = [
    ("vocabulary-mismatch", [*KL, "--aligned", "{model}", "--base", "{othervocab}", "--data", "{pairs.jsonl}"],
     ["different vocabularies"]),
    ("pairs-missing-response", [*KL, "--aligned", "{model}", "--base", "{model}", "--data", "{no_response.jsonl}"],
     ["no_response.jsonl:1:", "field 'response'", "missing"]),
    ("non-utf8-pairs", [*KL, "--aligned", "{model}", "--base", "{model}", "--data", "{latin1_pairs.jsonl}"],
     ["latin1_pairs.jsonl:2:", "UTF-8"]),
    ("aligned-no-chat-template", [*KL, "--aligned", "{nochat}", "--base", "{model}", "--data", "{pairs.jsonl}"],
     ["no chat template"]),
    ("base-no-chat-template", [*KL, "--aligned", "{model}", "--base", "{nochat}", "--data", "{pairs.jsonl}"],
     ["no chat template"]),
    ("zero-positions", [*KL, "--aligned", "{model}", "--base", "{model}", "--data", "{pairs.jsonl}",
                        "--max-positions", "0"], ["max_positions must be positive"]),
    ("unknown-base", [*KL, "--aligned", "{model}", "--base", "organism-bas", "--data", "{pairs.jsonl}"],
     ["unknown model 'organism-bas'"]),
    ("hub-base-offline", [*KL, "--aligned", "{model}", "--base", "meta-llama/Llama-2-7b-hf", "--data",
                          "{pairs.jsonl}"], ["HF_HUB_OFFLINE"]),
]

JUDGE = ["judge", "--out", "{out}"]
JUDGE_CASES = [
    ("bad-json", [*JUDGE, "{judge_bad_json.jsonl}"], ["judge_bad_json.jsonl:1:", "not a JSON object"]),
    ("missing-response", [*JUDGE, "{judge_no_response.jsonl}"],
     ["judge_no_response.jsonl:2:", "field 'response'", "missing"]),
    ("wrong-type", [*JUDGE, "{judge_int_response.jsonl}"], ["judge_int_response.jsonl:1:", "field 'response'"]),
    ("missing-id", [*JUDGE, "{judge_no_id.jsonl}"], ["judge_no_id.jsonl:1:", "field 'id'", "missing"]),
    ("boolean-id", [*JUDGE, "{judge_bool_id.jsonl}"], ["judge_bool_id.jsonl:1:", "field 'id'"]),
    ("duplicate-id", [*JUDGE, "{judge_dup_id.jsonl}"], ["judge_dup_id.jsonl:2:", "field 'id'", "duplicate"]),
    ("non-utf8", [*JUDGE, "{judge_latin1.jsonl}"], ["judge_latin1.jsonl:1:", "not valid UTF-8"]),
    ("list-prefill", [*JUDGE, "{judge_list_prefill.jsonl}"], ["judge_list_prefill.jsonl:1:", "field 'prefill'"]),
    ("10mb-line", [*JUDGE, "{judge_huge.jsonl}"], ["judge_huge.jsonl:1:", "longer than"]),
    ("empty-file", [*JUDGE, "{empty.jsonl}"], ["empty.jsonl", "no rows"]),
    ("missing-file", [*JUDGE, "{out}.jsonl"], ["cannot read", "no such file"]),
    ("unknown-judge", [*JUDGE, "{results.jsonl}", "--judge", "gpt"], ["unknown judge 'gpt'"]),
    ("classifier-without-path", [*JUDGE, "{results.jsonl}", "--judge", "classifier"], ["classifier:PATH"]),
    ("llm-without-model", [*JUDGE, "{results.jsonl}", "--judge", "llm"], ["llm judge needs a model"]),
    ("failure-share-above-1", [*JUDGE, "{results.jsonl}", "--max-failure-share", "1.5"],
     ["--max-failure-share must be in [0, 1]"]),
    ("zero-judge-batch", [*JUDGE, "{results.jsonl}", "--judge-batch-size", "0"], ["batch size must be >= 1"]),
    ("out-is-a-file", ["judge", "{results.jsonl}", "--out", "{a_file}"], ["a_file", "existing file"]),
]

def attack(command: str, model: str, data: str, *extra: str) -> list[str]:
    return [command, "--no-progress", "--out", "{out}", "--model", model, "--data", data, *extra]


ATTACK_CASES = [  # prefill, refusal-prefix, decoding-attack, gcg
    ("prefill-k-beyond-answer", attack("prefill", "{model}", "{pairs.jsonl}", "--tokens", "1000", "--on-short",
                                       "error"), ["1000"]),
    ("prefill-missing-response", attack("prefill", "{model}", "{no_response.jsonl}"),
     ["no_response.jsonl:1:", "field 'response'", "missing"]),
    ("prefill-no-chat-template", attack("prefill", "{nochat}", "{pairs.jsonl}"), ["no chat template"]),
    ("prefill-unknown-model", attack("prefill", "organism-basse", "{pairs.jsonl}"), ["organism-basse"]),
    ("refusal-prefix-bad-json", attack("refusal-prefix", "{model}", "{bad_json.jsonl}"),
     ["bad_json.jsonl:2:", "invalid JSON"]),
    ("refusal-prefix-hub-offline", attack("refusal-prefix", "meta-llama/Llama-2-7b-hf", "{prompts.jsonl}"),
     ["HF_HUB_OFFLINE"]),
    ("decoding-attack-non-utf8", attack("decoding-attack", "{model}", "{latin1.jsonl}"), ["latin1.jsonl:2:", "UTF-8"]),
    ("decoding-attack-empty-file", attack("decoding-attack", "{model}", "{empty.jsonl}"),
     ["empty.jsonl", "no records"]),
    ("gcg-10mb-line", attack("gcg", "{model}", "{huge_line.jsonl}"), ["huge_line.jsonl:1:", "longer than"]),
    ("gcg-unknown-model", attack("gcg", "organism-basse", "{prompts.jsonl}"), ["organism-basse"]),
    ("gcg-no-chat-template", attack("gcg", "{nochat}", "{prompts.jsonl}"), ["no chat template"]),
]

AUG = ["augment", "--no-progress", "--out", "{out}"]
TRAIN_CASES = [  # augment, train, finetune
    ("augment-both-sources", [*AUG, "--triplets", "{triplets.jsonl}", "--prompts", "{prompts.jsonl}"],
     ["exactly one of"]),
    ("augment-prompts-without-base", [*AUG, "--prompts", "{prompts.jsonl}", "--model", "{model}"], ["--base-model"]),
    ("augment-missing-refusal", [*AUG, "--triplets", "{pairs.jsonl}", "--model", "{model}"],
     ["pairs.jsonl:1:", "field 'refusal'", "missing"]),
    ("augment-non-utf8", [*AUG, "--triplets", "{latin1_triplets.jsonl}", "--model", "{model}"],
     ["latin1_triplets.jsonl:2:", "UTF-8"]),
    ("augment-no-chat-template", [*AUG, "--triplets", "{triplets.jsonl}", "--model", "{nochat}"],
     ["no chat template"]),
    ("augment-unknown-model", [*AUG, "--triplets", "{triplets.jsonl}", "--model", "organism-basse"],
     ["unknown model 'organism-basse'"]),
    ("train-bad-json", ["train", "--model", "{model}", "--data", "{judge_bad_json.jsonl}", "--kind", "triplets",
                        "--out", "{out}"], ["judge_bad_json.jsonl:1:", "invalid JSON"]),
    ("train-hub-offline", ["train", "--model", "meta-llama/Llama-2-7b-hf", "--data", "{triplets.jsonl}", "--out",
                           "{out}"], ["HF_HUB_OFFLINE"]),
    ("train-unknown-model", ["train", "--model", "organism-basse", "--data", "{triplets.jsonl}", "--out", "{out}"],
     ["unknown model 'organism-basse'"]),
    ("finetune-unknown-model", ["finetune", "--model", "organism-basse", "--recipe", "harmful", "--data",
                                "{pairs.jsonl}", "--out", "{out}"], ["unknown model 'organism-basse'"]),
    ("train-openai-chat-bad-content", ["train", "--model", "{model}", "--data", "{chat_bad_turn.jsonl}", "--out",
                                       "{out}"], ["chat_bad_turn.jsonl:2:", "messages[1].content"]),
    ("train-trl-completion-not-assistant", ["train", "--model", "{model}", "--data", "{pc_bad_completion.jsonl}",
                                            "--out", "{out}"], ["pc_bad_completion.jsonl:2:", "field 'completion'",
                                                                "assistant"]),
    ("finetune-harmful-system-chat", ["finetune", "--model", "{model}", "--recipe", "harmful", "--data",
                                      "{chat_system.jsonl}", "--out", "{out}"],
     ["chat_system.jsonl:1:", "field 'messages'", "not one (prompt, response) pair"]),
    ("finetune-no-training-examples", ["finetune", "--model", "{model}", "--recipe", "harmful", "--data",
                                       "{pairs.jsonl}", "--n-train", "0", "--out", "{out}"], ["n_train must be >= 1"]),
    ("finetune-bad-data", ["finetune", "--model", "{model}", "--recipe", "harmful", "--data", "{no_response.jsonl}",
                           "--out", "{out}"], ["no_response.jsonl:1:", "field 'response'"]),
]

AUDIT = ["audit", "--no-progress", "--out", "{out}"]
AUDIT_CASES = [
    ("unknown-model", [*AUDIT, "--model", "organism-basse", "--data", "{pairs.jsonl}"], ["organism-basse"]),
    ("hub-id-offline", [*AUDIT, "--model", "meta-llama/Llama-2-7b-chat-hf", "--data", "{pairs.jsonl}"],
     ["HF_HUB_OFFLINE"]),
    ("bad-pairs", [*AUDIT, "--model", "{model}", "--data", "{no_response.jsonl}"],
     ["no_response.jsonl:1:", "field 'response'"]),
    ("no-chat-template", [*AUDIT, "--model", "{nochat}", "--data", "{pairs.jsonl}"], ["no chat template"]),
    ("chat-with-system-prompt", [*AUDIT, "--model", "{model}", "--data", "{chat_system.jsonl}"],
     ["chat_system.jsonl:1:", "field 'messages'"]),
    ("vocabulary-mismatch", [*AUDIT, "--model", "{model}", "--base", "{othervocab}", "--data", "{pairs.jsonl}"],
     ["vocabular"]),
    ("zero-new-tokens", [*AUDIT, "--model", "{model}", "--data", "{pairs.jsonl}", "--max-new-tokens", "0"],
     ["max_new_tokens"]),
    ("negative-decoding-prompts", [*AUDIT, "--model", "{model}", "--data", "{pairs.jsonl}", "--decoding-prompts",
                                   "-1"], ["decoding_prompts must be >= 0"]),
    ("every-k-beyond-the-answers", [*AUDIT, "--model", "{model}", "--data", "{pairs.jsonl}", "--tokens", "500"],
     ["pairs.jsonl", "longer than every answer"]),
]

RUN_CASES = [
    ("organism-out-is-a-file", ["organism", "build", "--no-progress", "--out", "{a_file}/x"], ["a_file"]),
    ("reproduce-out-is-a-file", ["reproduce", "--no-progress", "--out", "{a_file}/x"], ["a_file"]),
]


def table(command: str, cases: list[tuple]) -> list:
    """pytest params from (name, argv, expected[, mark]) rows."""
    return [pytest.param(*c[:3], id=f"{command}-{c[0]}", marks=c[3:]) for c in cases]


ALL_CASES = [
    *table("data", DATA_CASES),
    *table("generate", GENERATE_CASES),
    *table("kl", KL_CASES),
    *table("attack", ATTACK_CASES),
    *table("judge", JUDGE_CASES),
    *table("train", TRAIN_CASES),
    *table("audit", AUDIT_CASES),
    *table("run", RUN_CASES),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """Model folders and data files, built once: name -> path."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("bad_input")
    paths: dict[str, Path] = {}
    for name, data in FILES.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    tok = build_tiny_tokenizer()

    def save(name: str, model, tokenizer) -> None:
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name

    save("model", build_tiny_llama(len(tok)), tok)
    nochat = build_tiny_tokenizer()
    nochat.chat_template = None
    save("nochat", build_tiny_llama(len(nochat)), nochat)
    other = build_tiny_tokenizer()
    other.add_tokens(["zzqx"])
    save("othervocab", build_tiny_llama(len(other)), other)
    save("big", build_tiny_llama(len(tok), hidden=64), tok)
    adapter = get_peft_model(build_tiny_llama(len(tok)), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(root / "adapter")
    cfg_path = root / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": str(root / "big")}))
    paths["adapter"] = root / "adapter"
    (root / "corrupt").mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / "corrupt" / f).write_bytes((root / "model" / f).read_bytes())
    (root / "corrupt" / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    paths["corrupt"] = root / "corrupt"
    (root / "pickled").mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / "pickled" / f).write_bytes((root / "model" / f).read_bytes())
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"a pickle would be here")
    paths["pickled"] = root / "pickled"
    (root / "empty_dir").mkdir()
    paths["empty_dir"] = root / "empty_dir"
    return paths


def fill(argv: list[str], paths: dict[str, Path], out: Path) -> list[str]:
    names = {k: str(v) for k, v in paths.items()} | {"out": str(out)}
    return [re.sub(r"\{([^{}]+)\}", lambda m: names[m.group(1)], a) for a in argv]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("DEEPALIGN_JUDGE_MODEL", "DEEPALIGN_JUDGE_BASE_URL", "DEEPALIGN_JUDGE_API_KEY", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name, argv, expected", ALL_CASES)
def test_bad_input_is_one_line_exit_2_no_output(name, argv, expected, fixtures, tmp_path, capsys, clean_env):
    out = tmp_path / "out"
    code = main(fill(argv, fixtures, out))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("deepalign: error: "), captured.err
    assert "Traceback" not in captured.err and len(lines[0]) < 600
    for text in expected:
        assert text in lines[0], lines[0]
    assert files_under(out) == []
    assert files_under(fixtures["a_file"].parent / "out") == []


def test_at_least_30_malformed_inputs():
    assert len(ALL_CASES) >= 30


# Usage errors are argparse's: usage line + one error line, exit status 2, no traceback.
USAGE_CASES = [
    ["kl", "--aligned", "a", "--base", "b", "--data", "d", "--out", "o", "--base-template", "odd"],
    ["generate", "--model", "m", "--prompts", "p", "--out", "o", "--repeats", "two"],
    ["judge", "x.jsonl"],
    ["organism", "build", "--out", "o", "--seed", "zero"],
    ["no-such-command"],
]


@pytest.mark.parametrize("argv", USAGE_CASES, ids=lambda a: a[0] + "-" + a[-1])
def test_usage_errors_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Traceback" not in err and "error:" in err.strip().splitlines()[-1]
    assert files_under(tmp_path) == []


def test_max_positions_beyond_the_answers_is_not_an_error(fixtures, tmp_path, capsys):
    """k (here: profile positions) larger than every answer: the profile is as long as the longest answer."""
    from deepalign.models import load_tokenizer

    out = tmp_path / "kl"
    argv = ["kl", "--aligned", str(fixtures["model"]), "--base", str(fixtures["model"]), "--data",
            str(fixtures["pairs.jsonl"]), "--out", str(out), "--max-positions", "100000", "--no-progress"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "kl_profile.jsonl").read_text().splitlines()]
    tok = load_tokenizer(str(fixtures["model"]))
    from deepalign.chat import encode_example

    n_response = len(encode_example(tok, GOOD_PAIR["prompt"], GOOD_PAIR["response"]).response_ids)
    assert len(rows) == n_response and all(r["count"] == 1 and abs(r["mean"]) < 1e-5 for r in rows)


def test_base_without_chat_template_works_with_a_plain_template(fixtures, tmp_path, capsys):
    out = tmp_path / "kl"
    argv = ["kl", "--aligned", str(fixtures["model"]), "--base", str(fixtures["nochat"]), "--data",
            str(fixtures["pairs.jsonl"]), "--out", str(out), "--base-template", "plain", "--no-progress"]
    assert main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["config"]["base_template"] == "plain"


SUBPROCESS_CASES = [  # run in one real process (startup costs seconds): no traceback may reach its stderr
    (["data", "{latin1.jsonl}"], "latin1.jsonl:2:"),
    (["generate", "--model", "organism-basse", "--prompts", "{prompts.jsonl}", "--out", "{out}"], "organism-basse"),
    (["judge", "{judge_no_response.jsonl}", "--out", "{out}"], "judge_no_response.jsonl:2:"),
]
DRIVER = """
import json, sys
from deepalign.cli import main
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    print(f"exit={code}", file=sys.stderr, flush=True)
"""


def test_no_traceback_reaches_stderr_of_the_command(fixtures, tmp_path):
    out = tmp_path / "out"
    argvs = [fill(argv, fixtures, out) for argv, _ in SUBPROCESS_CASES]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 * len(SUBPROCESS_CASES), proc.stderr  # one error line, then the exit status
    for (_, expected), error, status in zip(SUBPROCESS_CASES, lines[::2], lines[1::2], strict=True):
        assert error.startswith("deepalign: error: ") and expected in error and status == "exit=2"
    assert files_under(out) == []
