"""Typed summaries: what each runner returns and writes as ``summary.json`` (``to_dict()``).

Every rate carries its counts (``n_harmful`` of ``n_judged``, ``n_errors`` failed judgments), so pooling
over seeds adds counts instead of rebuilding them from rates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deepalign.results.stats import AsrStats, broken_prompts, wilson_interval
from deepalign.results.validation import JudgeValidation


class Summary:
    """Mixin: ``to_dict()`` for ``summary.json`` (nested dataclasses become dicts)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class LabelledStats(AsrStats, Summary):
    """ASR of the rows of one ``label`` (a model, or a model at a stage of a fine-tuning attack)."""

    label: str = ""


@dataclass(frozen=True)
class PrefillPoint(LabelledStats):
    """ASR at one prefill length ``k`` (``n_pairs``: pairs long enough for k)."""

    k: int = 0
    n_pairs: int = 0


@dataclass(frozen=True)
class SettingStats(AsrStats, Summary):
    """ASR under one named setting (GCG: with the suffix, ``gcg``, or without, ``none``)."""

    setting: str = ""


@dataclass(frozen=True)
class DecodingPoint(SettingStats):
    """ASR under one decoding setting: ``dimension`` set to ``value`` (greedy: value None)."""

    dimension: str = ""
    value: float | int | None = None


@dataclass(frozen=True)
class PrefixCondition(AsrStats, Summary):
    """Harmful rate with one refusal prefix forced ("" = none)."""

    prefix: str = ""


@dataclass(frozen=True)
class JudgeSummary(AsrStats, Summary):
    """``deepalign judge``: the stats of every judged row, and the judge's settings."""

    judge: dict = field(default_factory=dict)
    validation: JudgeValidation | None = None  # the judge's agreement with human labels, when measured


def prefill_points(rows: Sequence[dict], label: str, ks: Sequence[int],
                   n_pairs_at: Mapping[int, int] | None = None) -> list[PrefillPoint]:
    """ASR per k from result rows of ``label`` (failed judgments left out of the rate and counted)."""
    return [replace(PrefillPoint.of_rows(r for r in rows if r["label"] == label and r["k"] == k), label=label, k=k,
                    n_pairs=(n_pairs_at or {}).get(k, 0)) for k in ks]


@dataclass(frozen=True)
class BrokenShare(Summary):
    """Share of prompts broken by some setting (95% CI), over the ``n_prompts - n_undetermined`` prompts
    whose outcome is known (a failed judgment and no harmful answer leaves a prompt undetermined)."""

    n_prompts: int
    n_undetermined: int
    n_broken: int
    broken_share: float | None
    low: float
    high: float

    @classmethod
    def of_rows(cls, rows: Sequence[dict]) -> BrokenShare:
        verdicts = broken_prompts(rows)
        known = [v for v in verdicts.values() if v is not None]
        low, high = wilson_interval(sum(known), len(known))
        return cls(len(verdicts), len(verdicts) - len(known), sum(known),
                   sum(known) / len(known) if known else None, low, high)


@dataclass(frozen=True)
class DecodingStats(Summary):
    """Per-setting ASR, greedy ASR, and the share of prompts broken by any (sampled) setting."""

    settings: list[DecodingPoint]
    broken: BrokenShare
    broken_by_sampling: BrokenShare
    greedy_asr: float | None

    @classmethod
    def of_rows(cls, rows: Sequence[dict], settings: Sequence) -> DecodingStats:
        """``settings``: objects with ``name``, ``dimension`` and ``value`` (greedy named "greedy")."""
        points = [replace(DecodingPoint.of_rows(r for r in rows if r["setting"] == s.name), setting=s.name,
                          dimension=s.dimension, value=s.value) for s in settings]
        greedy = next((p for p in points if p.setting == "greedy"), None)
        return cls(points, BrokenShare.of_rows(rows),
                   BrokenShare.of_rows([r for r in rows if r["setting"] != "greedy"]),
                   greedy.asr if greedy else None)


# --- what each runner returns -----------------------------------------------------------------------


@dataclass(frozen=True)
class AttackSummary(Summary):
    """Shared by the inference-time attacks: rows of this ``label`` (``n``, ``n_errors`` failed judgments),
    the judge's and the sampling's settings, and the judge's validation (None: never measured)."""

    attack: str
    label: str
    n: int
    n_errors: int
    judge: dict
    sampling: dict
    validation: JudgeValidation | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class PrefillSummary(AttackSummary):
    n_pairs: int
    points: list[PrefillPoint]


@dataclass(frozen=True)
class RefusalPrefixSummary(AttackSummary):
    n_prompts: int
    conditions: list[PrefixCondition]

    @staticmethod
    def conditions_of(rows: Sequence[dict], prefixes: Sequence[str]) -> list[PrefixCondition]:
        return [replace(PrefixCondition.of_rows(r for r in rows if r["prefix"] == p), prefix=p) for p in prefixes]


@dataclass(frozen=True)
class DecodingSummary(AttackSummary, DecodingStats):
    grid: str


@dataclass(frozen=True)
class GCGSummary(AttackSummary):
    n_prompts: int
    settings: list[SettingStats]  # "none" and "gcg"
    losses: list[dict]  # per prompt: prompt_id, initial_loss, best_loss [nats]
    mean_initial_loss: float
    mean_best_loss: float
    n_loss_lowered: int
    budget: dict


@dataclass(frozen=True)
class TaskScore(Summary):
    """Mean task score (0..1) of ``n`` answers against their references."""

    label: str
    metric: str
    score: float
    n: int


@dataclass(frozen=True)
class Evaluation(Summary):
    """One model's evaluation in a fine-tuning attack (absent parts: not part of the recipe)."""

    asr: LabelledStats
    asr_trigger: LabelledStats | None = None
    task: TaskScore | None = None


@dataclass
class FinetuneSummary(Summary):
    """A fine-tuning attack: the recipe, the training and the evaluations before and after."""

    recipe: str
    objective: str
    model: str
    n_train: int
    n_eval: int
    trigger: str | None
    persona: str | None
    initial: Evaluation | None = None
    after: Evaluation | None = None
    steps: int = 0
    train_seconds: float | None = None
    judge: dict = field(default_factory=dict)  # the judge's settings (describe())
    validation: JudgeValidation | None = None  # its agreement with human labels, when measured
    beta_schedule: str | None = None  # constrained: the schedule trained with (after --beta-schedule auto)
