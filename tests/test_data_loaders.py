"""Loaders: validation messages (file, line, field), format equivalence, ids, size cap; seeded splits."""

from __future__ import annotations

import csv
import json

import pytest

from deepalign.data import (
    ChatRecord,
    PairRecord,
    PromptRecord,
    TripletRecord,
    load_chats,
    load_pairs,
    load_prompts,
    load_records,
    load_triplets,
    sample,
    split,
)
from deepalign.errors import DataError, DeepAlignError

ROWS = [
    {"prompt": "Name a fruit.", "response": "An apple.", "refusal": "I can't help.", "category": "food"},
    {"prompt": "Name a colour.", "response": "Blue.", "refusal": "I won't.", "category": None},
    {"prompt": "Say hi, \"friend\".", "response": "Hi,\nfriend.", "refusal": "No.", "category": "greet"},
]


def write(path, content: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_csv(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows])
    return path


def error_of(source, kind="prompts", **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_records(source, kind, **kwargs)
    return str(info.value)


PROMPT_LOOKUP = "looked for 'prompt', 'instruction', 'goal', 'question'"


@pytest.mark.parametrize(
    ("content", "kind", "expected"),
    [
        ('{"prompt": "a"}\n{"prompt": \n', "prompts", "2: invalid JSON (Expecting value at column 12)"),
        ('{"prompt": "a"}\n["a"]\n', "prompts", "2: expected a JSON object, got list"),
        ('{"text": "a"}\n', "prompts", f"1: field 'prompt': missing ({PROMPT_LOOKUP})"),
        ('{"prompt": ["a"]}\n', "prompts", "1: field 'prompt': expected a string, got list"),
        ('{"prompt": 3}\n', "prompts", "1: field 'prompt': expected a string, got number"),
        ('{"prompt": null}\n', "prompts", "1: field 'prompt': expected a string, got null"),
        ('{"goal": {"a": 1}}\n', "prompts", "1: field 'goal': expected a string, got object"),
        ('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "  "}\n', "prompts",
         "3: field 'prompt': empty string"),
        ('{"prompt": "a", "category": 2}\n', "prompts", "1: field 'category': expected a string, got number"),
        ('{"prompt": "a", "id": true}\n', "prompts", "1: field 'id': expected a string, got boolean"),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b"}\n{"prompt": "c", "id": "x"}\n', "prompts",
         "3: field 'id': duplicate id 'x' (first on line 1)"),
        ('{"prompt": "a"}\n', "pairs",
         "1: field 'response': missing (looked for 'response', 'target', 'output', 'answer', 'completion')"),
        ('{"prompt": "a", "response": "b"}\n', "triplets",
         "1: field 'refusal': missing (looked for 'refusal')"),
        ('{"messages": []}\n', "chats",
         "1: field 'messages': expected a non-empty list of messages, got list"),
        ('{"messages": "hi"}\n', "chats", "1: field 'messages': invalid JSON (Expecting value at column 1)"),
        ('{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}\n', "chats",
         "1: field 'messages[1].role': unknown role 'robot' (expected one of: system, user, assistant)"),
        ('{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]}\n', "chats",
         "1: field 'messages[0].content': expected a string, got number"),
        ('{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}\n', "chats",
         "1: field 'messages': must end with an assistant message, ends with 'user'"),
        ('{"messages": ["hi"]}\n', "chats",
         "1: field 'messages[0]': expected an object with role and content, got string"),
    ],
)
def test_jsonl_validation_messages(tmp_path, content, kind, expected):
    path = write(tmp_path / "d.jsonl", content)
    assert error_of(path, kind) == f"{path}:{expected}"


