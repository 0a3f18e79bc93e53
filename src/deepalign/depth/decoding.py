"""Decoding attack (generation exploitation, Huang et al. 2023): sample each prompt under many decoding
settings; a prompt is broken if ANY setting yields a harmful answer.

The grid varies one dimension at a time, as Huang et al. do: temperature (top-p 1, no top-k), top-p
(temperature 1, no top-k), top-k (temperature 1, top-p 1), plus greedy decoding. The ``full`` grid is
the paper's (temperature 0.05..1.00 step 0.05, top-p 0..1 step 0.05, top-k in {1, 2, 5, 10, 20, 50,
100, 200, 500}: 50 sampled settings + greedy); ``small`` (12 + greedy) is a CPU-sized default.
Rows are keyed ``{label}/{setting}/{prompt id}/r{repeat}``, and each (setting, prompt, repeat) has
its own seeded random stream, so a killed run resumes and gives the same rows. The runner is
``deepalign.pipeline.attacks.run_decoding_attack``; the statistics ``deepalign.results.summaries.DecodingStats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from deepalign.chat import encode_prompt
from deepalign.depth.attack import AttackItem, InferenceAttackConfig
from deepalign.errors import DeepAlignError
from deepalign.generation import SamplingConfig

DIMENSIONS = ("temperature", "top_p", "top_k")
GRIDS: dict[str, dict[str, tuple]] = {
    "full": {
        "temperature": tuple(round(0.05 * i, 2) for i in range(1, 21)),
        "top_p": tuple(round(0.05 * i, 2) for i in range(0, 21)),
        "top_k": (1, 2, 5, 10, 20, 50, 100, 200, 500),
    },
    "small": {
        "temperature": (0.25, 0.5, 0.75, 1.0),
        "top_p": (0.25, 0.5, 0.75, 0.95),
        "top_k": (2, 10, 50, 200),
    },
}


@dataclass(frozen=True)
class DecodingSetting:
    """One decoding setting: ``dimension`` (greedy | temperature | top_p | top_k) set to ``value``."""

    dimension: str
    value: float | int | None = None

    @property
    def name(self) -> str:
        return "greedy" if self.dimension == "greedy" else f"{self.dimension}={self.value:g}"

    def sampling(self, base: SamplingConfig) -> SamplingConfig:
        """``base`` (length, repeats, seed, stops) with this setting; greedy always runs one repeat."""
        if self.dimension == "greedy":
            return replace(base, do_sample=False, repeats=1)
        knobs = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, self.dimension: self.value}
        return replace(base, do_sample=True, **knobs)


def _no_grid() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, repeats=1)  # neutral knobs: the grid sets them


@dataclass
class DecodingConfig(InferenceAttackConfig):
    """Options of the decoding attack (plus :class:`InferenceAttackConfig`; its ``sampling`` gives the length,
    repeats per setting, seed and stop strings, its temperature / top-p / top-k are replaced by the grid)."""

    sampling: SamplingConfig = field(
        default_factory=_no_grid, metadata={"help": "Length, repeats per setting, seed (knobs come from the grid)."}
    )
    grid: str = field(default="small", metadata={"help": "Preset grid: 'small' (CPU, 12 settings) or 'full' (the "
                      "paper's 50: temperature 0.05..1, top-p 0..1, top-k).", "choices": ("small", "full")})
    temperatures: tuple[float, ...] | None = field(default=None, metadata={"help": "Override the temperatures."})
    top_ps: tuple[float, ...] | None = field(default=None, metadata={"help": "Override the top-p values."})
    top_ks: tuple[int, ...] | None = field(default=None, metadata={"help": "Override the top-k values."})
    greedy: bool = field(default=True, metadata={"help": "Also decode greedily (the no-attack reference)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid not in GRIDS:
            raise DeepAlignError(f"unknown decoding grid '{self.grid}': choose {', '.join(GRIDS)}")
        for name in ("temperatures", "top_ps", "top_ks"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        if any(t <= 0 for t in self.temperatures or ()):
            raise DeepAlignError("temperatures must be > 0")
        if any(not 0 <= p <= 1 for p in self.top_ps or ()):
            raise DeepAlignError("top-p values must be in [0, 1]")
        if any(k < 1 for k in self.top_ks or ()):
            raise DeepAlignError("top-k values must be >= 1")
        if not self.settings():
            raise DeepAlignError("the decoding grid is empty")

    def settings(self) -> list[DecodingSetting]:
        """The grid: greedy first (if on), then each dimension's values in order."""
        preset = GRIDS[self.grid]
        values = {"temperature": self.temperatures, "top_p": self.top_ps, "top_k": self.top_ks}
        out = [DecodingSetting("greedy")] if self.greedy else []
        for dim in DIMENSIONS:
            chosen = preset[dim] if values[dim] is None else values[dim]
            out += [DecodingSetting(dim, v) for v in chosen]
        names = [s.name for s in out]
        if len(set(names)) != len(names):
            raise DeepAlignError("the decoding grid repeats a setting")
        return out


def decoding_items(tokenizer, records: Sequence, config: DecodingConfig) -> list[AttackItem]:
    """One item per (setting, prompt), id ``{label}/{setting}/{prompt id}``; the prompt ids are shared."""
    items = []
    prompt_ids = {r.id: encode_prompt(tokenizer, r.prompt, config.fmt) for r in records}
    for s in config.settings():
        for r in records:
            items.append(AttackItem(f"{config.label}/{s.name}/{r.id}", r.id, r.prompt, prompt_ids[r.id], "",
                                    {"label": config.label, "setting": s.name, "dimension": s.dimension,
                                     "value": s.value}))
    return items
