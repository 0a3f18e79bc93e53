"""Hypothesis strategies for the fuzz tests (tests/test_fuzz_*.py): data files as bytes (JSONL, CSV, JSON)
of random record shapes, field types, lengths and unicode, with junk lines, bad bytes and blank lines; and
the shared property every command must keep: exit 0 with its complete output, or exit 2 with one line
naming the problem and nothing written; never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st

SCALE = 20 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1


def examples(n: int):
    """``n`` examples per test in the default run (x20 with HYPOTHESIS_PROFILE=thorough)."""
    return settings(max_examples=n * SCALE)


FIELDS = ("id", "prompt", "response", "refusal", "category", "messages", "instruction", "goal", "target",
          "output", "answer", "text", "k", "prefill")
# neutral words the tiny tokenizer knows, so answers have predictable token lengths (about a token a word)
WORDS = ("hello", "there", "the", "garden", "river", "weather", "apples", "pears", "sure", "here", "is", "a",
         "short", "poem", "about", "plums", "thank", "you", "very", "much", "I", "am", "fine")

texts = st.one_of(
    st.text(max_size=30),  # any unicode (no lone surrogates: a file must be encodable to be written)
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=60).map(" ".join),  # 1..60 words: short and long
    st.sampled_from(["", " ", "\n", "\t\r\n", "\u200b", "\ufeff", "caf\u00e9 \u4e2d\u6587 \U0001f600"]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(FIELDS), inner, max_size=3), max_leaves=6)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "robot", ""]),
                                           "content": st.one_of(texts, json_values)}), max_size=4)
ids = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "a\nb", " "]), st.booleans(),
                st.lists(st.integers(), max_size=1))
records = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(texts, texts, json_values, messages, ids),
    max_size=6,
)
good_pairs = st.lists(
    st.fixed_dictionaries({"prompt": st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
                           "response": st.lists(st.sampled_from(WORDS), min_size=1, max_size=40).map(" ".join)}),
    min_size=1, max_size=4,
)
JUNK_LINES = (b"", b"  ", b"{", b"[1, 2]", b"null", b'"text"', b"\xff\xfe", b"caf\xe9", b"{\"prompt\": 1}",
              b"\xef\xbb\xbf{}")


@st.composite
def jsonl_files(draw, rows=records) -> bytes:
    lines = draw(st.lists(st.one_of(rows.map(lambda r: json.dumps(r, ensure_ascii=draw(st.booleans())).encode()),
                                    st.sampled_from(JUNK_LINES)), max_size=6))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = end.join(lines) + (end if lines and draw(st.booleans()) else b"")
    return b"\xef\xbb\xbf" + body if draw(st.booleans()) and body else body


@st.composite
def csv_files(draw) -> bytes:
    columns = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in draw(st.lists(st.lists(texts, min_size=0, max_size=5), max_size=4)):
        writer.writerow(row)
    return out.getvalue().encode()


@st.composite
def json_files(draw) -> bytes:
    value = draw(st.one_of(st.lists(records, max_size=5), records, json_values))
    return json.dumps(value).encode() + draw(st.sampled_from([b"", b"\n", b" junk"]))


KIND_NAMES = ("prompts", "pairs", "triplets", "chats")
data_files = st.one_of(jsonl_files().map(lambda b: ("data.jsonl", b)), csv_files().map(lambda b: ("data.csv", b)),
                       json_files().map(lambda b: ("data.json", b)))
k_grids = st.lists(st.integers(0, 80), min_size=1, max_size=5, unique=True)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


ERROR_LINE = re.compile(r"^deepalign( [\w-]+)*: error: ")  # ours, or argparse's after its usage lines


def run_main(argv: list[str]) -> int:
    """``deepalign.cli.main(argv)``'s exit status (argparse's usage errors exit through SystemExit)."""
    from deepalign.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2


def check_outcome(code: int, err: str, out: Path, expected_files: tuple[str, ...]) -> bool:
    """The property: exit 0 with every ``expected_files`` under ``out``, or exit 2 with one error line on
    stderr (``deepalign: error: ...``, or argparse's usage error) as its last line and nothing written.
    Returns True on success (exit 0)."""
    assert "Traceback" not in err, err
    if code == 0:
        missing = [f for f in expected_files if not (out / f).is_file()]
        assert not missing, (missing, err)
        return True
    lines = [line for line in err.strip().splitlines() if ERROR_LINE.match(line)]
    assert code == 2, err
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert files_under(out) == [], err
    return False