def test_non_utf8_bytes_report_their_line(tmp_path):
    path = write(tmp_path / "d.jsonl", b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
    assert error_of(path) == f"{path}:2: not valid UTF-8 (byte 0xff at byte 13)"
    path = write(tmp_path / "d.json", b'[\n {"prompt": "a"},\n {"prompt": "\xfe"}\n]')
    assert error_of(path) == f"{path}:3: not valid UTF-8 (byte 0xfe at byte 14)"


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv"])
@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_has_no_records(tmp_path, name, content):
    path = write(tmp_path / name, content)
    assert error_of(path) == f"{path}: no records"


def test_empty_list_and_header_only_have_no_records(tmp_path):
    assert error_of(p := write(tmp_path / "d.json", "[ ]")) == f"{p}: no records"
    assert error_of(p := write(tmp_path / "d.csv", "prompt,category\n")) == f"{p}: no records"


def test_csv_validation_messages(tmp_path):
    path = write(tmp_path / "d.csv", "text,category\nhello,a\n")
    assert error_of(path) == (f"{path}:1: field 'prompt': missing column ({PROMPT_LOOKUP}; "
                              "columns: text, category)")
    path = write(tmp_path / "d.csv", "\nprompt,category\nhello,a\n\n\"two\nlines\",b\nx,y,z\n")
    assert error_of(path) == f"{path}:7: expected 2 columns, found 3"
    path = write(tmp_path / "d.csv", "prompt,category\nhello,a\n,b\n")
    assert error_of(path) == f"{path}:3: field 'prompt': empty string"
    path = write(tmp_path / "d.csv", "prompt,messages\nhi,\"[{\"\"role\"\": \"\"user\"\"}]\"\n")
    assert error_of(path, "chats").startswith(f"{path}:2: field 'messages[0].content': expected a string")


def test_json_list_errors_name_the_item_line(tmp_path):
    path = write(tmp_path / "d.json", '[\n  {"prompt": "a"},\n\n  {"prompt": 7}\n]\n')
    assert error_of(path) == f"{path}:4: field 'prompt': expected a string, got number"
    path = write(tmp_path / "d.json", '[\n  {"prompt": "a"},\n  "b"\n]')
    assert error_of(path) == f"{path}:3: expected a JSON object, got string"
    path = write(tmp_path / "d.json", '[\n  {"prompt": "a"},\n]')
    assert error_of(path) == f"{path}:3: invalid JSON (Expecting value at column 1)"
    path = write(tmp_path / "d.json", '[{"prompt": "a"}] x')
    assert error_of(path) == f"{path}:1: invalid JSON (Extra data after the list at column 19)"
    path = write(tmp_path / "d.json", '{"prompt": "a"}')
    assert error_of(path) == f"{path}: expected a JSON list of objects, got object"


def test_formats_load_equal_records(tmp_path):
    import datasets

    columns = ["prompt", "response", "refusal", "category"]
    sources = [
        write(tmp_path / "a" / "d.jsonl", jsonl(ROWS)),
        write(tmp_path / "b" / "d.json", json.dumps(ROWS, indent=2)),
        write_csv(tmp_path / "c" / "d.csv", ROWS, columns),
    ]
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "e" / "d"))
    sources.append(tmp_path / "e" / "d")
    expected = [TripletRecord(f"d-{i:05d}", r["prompt"], r["response"], r["refusal"], r["category"])
                for i, r in enumerate(ROWS, 1)]
    for source in sources:
        assert load_triplets(source) == expected, source
        assert load_pairs(source) == [PairRecord(e.id, e.prompt, e.response, e.category) for e in expected]
        assert load_prompts(str(source), limit=2) == [PromptRecord(e.id, e.prompt, e.category)
                                                      for e in expected[:2]]


def test_ids_from_file_or_record_number(tmp_path):
    content = '{"prompt": "a", "id": 7}\n\n{"prompt": "b"}\n{"prompt": "c", "id": "k"}\n'
    path = write(tmp_path / "set.jsonl", content)
    first = load_prompts(path)
    assert [r.id for r in first] == ["7", "set-00002", "k"]
    assert load_prompts(path) == first
    path = write(tmp_path / "d.jsonl", '{"prompt": "a", "uid": "u1"}\n{"prompt": "b", "uid": "u2"}\n')
    assert [r.id for r in load_prompts(path, fields={"id": "uid"})] == ["u1", "u2"]


def test_aliases_and_field_override(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"goal": "a", "target": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert load_pairs(path) == [PairRecord("d-00001", "a", "b"), PairRecord("d-00002", "c", "d")]
    path = write(tmp_path / "e.jsonl", '{"prompt": "p", "my_col": "q", "kind": "k"}\n')
    records = load_prompts(path, fields={"prompt": "my_col", "category": "kind"})
    assert records == [PromptRecord("e-00001", "q", "k")]
    assert error_of(path, fields={"prompt": "nope"}) == (f"{path}:1: field 'prompt': missing "
                                                         "(looked for 'nope')")
    with pytest.raises(DeepAlignError, match="unknown field 'refusal' for kind 'prompts'"):
        load_prompts(path, fields={"refusal": "x"})


def test_chats_from_jsonl_and_csv(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}]
    a = write(tmp_path / "a" / "c.jsonl", json.dumps({"messages": messages, "extra": 1}) + "\n")
    b = write_csv(tmp_path / "b" / "c.csv", [{"messages": json.dumps(messages)}], ["messages"])
    expected = [ChatRecord("c-00001", tuple(messages))]
    assert load_chats(a) == expected
    assert load_chats(b) == expected


