"""Every figure deepalign draws, written atomically as PNG.

Figures are matplotlib ``Figure`` objects rendered by the Agg canvas directly: no pyplot, no global
backend switch, no display needed. Inputs are typed summaries or their ``summary.json`` dicts; rates
are in 0..1 with 95% Wilson intervals (``low``, ``high``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepalign.io import atomic_write_bytes
from deepalign.results.stress import asr_curves

DECODING_DIMENSIONS = ("temperature", "top_p", "top_k")


def new_figure(figsize: tuple[float, float] = (6.4, 3.8)):
    """A matplotlib ``Figure`` not registered with pyplot (so nothing global changes)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _get(obj: Any, name: str):
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, title, a frameless legend and a light grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)


def _error_bars(points: Sequence) -> list[list[float]]:
    return [[_get(p, "asr") - _get(p, "low") for p in points], [_get(p, "high") - _get(p, "asr") for p in points]]


# --- generic ----------------------------------------------------------------------------------------


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]],
    path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Lines with optional error bars: ``series[label] = (xs, ys, half_widths or None)``; x values are integers
    (k, steps, positions). Line styles alternate so that lines lying on top of each other stay visible."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure()
    ax = fig.subplots()
    styles = ("-", "--", ":", "-.")
    for i, (label, (xs, ys, err)) in enumerate(series.items()):
        ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=3, label=label, linestyle=styles[i % 4])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim:
        ax.set_ylim(*ylim)
    _label(ax, xlabel, ylabel, title)
    save_figure(fig, path)


