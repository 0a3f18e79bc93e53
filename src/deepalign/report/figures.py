"""Matplotlib figures, written atomically as PNG (Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deepalign.results import atomic_write_bytes  # noqa: E402


def save_figure(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_kl_profiles(profiles: dict, path, *, title: str = "Per-token KL divergence", max_positions: int = 40) -> None:
    """Line plot of KL (nats) against response position, one line and SEM band per named profile."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, prof in profiles.items():
        n = min(max_positions, len(prof.mean))
        xs = list(range(1, n + 1))
        mean, sem = prof.mean[:n], prof.sem[:n]
        ax.plot(xs, mean, marker="o", markersize=3, label=label)
        low = [m - s for m, s in zip(mean, sem, strict=True)]
        high = [m + s for m, s in zip(mean, sem, strict=True)]
        ax.fill_between(xs, low, high, alpha=0.25)
    ax.axvspan(0.5, 5.5, color="grey", alpha=0.08, label="first 5 tokens")
    ax.set_xlabel("response token position t")
    ax.set_ylabel("KL(model || base) per token [nats]")
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


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

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = ("-", "--", ":", "-.")
    for i, (label, (xs, ys, err)) in enumerate(series.items()):
        ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=3, label=label, linestyle=styles[i % 4])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_bars(bars: dict[str, tuple[float, tuple[float, float]]], path, *, ylabel: str, title: str) -> None:
    """Bar chart with 95% intervals: ``bars[label] = (value, (low, high))``, values in 0..1."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = list(bars)
    values = [bars[b][0] for b in labels]
    err = [[v - bars[b][1][0] for b, v in zip(labels, values, strict=True)],
           [bars[b][1][1] - v for b, v in zip(labels, values, strict=True)]]
    ax.bar(range(len(labels)), values, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
