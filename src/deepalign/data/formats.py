"""The fine-tuning data formats people already have, read as deepalign's fields.

Accepted row shapes (JSONL / JSON / CSV / datasets rows), besides deepalign's own ``prompt``/``response``
(/``refusal``) fields and their aliases:

- **OpenAI chat fine-tuning JSONL** and **TRL conversational**: ``{"messages": [{"role", "content"}, ...]}``
  with optional system prompt and any number of turns (extra keys such as ``weight`` or ``name`` are
  ignored).
- **TRL prompt-completion**: ``{"prompt": str, "completion": str}`` (standard) or
  ``{"prompt": [messages...], "completion": [{"role": "assistant", ...}]}`` (conversational).

For kind "chats" every shape becomes a list of messages. For "pairs", "triplets" and "prompts" a chat is
read as a (prompt, response) pair only when it is one user turn and one assistant reply with no system
prompt (anything else would silently drop part of the conversation: such data is trained as chats).
"""

from __future__ import annotations

import json
from typing import Any

from deepalign.data.schemas import ROLES
from deepalign.errors import DataError


def type_name(value: Any) -> str:
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
             list: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def check_messages(value: Any, label: str, line: int | None, column: str, *,
                   end_with_assistant: bool = True) -> tuple[dict[str, str], ...]:
    """Validated ``({"role", "content"}, ...)``: roles system/user/assistant, string contents; a JSON string
    (a CSV cell) is parsed first. Problems raise DataError naming file, line and ``column[i].field``."""
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(label, line, column, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, list) or not value:
        raise DataError(label, line, column, f"expected a non-empty list of messages, got {type_name(value)}")
    messages = []
    for i, message in enumerate(value):
        where = f"{column}[{i}]"
        if not isinstance(message, dict):
            problem = f"expected an object with role and content, got {type_name(message)}"
            raise DataError(label, line, where, problem)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(label, line, f"{where}.role",
                            f"unknown role {role!r} (expected one of: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise DataError(label, line, f"{where}.content", f"expected a string, got {type_name(content)}")
        messages.append({"role": role, "content": content})
    if end_with_assistant and messages[-1]["role"] != "assistant":
        last = messages[-1]["role"]
        raise DataError(label, line, column, f"must end with an assistant message, ends with '{last}'")
    return tuple(messages)


def shape_of(row: dict) -> str:
    """"messages" (OpenAI / TRL conversational), "conversational-pc" (TRL prompt-completion with message
    lists), "pc" (TRL prompt-completion with strings) or "fields" (deepalign's own fields)."""
    if "messages" in row and "prompt" not in row:
        return "messages"
    if isinstance(row.get("prompt"), list) and "completion" in row:
        return "conversational-pc"
    if isinstance(row.get("prompt"), str) and "completion" in row and "response" not in row:
        return "pc"
    return "fields"


def _chat(row: dict, label: str, line: int | None, full: bool = True) -> tuple[dict[str, str], ...]:
    shape = shape_of(row)
    if shape == "messages":
        return check_messages(row["messages"], label, line, "messages", end_with_assistant=full)
    if shape == "conversational-pc":
        prompt = check_messages(row["prompt"], label, line, "prompt", end_with_assistant=False)
        completion = check_messages(row["completion"], label, line, "completion", end_with_assistant=full)
        return prompt + completion
    if not isinstance(row["completion"], str):
        raise DataError(label, line, "completion", f"expected a string, got {type_name(row['completion'])}")
    return ({"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]})


def normalise_row(kind: str, row: dict, label: str, line: int | None) -> dict:
    """``row`` with the fields ``kind`` reads ("messages" for chats; "prompt"/"response" otherwise) filled
    in from whichever format it is in; rows in deepalign's own fields come back unchanged."""
    shape = shape_of(row)
    if shape == "fields" or (shape == "pc" and kind != "chats"):
        return row  # "completion" is an alias of "response"
    if kind == "chats":
        rest = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        return {**rest, "messages": list(_chat(row, label, line))}
    field = "messages" if shape == "messages" else "prompt"
    messages = _chat(row, label, line, full=kind != "prompts")
    roles = [m["role"] for m in messages]
    if kind == "prompts" and roles == ["user"]:
        return {**{k: v for k, v in row.items() if k != "messages"}, "prompt": messages[0]["content"]}
    if roles != ["user", "assistant"]:
        raise DataError(label, line, field, f"a chat with roles {roles} is not one (prompt, response) pair: "
                        "only [user, assistant] is read as a pair (train on multi-turn or system-prompt chats "
                        "with --kind chats)")
    rest = {k: v for k, v in row.items() if k not in ("messages", "prompt", "completion")}
    return {**rest, "prompt": messages[0]["content"], "response": messages[1]["content"]}


def needs_rows(kind: str, columns: list[str]) -> bool:
    """Whether a table with these columns holds another format (so fields are resolved row by row)."""
    names = set(columns)
    if kind == "chats":
        return "messages" not in names and {"prompt", "completion"} <= names
    return "messages" in names and "prompt" not in names
