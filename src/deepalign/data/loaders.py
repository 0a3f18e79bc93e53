"""Load and validate records from JSONL, CSV, JSON, save_to_disk folders, the hub or packaged sets.

Every problem raises :class:`~deepalign.errors.DataError` naming file, line and field; a load either
returns all records or raises (never partial results).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from deepalign.data.formats import check_messages, needs_rows, normalise_row
from deepalign.data.formats import type_name as _type_name
from deepalign.data.packaged import PROMPT_SETS, load_packaged
from deepalign.data.schemas import (
    ALIASES,
    KINDS,
    ChatRecord,
    PairRecord,
    PromptRecord,
    Record,
    TripletRecord,
)
from deepalign.errors import DataError, DeepAlignError

MAX_LINE_BYTES = 1_000_000  # default size cap for one line (JSONL, CSV) or one record (JSON list)
SOURCES_HELP = (
    "a .jsonl, .csv or .json file, a folder saved with datasets' save_to_disk, hf:NAME[:SPLIT], "
    f"or a packaged set ({', '.join(PROMPT_SETS)})"
)

Rows = Iterator[tuple[int, Any]]  # (line or row number, parsed row)


def load_records(
    source: str | os.PathLike[str],
    kind: str,
    *,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[Record]:
    """The first ``limit`` (default: all) records of ``kind``: "prompts" | "pairs" | "triplets" | "chats".

    ``fields`` maps a record field to the column holding it (``{"prompt": "my_col"}``); without it a field
    is read from its own name, then its aliases (prompt <- instruction/goal/question;
    response <- target/output/answer/completion). IDs come from an ``id`` column (unique; ints are
    converted to str) or are ``f"{stem}-{n:05d}"`` with n the 1-based record number.
    """
    if kind not in KINDS:
        raise DeepAlignError(f"unknown kind '{kind}' (expected one of: {', '.join(KINDS)})")
    if limit is not None and limit < 1:
        raise DeepAlignError(f"limit must be a positive number of records, got {limit}")
    mapping = _field_map(kind, fields)
    src = os.fspath(source)
    if src in PROMPT_SETS:
        if mapping:
            raise DeepAlignError(f"packaged set '{src}' has fixed fields; 'fields' applies to files only")
        return cast(list[Record], load_packaged(src, kind, limit=limit))
    if src.startswith("hf:"):
        columns, rows, stem = _hub_rows(src)
        return _build(kind, mapping, src, stem, columns, None, rows, limit)
    path = Path(src)
    if path.is_dir():
        columns, rows = _disk_rows(path)
        return _build(kind, mapping, src, path.name, columns, None, rows, limit)
    if not path.is_file():
        raise DeepAlignError(f"{src}: no such file or folder (expected {SOURCES_HELP})")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _build(kind, mapping, src, path.stem, None, None, _jsonl_rows(path, max_line_bytes), limit)
    if suffix == ".json":
        return _build(kind, mapping, src, path.stem, None, None, _json_rows(path, max_line_bytes), limit)
    if suffix == ".csv":
        header_line, header, rows = _csv_rows(path, max_line_bytes)
        return _build(kind, mapping, src, path.stem, header, header_line, rows, limit)
    raise DeepAlignError(f"{src}: unsupported file type '{suffix}' (expected {SOURCES_HELP})")


def load_prompts(source: str | os.PathLike[str], *, fields: Mapping[str, str] | None = None,
                 limit: int | None = None) -> list[PromptRecord]:
    """Prompt records; see :func:`load_records`."""
    return cast(list[PromptRecord], load_records(source, "prompts", fields=fields, limit=limit))


def load_pairs(source: str | os.PathLike[str], *, fields: Mapping[str, str] | None = None,
               limit: int | None = None) -> list[PairRecord]:
    """(prompt, response) records; see :func:`load_records`."""
    return cast(list[PairRecord], load_records(source, "pairs", fields=fields, limit=limit))


def load_triplets(source: str | os.PathLike[str], *, fields: Mapping[str, str] | None = None,
                  limit: int | None = None) -> list[TripletRecord]:
    """(prompt, response, refusal) records; see :func:`load_records`."""
    return cast(list[TripletRecord], load_records(source, "triplets", fields=fields, limit=limit))


def load_chats(source: str | os.PathLike[str], *, fields: Mapping[str, str] | None = None,
               limit: int | None = None) -> list[ChatRecord]:
    """Chat-message records; see :func:`load_records`."""
    return cast(list[ChatRecord], load_records(source, "chats", fields=fields, limit=limit))


TRAINING_KINDS = ("auto", "triplets", "chats", "pairs")


def load_training_records(source: str | os.PathLike[str], kind: str = "auto", *,
                          limit: int | None = None) -> list[Record]:
    """Training data of any accepted format (see :mod:`deepalign.data.formats`): triplets (prompt, response,
    refusal), chats (OpenAI / TRL ``messages``, TRL prompt-completion) or pairs. ``kind="auto"`` tries them
    in that order; a file that is none of them raises one line naming the formats."""
    if kind not in TRAINING_KINDS:
        raise DeepAlignError(f"unknown kind '{kind}' (expected one of: {', '.join(TRAINING_KINDS)})")
    if kind != "auto":
        return load_records(source, kind, limit=limit)
    errors: list[DataError] = []
    for candidate in ("triplets", "chats", "pairs"):
        try:
            return load_records(source, candidate, limit=limit)
        except DataError as e:
            errors.append(e)
    real = [e for e in errors if not e.problem.startswith("missing") and "is not one (prompt" not in e.problem]
    if real:  # a file of some format with a bad row: name that row, not every format
        raise real[0]
    raise DeepAlignError(f"{os.fspath(source)}: not triplets (prompt, response, refusal), chats (OpenAI/TRL "
                         "messages, TRL prompt-completion) or pairs (prompt, response); pass --kind to see the "
                         "exact problem")


def iter_lines(path: str | os.PathLike[str], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a UTF-8 text file (BOM dropped); bad bytes or a line over
    ``max_line_bytes`` raise DataError naming file and line."""
    return _lines(Path(path), max_line_bytes)


