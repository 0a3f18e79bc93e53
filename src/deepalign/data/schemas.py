"""Record types: every record is a frozen dataclass with a stable string ``id``."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptRecord:
    """A harmful or benign prompt."""

    id: str
    prompt: str
    category: str | None = None


@dataclass(frozen=True)
class PairRecord:
    """A prompt and an answer to it (a harmful answer for KL profiles and prefilling)."""

    id: str
    prompt: str
    response: str
    category: str | None = None


@dataclass(frozen=True)
class TripletRecord:
    """A harmful prompt, a harmful answer and a refusal, for safety-recovery augmentation."""

    id: str
    prompt: str
    response: str
    refusal: str
    category: str | None = None


@dataclass(frozen=True)
class ChatRecord:
    """Chat messages ``({"role": ..., "content": ...}, ...)`` for fine-tuning; the last is the assistant's.

    Roles are "system", "user" or "assistant". ``list(record.messages)`` feeds ``apply_chat_template``.
    """

    id: str
    messages: tuple[dict[str, str], ...]


Record = PromptRecord | PairRecord | TripletRecord | ChatRecord

# kind -> (record type, required fields, optional fields); "id" is optional for every kind.
KINDS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "prompts": (PromptRecord, ("prompt",), ("category",)),
    "pairs": (PairRecord, ("prompt", "response"), ("category",)),
    "triplets": (TripletRecord, ("prompt", "response", "refusal"), ("category",)),
    "chats": (ChatRecord, ("messages",), ()),
}

# Column names accepted in place of a field, tried in this order after the field's own name.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("instruction", "goal", "question"),
    "response": ("target", "output", "answer", "completion"),
}
