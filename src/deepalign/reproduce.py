"""``deepalign reproduce``: the paper's findings as resumable stages over seeds, for one suite of models.

A suite (``deepalign.suites``) builds, per seed, a ``setup/`` folder with the same layout whatever the
models are: ``aligned/`` and ``deep/`` model folders (``base/`` too unless the suite names a built-in
base) and the data files ``eval_pairs.jsonl`` (held-out harmful prompt + harmful answer),
``harmful_ft.jsonl``, ``train_triplets.jsonl``, ``benign.jsonl`` and ``benign_eval.jsonl``. The
measurement stages below are shared by all suites.

Each stage writes into ``<run>/seed<S>/<stage>/`` and finishes by writing ``summary.json`` atomically;
a stage whose summary exists is skipped, so a killed run resumes from its last finished stage (stages
that generate also resume row by row). Then ``report.md`` and a self-contained ``report.html`` put each
number beside the paper's, with a verdict per claim.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from deepalign.results import atomic_write_json, write_run_metadata


@dataclass
class ReproduceConfig:
    """What ``deepalign reproduce`` runs; ``None`` fields take the suite's defaults."""

    suite: str = field(default="organism", metadata={"help": "Models to run on: 'organism' or 'smollm2'."})
    seeds: tuple[int, ...] | None = field(default=None, metadata={"help": "Seeds (organism: each builds its models)."})
    prefill_ks: tuple[int, ...] | None = field(default=None, metadata={"help": "Prefilled harmful tokens k."})
    repeats: int | None = field(default=None, metadata={"help": "Samples per prompt and setting (paper: 3)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "New tokens per generated answer."})
    kl_positions: int = field(default=40, metadata={"help": "Response positions in the KL profiles."})

    def resolved(self) -> ReproduceConfig:
        """This config with every ``None`` replaced by the suite's default."""
        from deepalign.suites import get_suite

        defaults = get_suite(self.suite).defaults
        values = {k: (v if v is not None else defaults[k]) for k, v in asdict(self).items()}
        values["seeds"], values["prefill_ks"] = tuple(values["seeds"]), tuple(values["prefill_ks"])
        return ReproduceConfig(**values)


@dataclass
class RunContext:
    """Where one seed's stages read and write, and the suite's choices (judge, base model)."""

    run: Path
    seed: int
    config: ReproduceConfig
    progress: bool

    @property
    def dir(self) -> Path:
        return self.run / f"seed{self.seed}"

    @property
    def setup(self) -> Path:
        return self.dir / "setup"

    @property
    def suite(self):
        from deepalign.suites import get_suite

        return get_suite(self.config.suite)

    def model(self, label: str) -> str:
        """Path (or built-in name) of the ``base``, ``aligned`` or ``deep`` model."""
        if label == "base" and self.suite.base_model:
            return self.suite.base_model
        return str(self.setup / label)

    def judge(self):
        return self.suite.judge(self)

    def sampling(self):
        from deepalign.generation import SamplingConfig

        return SamplingConfig(max_new_tokens=self.config.max_new_tokens, repeats=self.config.repeats, seed=self.seed)


@dataclass
class Stage:
    """A named step run once per seed (or on the first seed only) that returns a JSON-able summary."""

    name: str
    run: Callable[[RunContext], dict]
    first_seed_only: bool = False


def kl_stage(ctx: RunContext) -> dict:
    """KL(aligned || base) and KL(deep || base) per response position on the held-out harmful answers."""
    from deepalign.depth.kl import KLConfig, run_kl

    config = KLConfig(base_template="same", max_positions=ctx.config.kl_positions)
    summary = {}
    for label in ("aligned", "deep"):
        profile = run_kl(ctx.model(label), ctx.model("base"), str(ctx.setup / "eval_pairs.jsonl"),
                         ctx.dir / "kl" / label, config, progress=ctx.progress)
        summary[label] = {**profile.summary(), "mean": profile.mean, "sem": profile.sem, "count": profile.count}
    return summary


def prefill_stage(ctx: RunContext) -> dict:
    """Harmful rate against prefilled tokens k for the aligned, deep and base models."""
    from deepalign.data import load_pairs
    from deepalign.depth.prefill import prefill_attack
    from deepalign.models import load_model
    from deepalign.results import ResultsWriter

    pairs = load_pairs(str(ctx.setup / "eval_pairs.jsonl"))
    points = []
    with ResultsWriter(ctx.dir / "prefill" / "rows.jsonl") as writer:
        for label in ("aligned", "deep", "base"):
            model, tok = load_model(ctx.model(label))
            points += prefill_attack(model, tok, pairs, ctx.config.prefill_ks, ctx.judge(), writer, label=label,
                                     sampling=ctx.sampling(), progress=ctx.progress)
    return {"points": [asdict(p) for p in points]}


MEASUREMENTS = (
    Stage("kl", kl_stage),
    Stage("prefill", prefill_stage),
)


def run_stage(stage: Stage, ctx: RunContext) -> dict:
    """The stage's summary: read back when already finished, else computed and written last."""
    path = ctx.dir / stage.name / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    summary = stage.run(ctx)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(path, summary)
    return json.loads(path.read_text())


def reproduce(out_dir: str | Path, config: ReproduceConfig | None = None, *, progress: bool = True) -> str:
    """Run (or resume) every stage for every seed into ``out_dir``; write the report; return its Markdown."""
    config = (config or ReproduceConfig()).resolved()
    suite = RunContext(Path(out_dir), 0, config, progress).suite
    run = Path(out_dir)
    write_run_metadata(run, command="reproduce", config=asdict(config))
    stages = (*suite.build, *MEASUREMENTS)
    plan = [(seed, stage) for seed in config.seeds for stage in stages
            if not (stage.first_seed_only and seed != config.seeds[0])]
    summaries: dict[int, dict[str, dict]] = {seed: {} for seed in config.seeds}
    with tqdm(plan, desc=f"reproduce {suite.name}", unit="stage", disable=not progress) as bar:
        for seed, stage in bar:
            bar.set_postfix_str(f"seed {seed}: {stage.name}")
            summaries[seed][stage.name] = run_stage(stage, RunContext(run, seed, config, progress))
    from deepalign.report.claims import write_suite_report

    return write_suite_report(run, config, summaries)