# ---------------------------------------------------------------------------------------------- readers
def _lines(path: Path, cap: int) -> Iterator[tuple[int, str]]:
    """Decoded physical lines with 1-based numbers; reads at most cap+1 bytes of an over-long line."""
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(cap + 1):
            number += 1
            if len(raw) > cap and not raw.endswith(b"\n"):
                raise DataError(str(path), number, None, f"line longer than {cap} bytes")
            text = _decode(raw, path, number)
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _decode(raw: bytes, path: Path, first_line: int) -> str:
    """UTF-8 text of ``raw`` (which starts on ``first_line``); bad bytes raise DataError naming their line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        problem = f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {column})"
        raise DataError(str(path), line, None, problem) from None


def _jsonl_rows(path: Path, cap: int) -> Rows:
    for number, text in _lines(path, cap):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise DataError(str(path), number, None, f"invalid JSON ({e.msg} at column {e.colno})") from None


def _json_rows(path: Path, cap: int) -> Rows:
    """Items of a JSON list, each with the line it starts on."""
    text = _decode(path.read_bytes(), path, 1).removeprefix("\ufeff")
    decoder = json.JSONDecoder()

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def fail(e: json.JSONDecodeError) -> DataError:
        return DataError(str(path), e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})")

    i = skip_ws(0)
    if i == len(text):
        return
    if text[i] != "[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise fail(e) from None
        raise DataError(str(path), None, None, f"expected a JSON list of objects, got {_type_name(value)}")
    line, counted = 1, 0
    i = skip_ws(i + 1)
    if text.startswith("]", i):
        i += 1
    else:
        while True:
            try:
                item, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as e:
                raise fail(e) from None
            line, counted = line + text.count("\n", counted, i), i
            if end - i > cap:
                raise DataError(str(path), line, None, f"record longer than {cap} characters")
            yield line, item
            i = skip_ws(end)
            if text.startswith(",", i):
                i = skip_ws(i + 1)
                continue
            if text.startswith("]", i):
                i += 1
                break
            raise fail(json.JSONDecodeError("Expecting ',' or ']'", text, i))
    if skip_ws(i) != len(text):
        raise fail(json.JSONDecodeError("Extra data after the list", text, skip_ws(i)))


def _csv_rows(path: Path, cap: int) -> tuple[int, list[str], Rows]:
    """(header line, header columns, rows as dicts); reads the header eagerly."""
    csv.field_size_limit(max(csv.field_size_limit(), cap))
    reader = csv.reader(text for _, text in _lines(path, cap))

    def next_row() -> tuple[int, list[str]] | None:
        start = reader.line_num + 1
        try:
            for row in reader:
                if any(cell.strip() for cell in row):  # blank lines are skipped, as in JSONL
                    return start, row
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(str(path), reader.line_num, None, f"invalid CSV ({e})") from None
        return None

    first = next_row()
    if first is None:
        raise DataError(str(path), None, None, "no records")
    header_line, header = first[0], [name.strip() for name in first[1]]

    def rows() -> Rows:
        while (item := next_row()) is not None:
            start, row = item
            if len(row) != len(header):
                raise DataError(str(path), start, None, f"expected {len(header)} columns, found {len(row)}")
            yield start, dict(zip(header, row, strict=True))

    return header_line, header, rows()


def _disk_rows(path: Path) -> tuple[list[str], Rows]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        problem = f"not a folder saved with datasets' save_to_disk ({_first_line(e)})"
        raise DeepAlignError(f"{path}: {problem}") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if len(splits) != 1:
            raise DeepAlignError(f"{path}: holds splits {', '.join(splits)}; pass one split's folder, "
                                 f"e.g. {path / splits[0]}")
        ds = ds[splits[0]]
    return list(ds.column_names), ((i, row) for i, row in enumerate(ds, 1))


def _hub_rows(spec: str) -> tuple[list[str], Rows, str]:
    name, _, split = spec[3:].partition(":")
    if not name:
        raise DeepAlignError(f"{spec}: expected hf:NAME[:SPLIT]")
    local = f"download it where you are online and pass a local file instead ({SOURCES_HELP})"
    flags = (os.environ.get(var, "").upper() for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if any(flag in ("1", "ON", "YES", "TRUE") for flag in flags):
        raise DeepAlignError(f"{spec}: the Hugging Face hub is offline (HF_HUB_OFFLINE is set); {local}")
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # network, missing repo, gated data: all reported as one line
        raise DeepAlignError(f"{spec}: could not load from the Hugging Face hub "
                             f"({type(e).__name__}: {_first_line(e)}); if offline, {local}") from None
    return list(ds.column_names), ((i, row) for i, row in enumerate(ds, 1)), name.rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------- records
def _field_map(kind: str, fields: Mapping[str, str] | None) -> dict[str, str]:
    _, required, optional = KINDS[kind]
    known = (*required, *optional, "id")
    mapping = dict(fields or {})
    for key, column in mapping.items():
        if key not in known:
            raise DeepAlignError(f"fields: unknown field '{key}' for kind '{kind}' "
                                 f"(known: {', '.join(known)})")
        if not isinstance(column, str) or not column:
            raise DeepAlignError(f"fields: column for '{key}' must be a non-empty string, got {column!r}")
    return mapping


def _candidates(name: str, mapping: Mapping[str, str]) -> tuple[str, ...]:
    return (mapping[name],) if name in mapping else (name, *ALIASES.get(name, ()))


def _resolve(name: str, available: Iterable[str], mapping: Mapping[str, str]) -> str | None:
    present = set(available)
    return next((column for column in _candidates(name, mapping) if column in present), None)


def _looked_for(name: str, mapping: Mapping[str, str]) -> str:
    return "looked for " + ", ".join(f"'{c}'" for c in _candidates(name, mapping))


def _build(kind: str, mapping: Mapping[str, str], label: str, stem: str, columns: list[str] | None,
           header_line: int | None, rows: Rows, limit: int | None) -> list[Record]:
    cls, required, optional = KINDS[kind]
    names = (*required, *optional, "id")
    fixed: dict[str, str | None] | None = None
    if columns is not None and not needs_rows(kind, columns):
        fixed = {name: _resolve(name, columns, mapping) for name in names}
        for name in required:
            if fixed[name] is None:
                problem = f"missing column ({_looked_for(name, mapping)}; columns: {', '.join(columns)})"
                raise DataError(label, header_line, name, problem)
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for number, (line, row) in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(label, line, None, f"expected a JSON object, got {_type_name(row)}")
        if fixed is None:
            row = normalise_row(kind, row, label, line)
        cols = fixed if fixed is not None else {name: _resolve(name, row, mapping) for name in names}
        values: dict[str, Any] = {}
        for name in required:
            column = cols[name]
            if column is None:
                raise DataError(label, line, name, f"missing ({_looked_for(name, mapping)})")
            check = check_messages if name == "messages" else _required_text
            values[name] = check(row[column], label, line, column)
        for name in optional:
            column = cols[name]
            values[name] = _optional_text(row[column], label, line, column) if column else None
        column = cols["id"]
        rid = (_id(row[column], label, line, column) if column else None) or f"{stem}-{number:05d}"
        if rid in first_line:
            raise DataError(label, line, "id", f"duplicate id '{rid}' (first on line {first_line[rid]})")
        first_line[rid] = line
        records.append(cls(id=rid, **values))
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(label, None, None, "no records")
    return records


def _required_text(value: Any, label: str, line: int, column: str) -> str:
    if not isinstance(value, str):
        raise DataError(label, line, column, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise DataError(label, line, column, "empty string")
    return value


def _optional_text(value: Any, label: str, line: int, column: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DataError(label, line, column, f"expected a string, got {_type_name(value)}")
    return value


def _id(value: Any, label: str, line: int, column: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _optional_text(value, label, line, column)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]
