"""What the inference-time attacks share: their common options, attack items, and the one resumable
generate loop.

Every attack (prefill, refusal-prefix, decoding, gcg) builds :class:`AttackItem` s (input ids plus row
fields); :func:`generate_rows` samples ``repeats`` responses per item and appends one row per (item,
repeat) to a results file, so a killed run resumes. A row holds ``id`` (``{item id}/r{repeat}``),
``prompt_id``, ``repeat``, ``prompt``, ``prefill`` (answer text forced before the response; "" if none),
``response``, ``finished``, ``n_tokens`` and the item's fields. An ``annotate`` function adds fields to
each batch of rows before they are written: a judge's verdicts (``deepalign.judges.apply.judge_rows``)
or a task score. Inputs are token ids, never decoded and re-encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepalign.chat import TEMPLATES, ChatFormat
from deepalign.data.loaders import iter_lines
from deepalign.errors import DeepAlignError
from deepalign.generation import BACKENDS, DEFAULT_BATCH_SIZE, Generation, GenerationRequest, SamplingConfig, generate
from deepalign.io import ResultsWriter

Annotate = Callable[[list[dict]], list[dict]]  # rows -> one dict of extra fields per row


def _paper_sampling() -> SamplingConfig:
    return SamplingConfig(repeats=3)


@dataclass
class InferenceAttackConfig:
    """Options every inference-time attack shares."""

    template: str = field(default="chat", metadata={"help": "Prompt template.", "choices": TEMPLATES})
    system: str | None = field(default=None, metadata={"help": "System prompt (default: the template's own)."})
    sampling: SamplingConfig = field(
        default_factory=_paper_sampling,
        metadata={"help": "Decoding: the paper's (T 0.9, top-p 0.6, top-k 50, 512 new tokens), 3 repeats."},
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Sequences per generation batch (default: 64 hf, 512 vllm)."},
    )
    label: str = field(default="model", metadata={"help": "Names this model's rows (several models may share a file)."})
    backend: str = field(
        default="hf",
        metadata={"help": "Generation backend: hf (transformers), or vllm (the model is a vllm.LLM; docs/scaling.md).",
                  "choices": BACKENDS},
    )

    def __post_init__(self) -> None:
        ChatFormat(self.template, self.system)  # validates the template name
        if self.backend not in BACKENDS:
            raise DeepAlignError(f"unknown generation backend '{self.backend}': choose one of {', '.join(BACKENDS)}")
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE[self.backend]
        if self.batch_size < 1:
            raise DeepAlignError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.label or "/" in self.label:
            raise DeepAlignError(f"label must be non-empty and without '/', got {self.label!r}")

    @property
    def fmt(self) -> ChatFormat:
        return ChatFormat(self.template, self.system)


@dataclass(frozen=True)
class AttackItem:
    """One attack input: ``input_ids`` (prompt + any forced response tokens), what the judge sees
    (``prompt``, ``prefill`` text), and attack-specific row ``fields``. Rows get id ``{id}/r{repeat}``."""

    id: str
    prompt_id: str
    prompt: str
    input_ids: list[int]
    prefill: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def row_id(item_id: str, repeat: int) -> str:
    """The id of repeat ``repeat`` of an item's generation."""
    return f"{item_id}/r{repeat}"


def parse_row_id(rid: str) -> tuple[str, int] | None:
    """``(item id, repeat)`` of a row id made by :func:`row_id`; None for any other id."""
    stem, sep, rep = rid.rpartition("/r")
    return (stem, int(rep)) if sep and rep.isdigit() else None


def _row(item: AttackItem, g: Generation) -> dict[str, Any]:
    return {"id": row_id(item.id, g.repeat), "prompt_id": item.prompt_id, "repeat": g.repeat, "prompt": item.prompt,
            "prefill": item.prefill, "response": g.text, "finished": g.finished, "n_tokens": len(g.token_ids),
            **item.fields}


def generate_rows(
    model,
    tokenizer,
    items: Sequence[AttackItem],
    sampling: SamplingConfig,
    writer: ResultsWriter,
    *,
    annotate: Annotate | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    backend: str = "hf",
) -> list[dict]:
    """Generate ``sampling.repeats`` responses per item, skipping the (item, repeat) rows already in
    ``writer``; each batch's rows get ``annotate(rows)``'s fields and are written at once. ``model`` is a
    transformers model (``backend="hf"``) or a ``vllm.LLM`` (``"vllm"``). Returns the rows of ``items``
    in the file (earlier runs' included)."""
    by_id = {it.id: it for it in items}
    done = {parsed for rid in writer.done if (parsed := parse_row_id(rid)) and parsed[0] in by_id}

    def write_batch(gens: list[Generation]) -> None:
        rows = [_row(by_id[g.id], g) for g in gens]
        extra = annotate(rows) if annotate is not None else [{} for _ in rows]
        for row, more in zip(rows, extra, strict=True):
            writer.write({**row, **more})

    generate(model, tokenizer, [GenerationRequest(it.id, it.input_ids) for it in items], sampling,
             batch_size=batch_size, progress=progress, on_batch=write_batch, skip=done, backend=backend)
    return [r for r in writer.rows() if (p := parse_row_id(str(r["id"]))) and p[0] in by_id]


def record_line(source: str | None, index: int) -> int | None:
    """The line of the ``index``-th (0-based) record of a JSONL file, for error messages; None otherwise."""
    if not source or not source.endswith(".jsonl") or not Path(source).is_file():
        return None
    seen = -1
    for number, text in iter_lines(source):
        seen += bool(text.strip())
        if seen == index:
            return number
    return None


def check_known_tokens(tokenizer, ids: Sequence[int], text: str, what: str) -> None:
    """Raise DeepAlignError when ``text`` tokenized to the unknown token (e.g. a word-level vocabulary)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids and tokenizer.unk_token not in text:
        raise DeepAlignError(f"{what} {text!r} has words this tokenizer does not know (they become "
                             f"{tokenizer.unk_token}); use words of the model's vocabulary")