def test_bom_and_crlf_are_accepted(tmp_path):
    path = write(tmp_path / "d.csv", "\ufeffprompt,category\r\nhello,a\r\n")
    assert load_prompts(path) == [PromptRecord("d-00001", "hello", "a")]
    path = write(tmp_path / "d.jsonl", '\ufeff{"prompt": "hello"}\r\n')
    assert load_prompts(path) == [PromptRecord("d-00001", "hello")]


def test_line_size_cap_boundary(tmp_path):
    line = json.dumps({"prompt": "x" * 20})  # 35 bytes
    path = write(tmp_path / "d.jsonl", line + "\n" + line + "x\n")
    assert len(load_prompts(path, limit=1)) == 1
    assert len(load_records(path, "prompts", max_line_bytes=len(line) + 1, limit=1)) == 1
    assert error_of(path, max_line_bytes=len(line)) == f"{path}:2: line longer than {len(line)} bytes"


def test_ten_megabyte_line_is_rejected_before_it_is_parsed(tmp_path, monkeypatch):
    import deepalign.data.loaders as loaders

    parsed, real_loads = [], json.loads
    monkeypatch.setattr(loaders.json, "loads", lambda text, *a, **k: parsed.append(len(text)) or real_loads(text))
    path = write(tmp_path / "big.jsonl", '{"prompt": "a"}\n{"prompt": "' + "y" * 10_000_000 + '"}\n')
    assert error_of(path) == f"{path}:2: line longer than 1000000 bytes"
    assert parsed == [len('{"prompt": "a"}')]  # the long line never reached the JSON parser
    path = write(tmp_path / "big.csv", "prompt\n" + "y" * 10_000_000 + "\n")
    assert error_of(path) == f"{path}:2: line longer than 1000000 bytes"


def test_source_errors_are_one_line_user_errors(tmp_path):
    for source, kind, pattern in [
        ("hf:some/set:test", "prompts", r"offline.*pass a local file"),
        (tmp_path / "missing.jsonl", "prompts", "no such file or folder"),
        (write(tmp_path / "d.txt", "a\n"), "prompts", "unsupported file type '.txt'"),
        (write(tmp_path / "d.jsonl", '{"prompt": "a"}\n'), "rows", "unknown kind 'rows'"),
        (tmp_path, "prompts", "not a folder saved with datasets' save_to_disk"),
    ]:
        with pytest.raises(DeepAlignError, match=pattern) as info:
            load_records(source, kind)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ splits
RECORDS = [PromptRecord(f"r{i:03d}", f"prompt {i}") for i in range(50)]


def test_split_is_seeded_disjoint_complete_and_order_independent():
    train, val, test = split(RECORDS, [0.7, 0.2, 0.1], seed=3)
    assert (len(train), len(val), len(test)) == (35, 10, 5)
    ids = [r.id for part in (train, val, test) for r in part]
    assert sorted(ids) == [r.id for r in RECORDS]  # disjoint and complete
    assert split(list(reversed(RECORDS)), [0.7, 0.2, 0.1], seed=3) == [train, val, test]
    assert split(RECORDS, [0.7, 0.2, 0.1], seed=4) != [train, val, test]


def test_split_forms_and_sample_prefix():
    head, rest = split(RECORDS, 0.8, seed=1)
    assert (len(head), len(rest)) == (40, 10)
    a, b, rest = split(RECORDS, [5, 10], seed=1)
    assert (len(a), len(b), len(rest)) == (5, 10, 35)
    assert a == sample(RECORDS, 5, seed=1) == sample(RECORDS, 15, seed=1)[:5]
    assert b == sample(RECORDS, 15, seed=1)[5:]
    with pytest.raises(DeepAlignError, match="sum to at most 50"):
        split(RECORDS, [40, 20])
    with pytest.raises(DeepAlignError, match="n=51"):
        sample(RECORDS, 51)
    with pytest.raises(DeepAlignError, match="duplicate record id 'r000'"):
        split([*RECORDS, RECORDS[0]], 0.5)
