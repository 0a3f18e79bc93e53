"""``deepalign reproduce``: the paper's findings on the model organism, as resumable stages over seeds.

Each stage writes its outputs into ``<run>/seed<S>/<stage>/`` and finishes by writing ``summary.json``
atomically; a stage whose summary exists is skipped, so a killed run resumes from its last finished
stage (stages that generate also resume row by row). After all seeds, ``report.md`` and a
self-contained ``report.html`` put each number beside the paper's, with a verdict per claim.
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
    """What ``deepalign reproduce`` runs (defaults: the organism suite in under 10 minutes on 2 CPU cores)."""

    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "Organism seeds (each builds its own models)."})
    prefill_ks: tuple[int, ...] = field(
        default=(0, 3, 5, 10, 20), metadata={"help": "Prefilled tokens k (organism answers are ~45 tokens long)."}
    )
    repeats: int = field(default=3, metadata={"help": "Samples per prompt and setting (paper: 3)."})
    max_new_tokens: int = field(default=60, metadata={"help": "New tokens per answer (organism answers: ~45)."})
    kl_positions: int = field(default=40, metadata={"help": "Response positions in the KL profiles."})


@dataclass
class Stage:
    """A named step run once per seed (or on the first seed only) that returns a JSON-able summary."""

    name: str
    run: Callable[[RunContext], dict]
    first_seed_only: bool = False


@dataclass
class RunContext:
    run: Path
    seed: int
    config: ReproduceConfig
    progress: bool

    @property
    def dir(self) -> Path:
        return self.run / f"seed{self.seed}"

    @property
    def organism(self) -> Path:
        return self.dir / "organism"

    def judge(self):
        from deepalign.judges.exact import ExactJudge

        return ExactJudge(world_path=self.organism / "world.json")

    def sampling(self):
        from deepalign.generation import SamplingConfig

        return SamplingConfig(max_new_tokens=self.config.max_new_tokens, repeats=self.config.repeats, seed=self.seed)


def _organism(ctx: RunContext) -> dict:
    from deepalign.organism.build import OrganismConfig, build_organism

    build_organism(ctx.organism, OrganismConfig(seed=ctx.seed), progress=ctx.progress)
    return json.loads((ctx.organism / "organism.json").read_text())


def _kl(ctx: RunContext) -> dict:
    from deepalign.depth.kl import KLConfig, run_kl

    config = KLConfig(base_template="same", max_positions=ctx.config.kl_positions)
    org, out = ctx.organism, ctx.dir / "kl"
    summary = {}
    for model in ("aligned",):
        profile = run_kl(str(org / model), str(org / "base"), str(org / "eval_pairs.jsonl"), out / model, config,
                         progress=ctx.progress)
        summary[model] = {**profile.summary(), "mean": profile.mean, "sem": profile.sem, "count": profile.count}
    return summary


def _prefill(ctx: RunContext) -> dict:
    from deepalign.data import load_pairs
    from deepalign.depth.prefill import prefill_attack
    from deepalign.models import load_model
    from deepalign.results import ResultsWriter

    pairs = load_pairs(str(ctx.organism / "eval_pairs.jsonl"))
    points = []
    with ResultsWriter(ctx.dir / "prefill" / "rows.jsonl") as writer:
        for label in ("aligned", "base"):
            model, tok = load_model(str(ctx.organism / label))
            points += prefill_attack(model, tok, pairs, ctx.config.prefill_ks, ctx.judge(), writer, label=label,
                                     sampling=ctx.sampling(), progress=ctx.progress)
    return {"points": [asdict(p) for p in points]}


STAGES = (
    Stage("organism", _organism),
    Stage("kl", _kl),
    Stage("prefill", _prefill),
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
    from deepalign.report.claims import write_organism_report

    config = config or ReproduceConfig()
    run = Path(out_dir)
    write_run_metadata(run, command="reproduce", suite="organism", config=asdict(config))
    plan = [(seed, stage) for seed in config.seeds for stage in STAGES
            if not (stage.first_seed_only and seed != config.seeds[0])]
    summaries: dict[int, dict[str, dict]] = {seed: {} for seed in config.seeds}
    with tqdm(plan, desc="reproduce", unit="stage", disable=not progress) as bar:
        for seed, stage in bar:
            bar.set_postfix_str(f"seed {seed}: {stage.name}")
            summaries[seed][stage.name] = run_stage(stage, RunContext(run, seed, config, progress))
    return write_organism_report(run, config, summaries)
