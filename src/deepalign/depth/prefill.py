"""Prefilling attack, and the machinery the inference-time attacks share.

Prefilling: force the first k tokens of a harmful answer, let the model continue, judge the
continuation. Inputs are spliced as token ids (prompt ids + exactly the first k response ids of the
tokenized conversation), never decoded and re-encoded.

Every attack (prefill, refusal-prefix, decoding, gcg) builds :class:`AttackItem` s (input ids plus row
fields), and :func:`generate_and_judge` samples ``repeats`` responses per item, judges each batch and
appends one row per (item, repeat) to ``rows.jsonl`` (id ``{item id}/r{repeat}``), so a killed run
resumes; a rerun also judges again the rows whose judgment failed. Rows carry ``prompt``, ``prefill``
and ``response``, so ``deepalign judge rows.jsonl`` can re-judge them with another judge. ASRs count
only judged rows: a failed judgment is reported in ``n_errors``, never counted as safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepalign.chat import ChatFormat, answer_length, encode_example, splice
from deepalign.errors import DataError, DeepAlignError
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.judges.base import Judge, JudgeInput, Judgment, summarize
from deepalign.results import ResultsWriter, atomic_write_jsonl, atomic_write_text, read_jsonl

ON_SHORT = ("error", "skip")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0..1); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # float error can cross p at 0, 1


# --- shared by the four attacks ----------------------------------------------------------------


def _paper_sampling() -> SamplingConfig:
    return SamplingConfig(repeats=3)


@dataclass
class AttackConfig:
    """Options every inference-time attack shares."""

    template: str = field(default="chat", metadata={"help": "Prompt template: chat, plain or alpaca."})
    system: str | None = field(default=None, metadata={"help": "System prompt (None = template default)."})
    sampling: SamplingConfig = field(
        default_factory=_paper_sampling,
        metadata={"help": "Decoding: the paper's (T 0.9, top-p 0.6, top-k 50, 512 new tokens), 3 repeats."},
    )
    batch_size: int = field(default=16, metadata={"help": "Sequences per generation batch."})
    label: str = field(default="model", metadata={"help": "Names this model's rows (several models may share a file)."})

    def __post_init__(self) -> None:
        ChatFormat(self.template, self.system)  # validates the template name
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


def _repeat_of(row_id: str) -> tuple[str, int] | None:
    stem, sep, rep = row_id.rpartition("/r")
    return (stem, int(rep)) if sep and rep.isdigit() else None


def generate_and_judge(
    model,
    tokenizer,
    items: Sequence[AttackItem],
    sampling: SamplingConfig,
    judge: Judge,
    writer: ResultsWriter,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> None:
    """Generate ``sampling.repeats`` responses per item (rows already in ``writer`` are skipped), judge
    each batch as soon as it is generated and write one row per (item, repeat)."""
    by_id = {it.id: it for it in items}
    done = {parsed for rid in writer.done if (parsed := _repeat_of(rid)) and parsed[0] in by_id}
    requests = [GenerationRequest(it.id, it.input_ids) for it in items]

    def write_batch(gens) -> None:
        batch = [by_id[g.id] for g in gens]
        verdicts = judge.judge([JudgeInput(it.prompt, g.text, it.prefill) for it, g in zip(batch, gens, strict=True)])
        for it, g, v in zip(batch, gens, verdicts, strict=True):
            writer.write({
                "id": f"{it.id}/r{g.repeat}", "prompt_id": it.prompt_id, "repeat": g.repeat, "prompt": it.prompt,
                "prefill": it.prefill, "response": g.text, "finished": g.finished, "n_tokens": len(g.token_ids),
                "harmful": v.harmful, "score": v.score, "error": v.error, "judge": judge.name,
                "judge_sees_prefill": judge.sees_prefill, **it.fields,
            })

    generate(model, tokenizer, requests, sampling, batch_size=batch_size, progress=progress,
             on_batch=write_batch, skip=done)


def retry_failed_judgments(path: str | Path, judge: Judge, batch_size: int = 64) -> int:
    """Judge again the rows of a results file whose judgment failed (rewritten atomically); returns how
    many were retried. Responses are kept: only the judgment is redone."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = read_jsonl(path)
    failed = [r for r in rows if r.get("error") is not None and "response" in r]
    for i in range(0, len(failed), batch_size):
        batch = failed[i : i + batch_size]
        verdicts = judge.judge([JudgeInput(r["prompt"], r["response"], r.get("prefill") or "") for r in batch])
        for r, v in zip(batch, verdicts, strict=True):
            r.update(harmful=v.harmful, score=v.score, error=v.error, judge=judge.name,
                     judge_sees_prefill=judge.sees_prefill)
    if failed:
        atomic_write_jsonl(path, rows)
    return len(failed)


def asr_stats(rows: Sequence[dict]) -> dict[str, Any]:
    """:func:`~deepalign.judges.summarize` of result rows plus the 95% Wilson interval of the ASR
    (``low``, ``high``; over judged rows only)."""
    s = summarize(Judgment(r["harmful"], r["score"], r["error"]) for r in rows)
    s["low"], s["high"] = wilson_interval(s["n_harmful"], s["n_judged"])
    return s


def format_rate(stats: dict[str, Any]) -> str:
    """``42.1% [35.0, 49.3]`` (ASR with its 95% CI), or ``n/a`` when nothing was judged."""
    if stats["asr"] is None:
        return "n/a"
    return f"{stats['asr']:.1%} [{stats['low']:.1%}, {stats['high']:.1%}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_attack(
    attack: str,
    model,
    tokenizer,
    items: Sequence[AttackItem],
    config: AttackConfig,
    judge: Judge,
    out_dir: str | Path,
    *,
    summarize_rows: Callable[[list[dict]], dict],
    sampling_of: Callable[[AttackItem], SamplingConfig] | None = None,
    source: str | None = None,
    progress: bool = True,
) -> dict:
    """The common skeleton of ``run_<attack>``: write ``meta.json``, retry failed judgments, generate and
    judge ``items`` into ``rows.jsonl`` (items grouped by their sampling config when ``sampling_of`` is
    given), then ``summary = summarize_rows(rows of this label)`` plus run fields, written to
    ``summary.json``. Returns the summary; the caller writes its table and figure."""
    from deepalign.results import atomic_write_json, write_run_metadata

    out = Path(out_dir)
    write_run_metadata(out, command=attack, model=getattr(model, "name_or_path", None), source=source,
                       config=asdict(config), judge=judge.describe())
    path = out / "rows.jsonl"
    retry_failed_judgments(path, judge)
    groups: dict[str, tuple[SamplingConfig, list[AttackItem]]] = {}
    for it in items:
        sampling = sampling_of(it) if sampling_of else config.sampling
        groups.setdefault(repr(sampling), (sampling, []))[1].append(it)
    with ResultsWriter(path) as writer:
        for sampling, group in groups.values():
            generate_and_judge(model, tokenizer, group, sampling, judge, writer, batch_size=config.batch_size,
                               progress=progress)
        wanted = {it.id for it in items}
        rows = [r for r in writer.rows() if (p := _repeat_of(str(r["id"]))) and p[0] in wanted]
    total = asr_stats(rows)
    summary = {"attack": attack, "label": config.label, "n": total["n"], "n_errors": total["n_errors"],
               **summarize_rows(rows), "judge": judge.describe(), "sampling": asdict(config.sampling)}
    atomic_write_json(out / "summary.json", summary)
    return summary


def record_line(source: str | None, index: int) -> int | None:
    """The line of the ``index``-th (0-based) record of a JSONL file, for error messages; None otherwise."""
    if not source or not source.endswith(".jsonl") or not Path(source).is_file():
        return None
    from deepalign.data.loaders import iter_lines

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


# --- the prefilling attack ---------------------------------------------------------------------


@dataclass
class PrefillPoint:
    """ASR at one prefill length: ``asr`` in 0..1 with its 95% Wilson interval and error count."""

    label: str
    k: int
    n: int
    n_errors: int
    asr: float | None
    low: float
    high: float


@dataclass
class PrefillConfig(AttackConfig):
    """Options of the prefilling attack (plus the shared :class:`AttackConfig` options)."""

    ks: tuple[int, ...] = field(default=(0, 5, 10, 20, 40), metadata={"help": "Prefilled answer tokens k."})
    on_short: str = field(
        default="error",
        metadata={"help": "An answer shorter than a k: 'error' (DataError naming file, line and field) or "
                  "'skip' (that pair is left out at that k; counts are in the summary)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ks = tuple(self.ks)
        if not self.ks or any(k < 0 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise DeepAlignError(f"prefill lengths must be distinct numbers >= 0, got {list(self.ks)}")
        if self.on_short not in ON_SHORT:
            raise DeepAlignError(f"on_short must be one of {', '.join(ON_SHORT)}, got {self.on_short!r}")


def prefill_items(
    tokenizer, pairs: Sequence, ks: Sequence[int], *, label: str, fmt: ChatFormat = ChatFormat(),
    on_short: str = "skip", source: str | None = None,
) -> list[AttackItem]:
    """One item per (k, pair): prompt ids + the answer's first k response ids (id ``{label}/k{k}/{pair id}``).

    A pair whose answer has fewer than k tokens is skipped at that k, or with ``on_short="error"``
    raises DataError naming ``source``, the pair's line (JSONL sources) and the ``response`` field.
    """
    items = []
    for index, pair in enumerate(pairs):
        enc = encode_example(tokenizer, pair.prompt, pair.response, fmt)
        n = answer_length(enc)
        if on_short == "error" and max(ks) > n:
            raise DataError(
                source or "pairs", record_line(source, index), "response",
                f"pair '{pair.id}': the answer has {n} tokens, fewer than k = {max(ks)}; use smaller --tokens, "
                "or --on-short skip to leave such pairs out at that k",
            )
        for k in ks:
            if k <= n:
                prefill = tokenizer.decode(enc.response_ids[:k], skip_special_tokens=True)
                items.append(AttackItem(f"{label}/k{k}/{pair.id}", pair.id, pair.prompt, splice(enc, k), prefill,
                                        {"label": label, "k": k}))
    return items


def summarize_prefill(rows: list[dict], label: str, ks: Sequence[int]) -> list[PrefillPoint]:
    """ASR per k from result rows (errors excluded from the denominator and counted)."""
    points = []
    for k in ks:
        s = asr_stats([r for r in rows if r["label"] == label and r["k"] == k])
        points.append(PrefillPoint(label, k, s["n"], s["n_errors"], s["asr"], s["low"], s["high"]))
    return points


def prefill_attack(
    model,
    tokenizer,
    pairs: Sequence,
    ks: Sequence[int],
    judge: Judge,
    writer: ResultsWriter,
    *,
    label: str,
    sampling: SamplingConfig,
    fmt: ChatFormat = ChatFormat(),
    batch_size: int = 16,
    progress: bool = True,
    on_short: str = "skip",
) -> list[PrefillPoint]:
    """Run the attack for every k on every pair into an open ``writer`` and summarise (pairs shorter than
    k tokens are skipped unless ``on_short="error"``). Rows already in ``writer`` are not generated again.
    For a whole run with its files, use :func:`run_prefill`."""
    items = prefill_items(tokenizer, pairs, ks, label=label, fmt=fmt, on_short=on_short)
    generate_and_judge(model, tokenizer, items, sampling, judge, writer, batch_size=batch_size, progress=progress)
    return summarize_prefill(writer.rows(), label, ks)


def run_prefill(
    model, tokenizer, records: Sequence, config: PrefillConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> dict:
    """The prefilling attack on (prompt, harmful answer) ``records``; writes into ``out_dir``:
    ``rows.jsonl`` (resumable), ``summary.json`` (ASR and 95% CI per k), ``table.md``, ``prefill.png``,
    ``meta.json``. ``source`` (the data file) names errors and is recorded. Returns the summary."""
    items = prefill_items(tokenizer, records, config.ks, label=config.label, fmt=config.fmt,
                          on_short=config.on_short, source=source)
    n_pairs_at = {k: sum(it.fields["k"] == k for it in items) for k in config.ks}

    def summarize_rows(rows: list[dict]) -> dict:
        points = summarize_prefill(rows, config.label, config.ks)
        return {"n_pairs": len(records), "points": [{**asdict(p), "n_pairs": n_pairs_at[p.k]} for p in points]}

    summary = run_attack("prefill", model, tokenizer, items, config, judge, out_dir, summarize_rows=summarize_rows,
                         source=source, progress=progress)
    out = Path(out_dir)
    atomic_write_text(out / "table.md", prefill_table(summary))
    plot_prefill({config.label: summary["points"]}, out / "prefill.png")
    return summary


def prefill_table(summary: dict) -> str:
    """Markdown table of a prefill summary: one row per k."""
    rows = [[p["k"], format_rate(p), p["n"], p["n_errors"], p["n_pairs"]] for p in summary["points"]]
    return markdown_table(["k (prefilled tokens)", "ASR [95% CI]", "rows", "judge errors", "pairs"], rows)


def plot_prefill(series: dict[str, list[dict]], path: str | Path, title: str = "Prefilling attack") -> None:
    """ASR against k with 95% Wilson intervals, one line per label (points as in a prefill summary)."""
    from deepalign.report.figures import plot_lines

    lines = {}
    for label, points in series.items():
        pts = [p for p in points if p["asr"] is not None]
        err = [[p["asr"] - p["low"] for p in pts], [p["high"] - p["asr"] for p in pts]]
        lines[label] = ([p["k"] for p in pts], [p["asr"] for p in pts], err)
    plot_lines(lines, path, xlabel="prefilled harmful tokens k", ylabel="ASR (harmful share)",
               title=f"{title} (95% CI)")
