"""The inference-time attacks end to end: items (``deepalign.depth``) -> generated and judged rows
(``rows.jsonl``, resumable) -> a typed summary (``summary.json``) -> ``table.md`` and a figure.

A rerun also judges again the rows whose judgment failed. ASRs count only judged rows: a failed
judgment is reported in ``n_errors``, never counted as safe. A new attack adds its items in
``deepalign/depth/<attack>.py`` and a ``run_<attack>`` here built on :func:`run_attack`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from deepalign.chat import ChatFormat
from deepalign.depth.attack import AttackItem, InferenceAttackConfig, generate_rows
from deepalign.depth.decoding import DecodingConfig, decoding_items
from deepalign.depth.gcg import SETTINGS as GCG_SETTINGS
from deepalign.depth.gcg import GCGAttackConfig, find_suffixes, gcg_items
from deepalign.depth.prefill import PrefillConfig, prefill_items
from deepalign.depth.refusal_prefix import NO_PREFIX, RefusalPrefixConfig, refusal_prefix_items
from deepalign.generation import SamplingConfig
from deepalign.io import ResultsWriter, atomic_write_json, atomic_write_text
from deepalign.judges.apply import judge_rows, rejudge_failed
from deepalign.judges.base import Judge
from deepalign.judges.validity import known_validation
from deepalign.meta import write_run_metadata
from deepalign.report import figures, tables
from deepalign.results.stats import AsrStats
from deepalign.results.summaries import (
    DecodingStats,
    DecodingSummary,
    GCGSummary,
    PrefillPoint,
    PrefillSummary,
    RefusalPrefixSummary,
    SettingStats,
    prefill_points,
)


def run_attack(
    attack: str,
    model,
    tokenizer,
    items: Sequence[AttackItem],
    config: InferenceAttackConfig,
    judge: Judge,
    out_dir: str | Path,
    *,
    sampling_of: Callable[[AttackItem], SamplingConfig] | None = None,
    source: str | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """The common part of every ``run_<attack>``: write ``meta.json``, retry failed judgments, generate and
    judge ``items`` into ``rows.jsonl`` (items grouped by their sampling config when ``sampling_of`` is
    given). Returns the rows of ``items`` and the summary fields every attack shares."""
    out = Path(out_dir)
    write_run_metadata(out, command=attack, model=getattr(model, "name_or_path", None), source=source,
                       config=asdict(config), judge=judge.describe())
    path = out / "rows.jsonl"
    rejudge_failed(path, judge)
    groups: dict[str, tuple[SamplingConfig, list[AttackItem]]] = {}
    for it in items:
        sampling = sampling_of(it) if sampling_of else config.sampling
        groups.setdefault(repr(sampling), (sampling, []))[1].append(it)
    rows: list[dict] = []
    with ResultsWriter(path) as writer:
        for sampling, group in groups.values():
            rows += generate_rows(model, tokenizer, group, sampling, writer, annotate=lambda r: judge_rows(judge, r),
                                  batch_size=config.batch_size, progress=progress, backend=config.backend)
    total = AsrStats.of_rows(rows)
    shared = {"attack": attack, "label": config.label, "n": total.n, "n_errors": total.n_errors,
              "judge": judge.describe(), "sampling": asdict(config.sampling),
              "validation": known_validation(judge.describe())}  # from the cache only: never measured here
    return rows, shared


def _finish(summary, out_dir: str | Path, table, figure, figure_name: str):
    """Write ``summary.json``, ``table.md`` (``table(summary)``) and the figure (``figure(summary, path)``)."""
    out = Path(out_dir)
    atomic_write_json(out / "summary.json", summary.to_dict())
    atomic_write_text(out / "table.md", table(summary))
    figure(summary, out / figure_name)
    return summary


def _pairs_at(items: Sequence[AttackItem], ks: Sequence[int]) -> dict[int, int]:
    """How many pairs are long enough for each prefill length k."""
    return {k: sum(it.fields["k"] == k for it in items) for k in ks}


def prefill_attack(
    model, tokenizer, pairs: Sequence, ks: Sequence[int], judge: Judge, writer: ResultsWriter, *, label: str,
    sampling: SamplingConfig, fmt: ChatFormat = ChatFormat(), batch_size: int | None = None, progress: bool = True,
    on_short: str = "skip",
) -> list[PrefillPoint]:
    """The prefilling attack for every k on every pair into an open ``writer``, summarised per k (pairs
    shorter than k tokens are skipped unless ``on_short="error"``). Rows already in ``writer`` are not
    generated again. For a whole run with its files, use :func:`run_prefill`."""
    items = prefill_items(tokenizer, pairs, ks, label=label, fmt=fmt, on_short=on_short)
    rows = generate_rows(model, tokenizer, items, sampling, writer, annotate=lambda r: judge_rows(judge, r),
                         batch_size=batch_size, progress=progress)
    return prefill_points(rows, label, ks, _pairs_at(items, ks))


def run_prefill(
    model, tokenizer, records: Sequence, config: PrefillConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> PrefillSummary:
    """The prefilling attack on (prompt, harmful answer) ``records``; writes into ``out_dir``:
    ``rows.jsonl`` (resumable), ``summary.json`` (ASR and 95% CI per k), ``table.md``, ``prefill.png``,
    ``meta.json``. ``source`` (the data file) names errors and is recorded."""
    items = prefill_items(tokenizer, records, config.ks, label=config.label, fmt=config.fmt,
                          on_short=config.on_short, source=source)
    rows, shared = run_attack("prefill", model, tokenizer, items, config, judge, out_dir, source=source,
                              progress=progress)
    summary = PrefillSummary(**shared, n_pairs=len(records),
                             points=prefill_points(rows, config.label, config.ks, _pairs_at(items, config.ks)))
    plot = lambda s, path: figures.plot_prefill({config.label: s.points}, path)  # noqa: E731
    return _finish(summary, out_dir, tables.prefill_table, plot, "prefill.png")


def run_refusal_prefix(
    model, tokenizer, records: Sequence, config: RefusalPrefixConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> RefusalPrefixSummary:
    """Harmfulness of ``model`` on prompt ``records`` without and with each refusal prefix; writes
    ``rows.jsonl`` (resumable), ``summary.json``, ``table.md``, ``refusal_prefix.png`` and ``meta.json``
    into ``out_dir`` (``conditions``: prefix, ASR, 95% CI, counts)."""
    items = refusal_prefix_items(tokenizer, records, config)
    rows, shared = run_attack("refusal-prefix", model, tokenizer, items, config, judge, out_dir, source=source,
                              progress=progress)
    conditions = RefusalPrefixSummary.conditions_of(rows, (NO_PREFIX, *config.prefixes))
    summary = RefusalPrefixSummary(**shared, n_prompts=len(records), conditions=conditions)
    return _finish(summary, out_dir, tables.refusal_prefix_table, figures.plot_refusal_prefix, "refusal_prefix.png")


def run_decoding_attack(
    model, tokenizer, records: Sequence, config: DecodingConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> DecodingSummary:
    """The decoding attack on prompt ``records``; writes ``rows.jsonl`` (resumable), ``summary.json``,
    ``table.md``, ``decoding.png`` and ``meta.json`` into ``out_dir``."""
    settings = config.settings()
    by_name = {s.name: s for s in settings}
    items = decoding_items(tokenizer, records, config)
    rows, shared = run_attack(
        "decoding-attack", model, tokenizer, items, config, judge, out_dir,
        sampling_of=lambda it: by_name[it.fields["setting"]].sampling(config.sampling), source=source,
        progress=progress,
    )
    summary = DecodingSummary(**shared, **vars(DecodingStats.of_rows(rows, settings)), grid=config.grid)
    return _finish(summary, out_dir, tables.decoding_table, figures.plot_decoding, "decoding.png")


def run_gcg(
    model, tokenizer, records: Sequence, config: GCGAttackConfig, judge: Judge, out_dir: str | Path, *,
    source: str | None = None, progress: bool = True,
) -> GCGSummary:
    """GCG on prompt (or pair) ``records``: ``suffixes.jsonl`` (one optimization per prompt), then
    ``rows.jsonl`` (answers with and without the suffix), ``summary.json``, ``table.md``, ``gcg_loss.png``
    and ``meta.json`` in ``out_dir``; every file resumable."""
    out = Path(out_dir)
    suffixes = find_suffixes(model, tokenizer, records, config, out / "suffixes.jsonl", source=source,
                             progress=progress)
    items = gcg_items(tokenizer, records, suffixes, config)
    rows, shared = run_attack("gcg", model, tokenizer, items, config, judge, out, source=source, progress=progress)
    losses = [{k: suffixes[r.id][k] for k in ("prompt_id", "initial_loss", "best_loss")} for r in records]
    mean = lambda key: sum(x[key] for x in losses) / len(losses)  # noqa: E731
    settings = [replace(SettingStats.of_rows(r for r in rows if r["setting"] == s), setting=s) for s in GCG_SETTINGS]
    summary = GCGSummary(
        **shared, n_prompts=len(records), settings=settings, losses=losses,
        mean_initial_loss=mean("initial_loss"), mean_best_loss=mean("best_loss"),
        n_loss_lowered=sum(x["best_loss"] < x["initial_loss"] for x in losses),
        budget={"steps": config.steps, "search_width": config.search_width, "topk": config.topk},
    )
    plot = lambda s, path: figures.plot_gcg_losses([suffixes[r.id] for r in records], path,  # noqa: E731
                                                   title=f"{config.label}: GCG target loss")
    return _finish(summary, out, tables.gcg_table, plot, "gcg_loss.png")