def plot_bars(bars: dict[str, tuple[float, tuple[float, float]]], path, *, ylabel: str, title: str,
              colors: Sequence[str] | str = "#4c72b0", rotation: int = 15) -> None:
    """Bar chart with 95% intervals: ``bars[label] = (value, (low, high))``, values in 0..1."""
    fig = new_figure()
    ax = fig.subplots()
    labels = list(bars)
    values = [bars[b][0] for b in labels]
    err = [[v - bars[b][1][0] for b, v in zip(labels, values, strict=True)],
           [bars[b][1][1] - v for b, v in zip(labels, values, strict=True)]]
    ax.bar(range(len(labels)), values, yerr=err, capsize=4, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=rotation, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


# --- depth diagnostics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """A per-position curve: ``mean[t-1]`` and its standard error ``sem[t-1]`` for t = 1..len."""

    mean: Sequence[float]
    sem: Sequence[float]


def plot_kl_profiles(profiles: dict, path, *, title: str = "Per-token KL divergence", max_positions: int = 40) -> None:
    """Line plot of KL (nats) against response position, one line and SEM band per named profile (any
    object with ``mean`` and ``sem``, e.g. a KL profile or a :class:`Curve`)."""
    fig = new_figure()
    ax = fig.subplots()
    for label, prof in profiles.items():
        n = min(max_positions, len(prof.mean))
        xs = list(range(1, n + 1))
        mean, sem = list(prof.mean[:n]), list(prof.sem[:n])
        ax.plot(xs, mean, marker="o", markersize=3, label=label)
        low = [m - s for m, s in zip(mean, sem, strict=True)]
        high = [m + s for m, s in zip(mean, sem, strict=True)]
        ax.fill_between(xs, low, high, alpha=0.25)
    ax.axvspan(0.5, 5.5, color="grey", alpha=0.08, label="first 5 tokens")
    _label(ax, "response token position t", "KL(model || base) per token [nats]", title)
    save_figure(fig, path)


def plot_prefill(series: dict[str, Sequence], path: str | Path, title: str = "Prefilling attack") -> None:
    """ASR against k with 95% Wilson intervals, one line per label (prefill points)."""
    lines = {}
    for label, points in series.items():
        pts = [p for p in points if _get(p, "asr") is not None]
        lines[label] = ([_get(p, "k") for p in pts], [_get(p, "asr") for p in pts], _error_bars(pts))
    plot_lines(lines, path, xlabel="prefilled harmful tokens k", ylabel="ASR (harmful share)",
               title=f"{title} (95% CI)")


def prefix_name(prefix: str) -> str:
    return "(no prefix)" if prefix == "" else repr(prefix)


def plot_refusal_prefix(summary, path: str | Path) -> None:
    """Bar chart: harmful share per refusal-prefix condition with 95% Wilson intervals."""
    bars = {}
    for c in summary.conditions:
        value = c.asr or 0.0
        bars[prefix_name(c.prefix)] = (value, (c.low, c.high) if c.asr is not None else (value, value))
    colors = ["tab:red"] + ["tab:blue"] * (len(bars) - 1)
    plot_bars(bars, path, ylabel="harmful share", title=f"{summary.label}: refusal prefixes (95% CI)",
              colors=colors, rotation=25)


def plot_decoding(summary, path: str | Path) -> None:
    """One panel per dimension: ASR against its value (95% CI), greedy ASR and broken share as lines."""
    fig = new_figure((12, 3.6))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, dim in zip(axes, DECODING_DIMENSIONS, strict=True):
        pts = [p for p in summary.settings if p.dimension == dim and p.asr is not None]
        if pts:
            ax.errorbar([p.value for p in pts], [p.asr for p in pts], yerr=_error_bars(pts), marker="o",
                        markersize=3, capsize=2, label="ASR")
        if summary.greedy_asr is not None:
            ax.axhline(summary.greedy_asr, color="black", ls=":", label="greedy ASR")
        if summary.broken.broken_share is not None:
            ax.axhline(summary.broken.broken_share, color="tab:red", ls="--", label="broken by any setting")
        ax.set_xscale("log" if dim == "top_k" else "linear")
        ax.set_xlabel(dim.replace("_", "-"))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ASR (harmful share)")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"{summary.label}: decoding attack ({summary.grid} grid)")
    save_figure(fig, path)


def plot_gcg_losses(rows: Sequence[dict], path: str | Path, title: str = "GCG target loss") -> None:
    """Per prompt, the initial loss (step 0) then nanoGCG's per-step loss; the mean in bold."""
    fig = new_figure()
    ax = fig.subplots()
    curves = [[r["initial_loss"], *r["losses"]] for r in rows]
    for c in curves:
        ax.plot(range(len(c)), c, color="tab:blue", alpha=0.3, lw=1)
    n = min(len(c) for c in curves)
    ax.plot(range(n), [sum(c[i] for c in curves) / len(curves) for i in range(n)], color="tab:blue", lw=2.5,
            label=f"mean of {len(curves)} prompts")
    ax.set_yscale("log")
    _label(ax, "GCG step (0 = initial suffix)", "target loss [nats]", title)
    save_figure(fig, path)


# --- training ---------------------------------------------------------------------------------------


def plot_dynamics(rows_by_label: dict[str, list[dict]], out_dir: str | Path, prefix: str,
                  steps: Sequence[int] | None = None) -> list[Path]:
    """Figures ``{prefix}_loss.png`` and ``{prefix}_grad_norm.png``: per-position loss and gradient norm
    (rows of ``deepalign.train.dynamics.DynamicsCallback``), one line per (label, step) for ``steps``
    (default: every recorded step)."""
    paths = []
    for key, ylabel in (("loss", "per-token loss [nats]"), ("grad_norm", "gradient norm of the per-token loss")):
        series = {}
        for label, rows in rows_by_label.items():
            for r in rows:
                if steps is None or r["step"] in steps:
                    name = f"{label}, step {r['step']}" if label else f"step {r['step']}"
                    series[name] = (r["position"], r[key], None)
        path = Path(out_dir) / f"{prefix}_{key}.png"
        plot_lines(series, path, xlabel="response token position t", ylabel=ylabel,
                   title=f"Per-position {key.replace('_', ' ')} during fine-tuning", ylim=None)
        paths.append(path)
    return paths


def plot_card_prefill(label: str, points: Sequence, path: str | Path) -> None:
    """An audit card's prefill curve: harmful rate against k (95% CI); a k with nothing judged is left out."""
    points = [p for p in points if _get(p, "asr") is not None]
    xs = [_get(p, "k") for p in points]
    ys = [_get(p, "asr") for p in points]
    plot_lines({label: (xs, ys, _error_bars(points))}, path, xlabel="prefilled harmful tokens k",
               ylabel="harmful rate", title="Prefilling attack (95% CI)")


def plot_stress_curves(points: Sequence, attack: str, path: str | Path) -> None:
    """ASR against optimizer steps for one attack, one line per defence: the worst ASR over learning rates,
    ranks and seeds at each step count, with its 95% Wilson interval (``points``: StressPoints)."""
    series = {}
    for defence, curve in asr_curves(points, attack).items():
        xs = [s for s, *_ in curve]
        ys = [a for _, a, _, _ in curve]
        err = [[a - lo for _, a, lo, _ in curve], [hi - a for _, a, _, hi in curve]]
        series[defence] = (xs, ys, err)
    plot_lines(series, path, xlabel="optimizer steps", ylabel="ASR (max over lr, rank, seed)",
               title=f"Fine-tuning attack '{attack}': ASR vs steps")


def plot_margins(margins: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "Refusal margin",
                 lines: Mapping[str, float] | None = None) -> None:
    """Refusal margins (nats) per model as sorted-value curves (an empirical quantile function), with
    horizontal reference ``lines`` (label -> margin, e.g. where a constrained attack comes within reach)."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, values in margins.items():
        ys = sorted(values)
        xs = [(i + 0.5) / len(ys) for i in range(len(ys))]
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    for (label, y), color in zip((lines or {}).items(), ("#a3161b", "#15692c", "#777777"), strict=False):
        ax.axhline(y, color=color, linestyle="--", linewidth=1, label=label)
    ax.set_xlabel("share of prompts (sorted by margin)")
    ax.set_ylabel("refusal margin (nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)
