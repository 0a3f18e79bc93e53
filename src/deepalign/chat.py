"""Chat formatting as token ids: prompt ids, response ids, the response mask, and exact prefill splices.

Response position t = 1..T indexes the tokens after the assistant header, the end-of-turn token last.
Ids are produced once from the rendered conversation and never decoded and re-encoded, so "token 1"
is exactly the token the model sees first after the header (e.g. Llama-2's space-joined answer after
``[/INST]``).

Templates:
  - ``chat``: the tokenizer's own chat template (error if it has none).
  - ``plain``: ``User: {prompt}\\nAssistant:`` then `` {response}`` and EOS — for base models.
  - ``alpaca``: the Alpaca instruction format, for base models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepalign.errors import DeepAlignError

TEMPLATES = ("chat", "plain", "alpaca")
ALPACA_HEADER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


@dataclass(frozen=True)
class ChatFormat:
    """How a prompt is rendered: which template, and which system prompt (None = template default)."""

    template: str = "chat"
    system: str | None = None

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise DeepAlignError(f"unknown template '{self.template}': choose one of {', '.join(TEMPLATES)}")

    def describe(self) -> dict:
        return {"template": self.template, "system": self.system}


@dataclass(frozen=True)
class Encoded:
    """One example as token ids: ``prompt_ids`` (through the assistant header) and ``response_ids``."""

    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    @property
    def labels(self) -> list[int]:
        """-100 on the prompt, the response ids on the response (the supervised tokens)."""
        return [-100] * len(self.prompt_ids) + self.response_ids


def _plain_text(prompt: str, fmt: ChatFormat) -> str:
    system = f"{fmt.system}\n\n" if fmt.system else ""
    if fmt.template == "plain":
        return f"{system}User: {prompt}\nAssistant:"
    header = fmt.system or ALPACA_HEADER
    return f"{header}\n\n### Instruction:\n{prompt}\n\n### Response:\n"


def _messages(prompt: str, fmt: ChatFormat, response: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": fmt.system}] if fmt.system is not None else []
    msgs.append({"role": "user", "content": prompt})
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DeepAlignError("the tokenizer has no EOS token: set one (tokenizer.eos_token) before formatting")
    return tokenizer.eos_token_id


def require_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DeepAlignError(
            "the tokenizer has no chat template: pass --template plain or --template alpaca for a base model"
        )


def encode_prompt(tokenizer, prompt: str, fmt: ChatFormat = ChatFormat()) -> list[int]:
    """Token ids of the rendered prompt, up to and including the assistant header."""
    if fmt.template == "chat":
        require_chat_template(tokenizer)
        text = tokenizer.apply_chat_template(_messages(prompt, fmt), tokenize=False, add_generation_prompt=True)
        return _tokenize(tokenizer, text, add_special_tokens=False)
    return _tokenize(tokenizer, _plain_text(prompt, fmt), add_special_tokens=True)


def encode_example(tokenizer, prompt: str, response: str, fmt: ChatFormat = ChatFormat()) -> Encoded:
    """Prompt and response ids such that ``prompt_ids + response_ids`` equals the tokenized conversation.

    The response ends with the end-of-turn token (EOS); anything the template renders after it (a
    trailing newline) is not part of the response. If the template ends the turn without the EOS
    token, the EOS is appended.
    """
    prompt_ids = encode_prompt(tokenizer, prompt, fmt)
    eos = _eos_id(tokenizer)
    if fmt.template == "chat":
        text = tokenizer.apply_chat_template(_messages(prompt, fmt, response), tokenize=False)
        full = _tokenize(tokenizer, text, add_special_tokens=False)
    else:
        separator = "" if fmt.template == "alpaca" else " "
        full = _tokenize(tokenizer, _plain_text(prompt, fmt) + separator + response, add_special_tokens=True)
    if full[: len(prompt_ids)] != prompt_ids:
        raise DeepAlignError(
            "the chat template tokenizes the prompt differently inside the full conversation; "
            "the prompt/response boundary is ambiguous for this tokenizer and template"
        )
    response_ids = full[len(prompt_ids) :]
    if eos in response_ids:
        response_ids = response_ids[: response_ids.index(eos) + 1]
    else:
        response_ids = response_ids + [eos]
    return Encoded(prompt_ids=prompt_ids, response_ids=response_ids)


def encode_turns(tokenizer, messages, fmt: ChatFormat = ChatFormat(), *,
                 last_turn_only: bool = False) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a multi-turn chat (the ``chat`` template only): labels are the ids of every
    assistant reply and its end-of-turn token (EOS), -100 elsewhere; with ``last_turn_only`` the last reply's
    alone. ``fmt.system`` is prepended when the chat has no system message of its own.

    Each reply's span starts where the rendered history up to and including its assistant header ends,
    so response positions t = 1.. count from the start of each assistant turn; the ids end at the last
    reply's EOS (appended when the template ends the last turn without it).
    """
    if fmt.template != "chat":
        raise DeepAlignError(f"multi-turn chats need the chat template, not '{fmt.template}'")
    require_chat_template(tokenizer)
    eos = _eos_id(tokenizer)
    msgs = [dict(m) for m in messages]
    if fmt.system is not None and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": fmt.system})
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not turns or turns[-1] != len(msgs) - 1:
        raise DeepAlignError("a training chat must end with an assistant message")
    full = _tokenize(tokenizer, tokenizer.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
    labels = [-100] * len(full)
    end = len(full)
    for n, i in enumerate(turns):
        text = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        start = len(prompt := _tokenize(tokenizer, text, add_special_tokens=False))
        if full[:start] != prompt:
            raise DeepAlignError(f"assistant turn {n + 1}: the chat template renders the history differently "
                                 "inside the full conversation; the turn's start is ambiguous for this template")
        last = n == len(turns) - 1
        if eos in full[start:]:
            end = start + full[start:].index(eos) + 1
        elif last:
            full, labels, end = full + [eos], labels + [-100], len(full) + 1
        else:
            raise DeepAlignError(f"assistant turn {n + 1}: the chat template ends it without the EOS token")
        if last or not last_turn_only:
            labels[start:end] = full[start:end]
    return full[:end], labels[:end]


def answer_length(enc: Encoded) -> int:
    """Number of response tokens before the final EOS."""
    return len(enc.response_ids) - 1


def splice(enc: Encoded, k: int) -> list[int]:
    """``prompt_ids`` followed by exactly the first ``k`` response tokens (a prefilling attack input)."""
    if not 0 <= k <= answer_length(enc):
        raise DeepAlignError(f"cannot prefill {k} tokens: the answer has {answer_length(enc)} tokens")
    return enc.prompt_ids + enc.response_ids[:k]


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``(input_ids [B, L] long, attention_mask [B, L] long)``, padding on ``side``."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask
