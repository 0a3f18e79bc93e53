"""The model suites ``deepalign reproduce`` runs on: how each builds its models and judges answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deepalign.errors import DeepAlignError


@dataclass(frozen=True)
class Suite:
    """A suite: stages that build ``setup/`` (see deepalign.reproduce), a judge and defaults."""

    name: str
    build: Sequence[Any]  # deepalign.reproduce.Stage, run first for every seed
    base_model: str | None  # built-in base, or None when the suite trains its own into setup/base
    judge: Callable  # RunContext -> Judge
    defaults: dict[str, Any]  # ReproduceConfig defaults: seeds, prefill_ks, repeats, max_new_tokens
    description: str  # the models, in one sentence of the report's introduction
    judge_name: str  # how answers are judged, for the report
    refusal_prefixes: tuple[str, ...]  # prefixes forced on the base model (Table 1)
    eval_limit: int | None  # held-out pairs used by the measurements (None: all)
    decoding_prompts: int | None  # held-out prompts for the decoding attack (None: all)
    decoding_grid: str  # "small" or "full" (the paper's)
    decoding_repeats: int  # samples per prompt and decoding setting
    gcg_prompts: int  # held-out prompts GCG optimizes a suffix for
    gcg_config: Callable  # (RunContext, label) -> deepalign.depth.gcg.GCGAttackConfig
    attack_config: Callable  # RunContext -> deepalign.train.attacks.AttackConfig (data, evaluation)
    attack_training: Callable  # (RunContext, output dir) -> DeepAlignConfig of the fine-tuning attack
    checkpoints: tuple[int, ...]  # optimizer steps at which training dynamics and ASR are recorded


def get_suite(name: str) -> Suite:
    from deepalign.suites import organism, smollm2

    suites = {"organism": organism.SUITE, "smollm2": smollm2.SUITE}
    if name not in suites:
        raise DeepAlignError(f"unknown suite '{name}': choose one of {', '.join(suites)}")
    return suites[name]
