"""Training data in the formats people have: OpenAI chat fine-tuning JSONL (system prompts, multi-turn),
TRL prompt-completion (standard and conversational), and deepalign's own pairs / triplets."""

from __future__ import annotations

import json

import pytest
from conftest import build_tiny_llama

from deepalign.chat import encode_example
from deepalign.data import ChatRecord, PairRecord, TripletRecord, load_records, load_training_records
from deepalign.errors import DataError
from deepalign.train.augment import encode_records
from deepalign.train.objectives import response_positions

SYSTEM = {"role": "system", "content": "Be brief."}
U1, A1 = {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "I am fine."}
U2, A2 = {"role": "user", "content": "Tell me about the river."}, {"role": "assistant", "content": "Sure."}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_openai_chat_jsonl_with_system_and_turns(tmp_path):
    rows = [{"messages": [SYSTEM, U1, A1, U2, A2]}, {"messages": [U1, {**A1, "weight": 1}]}]
    records = load_training_records(_write(tmp_path / "openai.jsonl", rows))
    assert records == [ChatRecord("openai-00001", (SYSTEM, U1, A1, U2, A2)), ChatRecord("openai-00002", (U1, A1))]


def test_trl_prompt_completion_both_forms(tmp_path):
    conversational = [{"prompt": [SYSTEM, U1], "completion": [A1]}]
    standard = [{"prompt": "Hello there", "completion": "I am fine."}]
    chats = load_training_records(_write(tmp_path / "conv.jsonl", conversational))
    assert chats == [ChatRecord("conv-00001", (SYSTEM, U1, A1))]
    assert load_records(_write(tmp_path / "std.jsonl", standard), "pairs") == [
        PairRecord("std-00001", "Hello there", "I am fine.")]
    assert load_records(tmp_path / "std.jsonl", "chats") == [ChatRecord("std-00001", (U1, A1))]
    (tmp_path / "std.csv").write_text("prompt,completion\nHello there,I am fine.\n")
    assert load_records(tmp_path / "std.csv", "chats") == [ChatRecord("std-00001", (U1, A1))]


def test_single_turn_chats_read_as_pairs_and_prompts(tmp_path):
    path = _write(tmp_path / "one.jsonl", [{"id": "a", "messages": [U1, A1]}])
    assert load_records(path, "pairs") == [PairRecord("a", "Hello there", "I am fine.")]
    assert load_records(_write(tmp_path / "p.jsonl", [{"messages": [U1]}]), "prompts")[0].prompt == "Hello there"
    with pytest.raises(DataError, match=r"sys.jsonl:1: field 'messages': a chat with roles \['system'"):
        load_records(_write(tmp_path / "sys.jsonl", [{"messages": [SYSTEM, U1, A1]}]), "pairs")


def test_own_formats_still_detected(tmp_path):
    triplets = _write(tmp_path / "t.jsonl", [{"prompt": "q", "response": "a", "refusal": "no"}])
    pairs = _write(tmp_path / "p.jsonl", [{"prompt": "q", "response": "a"}])
    assert load_training_records(triplets) == [TripletRecord("t-00001", "q", "a", "no")]
    assert load_training_records(pairs) == [PairRecord("p-00001", "q", "a")]


def test_auto_detection_names_the_bad_row(tmp_path):
    rows = [{"messages": [U1, A1]}, {"messages": [U1, {"role": "assistant", "content": 3}]}]
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'messages\[1\].content': expected a string"):
        load_training_records(_write(tmp_path / "bad.jsonl", rows))


def test_multi_turn_trains_every_turn_or_the_last(tiny_tokenizer):
    chat = ChatRecord("c", (SYSTEM, U1, A1, U2, A2))
    (every,) = encode_records(tiny_tokenizer, [chat])
    (last,) = encode_records(tiny_tokenizer, [chat], last_turn_only=True)
    assert every["input_ids"] == last["input_ids"]
    import torch

    positions = response_positions(torch.tensor([every["labels"]]))[0].tolist()
    starts = [i for i, t in enumerate(positions) if t == 1]
    assert len(starts) == 2  # t = 1 at the first token of each assistant turn
    # the last turn alone is the single-turn encoding of its own reply after the full history
    reply = encode_example(tiny_tokenizer, U2["content"], A2["content"]).response_ids
    assert [x for x in last["labels"] if x != -100] == reply
    assert every["input_ids"][starts[1]:starts[1] + len(reply)] == reply
    single = ChatRecord("s", (U1, A1))  # one turn: exactly the pair encoding, as before
    enc = encode_example(tiny_tokenizer, U1["content"], A1["content"])
    assert encode_records(tiny_tokenizer, [single])[0]["input_ids"] == enc.input_ids


def test_train_on_openai_multi_turn_chats(tmp_path, tiny_tokenizer):
    from deepalign.train.config import DeepAlignConfig
    from deepalign.train.run import train

    model_dir = tmp_path / "model"
    build_tiny_llama(len(tiny_tokenizer)).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    records = load_training_records(_write(tmp_path / "chats.jsonl", [{"messages": [SYSTEM, U1, A1, U2, A2]}] * 2))
    config = DeepAlignConfig(output_dir=str(tmp_path / "ck"), objective="constrained", max_steps=2,
                             per_device_train_batch_size=2, use_cpu=True, disable_tqdm=True, report_to=[],
                             ref_cache_dir=str(tmp_path / "ref"), learning_rate=1e-3)
    out = train(str(model_dir), records, config, out_dir=tmp_path / "out")
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len([r for r in log if "objective" in r]) == 2
