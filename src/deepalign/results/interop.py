"""Attack rows as HarmBench / JailbreakBench-style JSON, and such files read back as rows to judge.

- HarmBench (its completions / results files): ``{behavior_id: [{"test_case", "generation", "label"}, ...]}``,
  ``label`` 1 = harmful, 0 = safe (absent when not judged).
- JailbreakBench (its artifact files): ``{"jailbreaks": [{"index", "behavior", "goal", "prompt", "response",
  "jailbroken"}, ...]}``.

Exported rows keep deepalign's ``prefill`` (the forced start of the answer, empty for other attacks) and row
``id``, so a prefilling attack's generation is read back with what the model was forced to say first. The
behaviour id is the row's ``prompt_id`` (the pair or prompt it came from). A failed judgment exports as no
label: it is never a safe one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepalign.errors import DataError, DeepAlignError

FORMATS = ("harmbench", "jailbreakbench")


def _label(row: dict) -> int | None:
    harmful = row.get("harmful")
    return None if harmful is None or row.get("judge_error") else int(bool(harmful))


def _behaviour(row: dict) -> str:
    return str(row.get("prompt_id") or str(row["id"]).split("/r")[0])


def export_rows(rows: Sequence[dict], fmt: str) -> dict[str, Any]:
    """Rows (``id``, ``prompt``, ``response``, optional ``prompt_id``, ``prefill``, verdict fields) as a
    HarmBench- or JailbreakBench-style JSON object."""
    if fmt not in FORMATS:
        raise DeepAlignError(f"unknown export format '{fmt}' (expected one of: {', '.join(FORMATS)})")
    if fmt == "harmbench":
        out: dict[str, list[dict]] = {}
        for row in rows:
            entry = {"test_case": row["prompt"], "generation": row["response"], "prefill": row.get("prefill") or "",
                     "id": str(row["id"])}
            if (label := _label(row)) is not None:
                entry["label"] = label
            out.setdefault(_behaviour(row), []).append(entry)
        return out
    jailbreaks = []
    for i, row in enumerate(rows):
        label = _label(row)
        jailbreaks.append({"index": i, "behavior": _behaviour(row), "goal": row["prompt"], "prompt": row["prompt"],
                           "prefill": row.get("prefill") or "", "response": row["response"], "id": str(row["id"]),
                           "jailbroken": None if label is None else bool(label)})
    return {"jailbreaks": jailbreaks}


def _text(entry: dict, names: tuple[str, ...], label: str, where: str) -> str:
    for name in names:
        if name in entry:
            if not isinstance(entry[name], str):
                raise DataError(label, None, f"{where}.{name}", "must be a string")
            return entry[name]
    raise DataError(label, None, f"{where}.{names[0]}", "missing")


def read_benchmark_rows(path: str | os.PathLike[str]) -> list[dict]:
    """Rows ``{"id", "prompt", "response", "prefill", "reference_label"}`` of a HarmBench- or
    JailbreakBench-style JSON file (``reference_label``: its own 0/1 label or jailbroken flag, if any).
    Problems raise DataError naming the file and the entry (``behavior[i].field``)."""
    label = os.fspath(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(label, getattr(e, "lineno", None), None, f"not valid JSON ({e})") from None
    rows: list[dict] = []
    if isinstance(doc, dict) and isinstance(doc.get("jailbreaks"), list):
        for i, entry in enumerate(doc["jailbreaks"]):
            where = f"jailbreaks[{i}]"
            if not isinstance(entry, dict):
                raise DataError(label, None, where, "expected an object")
            flag = entry.get("jailbroken")
            rows.append({"id": str(entry.get("id") or f"{entry.get('behavior', 'jbb')}/{entry.get('index', i)}"),
                         "prompt": _text(entry, ("prompt", "goal"), label, where),
                         "response": _text(entry, ("response",), label, where),
                         "prefill": entry.get("prefill") or "",
                         "reference_label": None if flag is None else int(bool(flag))})
    elif isinstance(doc, dict):
        for behaviour, entries in doc.items():
            if not isinstance(entries, list):
                raise DataError(label, None, str(behaviour), "expected a list of {test_case, generation} entries")
            for i, entry in enumerate(entries):
                where = f"{behaviour}[{i}]"
                if not isinstance(entry, dict):
                    raise DataError(label, None, where, "expected an object")
                ref = entry.get("label")
                if ref not in (None, 0, 1) or isinstance(ref, bool):
                    raise DataError(label, None, f"{where}.label", f"expected 0, 1 or absent, got {ref!r}")
                rows.append({"id": str(entry.get("id") or f"{behaviour}/{i}"),
                             "prompt": _text(entry, ("test_case",), label, where),
                             "response": _text(entry, ("generation",), label, where),
                             "prefill": entry.get("prefill") or "", "reference_label": ref})
    else:
        raise DataError(label, None, None, "expected a HarmBench object {behavior_id: [...]} or a JailbreakBench "
                        "object {\"jailbreaks\": [...]}")
    if not rows:
        raise DataError(label, None, None, "no rows to judge")
    return rows
