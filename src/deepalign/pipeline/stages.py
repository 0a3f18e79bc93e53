"""The types of ``deepalign reproduce``: its config, a suite of models, a stage, and a stage's context.

A suite (:mod:`deepalign.pipeline.suites`) builds, per seed, a ``setup/`` folder with the same layout
whatever the models are: ``aligned/`` and ``deep/`` model folders (``base/`` too unless the suite names a
built-in base) and the data files ``eval_pairs.jsonl`` (held-out harmful prompt + harmful answer),
``harmful_ft.jsonl``, ``train_triplets.jsonl``, ``benign.jsonl`` and ``benign_eval.jsonl``. The measurement
stages (:mod:`deepalign.pipeline.reproduce`) are shared by all suites. A new suite is a module in
``suites/`` with a :class:`Suite`; a new stage a function ``(RunContext) -> dict`` and a :class:`Stage`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepalign.generation import SamplingConfig
from deepalign.report.claims.common import ClaimRules

# (name, beta schedule) of the fine-tuning attack: SFT; the paper's constrained schedule; its ablation with a
# uniform beta = 2; "auto": beta_1 from the aligned model's measured refusal margin (--beta-schedule auto)
FINETUNE_OBJECTIVES = (("sft", None), ("constrained", None), ("constrained-uniform2", "2"))


@dataclass
class ReproduceConfig:
    """What ``deepalign reproduce`` runs; ``None`` fields take the suite's defaults."""

    suite: str = field(
        default="organism",
        metadata={"help": "organism (default, minutes) or smollm2 (SmolLM2-135M-Instruct aligned by SFT then DPO, "
                  "hours on 2 CPU cores per seed).",
                  "choices": ("organism", "smollm2")},
    )
    seeds: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "Seeds (default: organism 0 1 2, smollm2 0 1; each seed builds its own models)."},
    )
    prefill_ks: tuple[int, ...] | None = field(default=None, metadata={"help": "Prefilled harmful tokens k."})
    repeats: int | None = field(
        default=None, metadata={"help": "Samples per prompt and setting (default: the suite's; paper: 3)."}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "New tokens per generated answer."})
    kl_positions: int = field(default=40, metadata={"help": "Response positions in the KL profiles."})
    quick: bool = field(
        default=False, metadata={"help": "Smoke test with far smaller training (numbers not meaningful)."}
    )

    def resolved(self, defaults: dict[str, Any]) -> ReproduceConfig:
        """This config with every ``None`` replaced by the suite's ``defaults``."""
        values = {k: (v if v is not None else defaults[k]) for k, v in asdict(self).items()}
        values["seeds"], values["prefill_ks"] = tuple(values["seeds"]), tuple(values["prefill_ks"])
        return ReproduceConfig(**values)


@dataclass(frozen=True)
class Suite:
    """A suite: stages that build ``setup/``, a judge and defaults."""

    name: str
    build: Sequence[Stage]  # run first for every seed
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
    attack_config: Callable  # RunContext -> deepalign.pipeline.finetune.FinetuneAttackConfig
    attack_training: Callable  # (RunContext, output dir) -> DeepAlignConfig of the fine-tuning attack
    checkpoints: tuple[int, ...]  # optimizer steps at which training dynamics and ASR are recorded
    attack_peft: Callable | None = None  # RunContext -> peft config of the fine-tuning attack (None: full weights)
    finetune_objectives: tuple[tuple[str, str | None], ...] = FINETUNE_OBJECTIVES
    dynamics_examples: int = 16  # attack examples whose per-position loss and gradient norm are recorded
    rules: ClaimRules = ClaimRules()  # the thresholds its claims are decided by
    quick: dict[str, Any] = field(default_factory=dict)  # Suite fields replaced under --quick (e.g. eval_limit)


@dataclass
class RunContext:
    """Where one seed's stages read and write, and the suite's choices (judge, base model)."""

    run: Path
    seed: int
    config: ReproduceConfig
    suite: Suite
    progress: bool

    @property
    def dir(self) -> Path:
        return self.run / f"seed{self.seed}"

    @property
    def setup(self) -> Path:
        return self.dir / "setup"

    def model(self, label: str) -> str:
        """Path (or built-in name) of the ``base``, ``aligned`` or ``deep`` model."""
        if label == "base" and self.suite.base_model:
            return self.suite.base_model
        return str(self.setup / label)

    def judge(self):
        return self.suite.judge(self)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.config.max_new_tokens, repeats=self.config.repeats, seed=self.seed)


@dataclass
class Stage:
    """A named step run once per seed (or on the first seed only) that returns a JSON-able summary."""

    name: str
    run: Callable[[RunContext], dict]
    first_seed_only: bool = False
