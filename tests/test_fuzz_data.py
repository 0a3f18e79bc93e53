"""Fuzzing (Hypothesis) of the data loaders and of the commands that read data without a model (`data`,
`judge`): any file either loads completely or fails with one line naming file, line and field."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from fuzz_inputs import KIND_NAMES, check_outcome, data_files, examples, jsonl_files, records, run_main  # noqa: E402
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deepalign.data import load_records  # noqa: E402
from deepalign.data.schemas import KINDS  # noqa: E402
from deepalign.errors import DataError, DeepAlignError  # noqa: E402


def _check_record(record, kind: str) -> None:
    cls, required, optional = KINDS[kind]
    assert isinstance(record, cls) and isinstance(record.id, str) and record.id
    for name in required:
        value = getattr(record, name)
        if name == "messages":
            assert value and value[-1]["role"] == "assistant"
            assert all(isinstance(m["content"], str) for m in value)
        else:
            assert isinstance(value, str) and value.strip()
    for name in optional:
        assert getattr(record, name) is None or isinstance(getattr(record, name), str)


column_maps = st.one_of(st.none(), st.dictionaries(st.sampled_from(["prompt", "response", "refusal", "messages",
                                                                   "category", "id", "colour"]),
                                                  st.sampled_from(["text", "goal", "a\nb", "", "prompt"]), max_size=2))


# found by the fuzzer: a line break in an id or a column name broke the one-line message
@example(file=("d.jsonl", b'{"id": "a\\nb", "prompt": "x"}\n{"id": "a\\nb", "prompt": "y"}\n'), kind="prompts",
         limit=None, cap=1_000_000, fields=None)
@example(file=("d.jsonl", b'{"prompt": "x"}\n'), kind="pairs", limit=None, cap=1_000_000, fields={"response": "a\nb"})
@examples(150)
@given(file=data_files, kind=st.sampled_from(KIND_NAMES), limit=st.one_of(st.none(), st.integers(-1, 4)),
       cap=st.sampled_from([40, 1_000_000]), fields=column_maps)
def test_a_loader_returns_valid_records_or_one_line_naming_the_file(file, kind, limit, cap, fields):
    name, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            loaded = load_records(path, kind, fields=fields, limit=limit, max_line_bytes=cap)
        except DataError as e:
            message = str(e)
            assert "\n" not in message and "\r" not in message, message
            assert message.startswith(f"{path}:"), message
            if e.line is not None:
                assert message.startswith(f"{path}:{e.line}: ")
            if e.field is not None:
                assert f"field '{e.field}'" in message
            return
        except DeepAlignError as e:  # a setting, not the data: limit < 1, an unknown field in the column map
            assert "\n" not in e.one_line()
            assert (limit is not None and limit < 1 and "limit" in str(e)) or "field" in str(e), str(e)
            return
    assert limit is None or limit >= 1
    assert 1 <= len(loaded) <= (limit or len(loaded))
    assert len({r.id for r in loaded}) == len(loaded)
    for record in loaded:
        _check_record(record, kind)


prompt_rows = st.fixed_dictionaries({"prompt": st.text(min_size=1).filter(str.strip)},
                                    optional={"id": st.text(min_size=1, alphabet="abc\u00e9\u4e2d"),
                                              "category": st.text()})


@examples(60)
@given(rows=st.lists(prompt_rows, min_size=1, max_size=6, unique_by=lambda r: r.get("id", object())))
def test_well_formed_prompts_load_exactly_as_written(rows):
    """An independent expectation: valid JSONL records (any unicode) come back field for field."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        loaded = load_records(path, "prompts")
    assert [r.prompt for r in loaded] == [r["prompt"] for r in rows]
    assert [r.id for r in loaded] == [r.get("id") or f"p-{i:05d}" for i, r in enumerate(rows, 1)]
    assert [r.category for r in loaded] == [r.get("category") or None for r in rows]


def test_a_huge_file_loads_whole():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"hello {i} \u00e9"}) + "\n" for i in range(50_000)))
        loaded = load_records(path, "prompts")
    assert len(loaded) == 50_000 and loaded[-1].prompt == "hello 49999 \u00e9"


@examples(40)
@given(file=data_files, kind=st.sampled_from(KIND_NAMES), show=st.integers(0, 3))
def test_the_data_command_is_ok_or_one_line_exit_2(file, kind, show, capsys):
    name, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        capsys.readouterr()
        code = run_main(["data", str(path), "--kind", kind, "--show", str(show)])
        captured = capsys.readouterr()
    if check_outcome(code, captured.err, Path(tmp) / "none", ()):
        assert captured.out.strip().splitlines()[-1].endswith(f"{kind} records OK")
    else:
        assert str(path) in captured.err


judge_rows = st.dictionaries(st.sampled_from(["id", "prompt", "response", "prefill", "k", "label"]),
                             st.one_of(records.map(lambda r: r.get("prompt")), st.text(max_size=20),
                                       st.integers(0, 3), st.none(), st.lists(st.text(), max_size=1)), max_size=6)


@examples(40)
@given(data=jsonl_files(judge_rows), sees_prefill=st.booleans())
def test_the_judge_command_judges_every_row_or_is_one_line_exit_2(data, sees_prefill, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "rows.jsonl", Path(tmp) / "out"
        path.write_bytes(data)
        capsys.readouterr()
        code = run_main(["judge", str(path), "--out", str(out), *(["--sees-prefill"] if sees_prefill else [])])
        captured = capsys.readouterr()
        if check_outcome(code, captured.err, out, ("judged.jsonl", "summary.json", "meta.json")):
            judged = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
            summary = json.loads((out / "summary.json").read_text())
            n_input = sum(1 for line in data.splitlines() if line.strip())
            assert len(judged) == n_input == summary["n"] and all("harmful" in r for r in judged)
        else:
            assert str(path) in captured.err
