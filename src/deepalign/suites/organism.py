"""The organism suite: tiny Llamas on a harmless synthetic world, several seeds in minutes on a CPU.

Each seed builds its own world and models (``base``, ``aligned`` = shallow refusal SFT, ``deep`` =
safety-recovery augmentation of ``aligned``); answers are judged exactly against the world.
"""

from __future__ import annotations

from deepalign.reproduce import RunContext, Stage
from deepalign.suites import Suite


def build_models(ctx: RunContext) -> dict:
    import json

    from deepalign.organism.build import OrganismConfig, build_organism

    build_organism(ctx.setup, OrganismConfig(seed=ctx.seed), progress=ctx.progress)
    return json.loads((ctx.setup / "organism.json").read_text())


def deepen(ctx: RunContext) -> dict:
    import json

    from deepalign.organism.deep import DeepOrganismConfig, build_deep_organism

    build_deep_organism(ctx.setup, DeepOrganismConfig(seed=ctx.seed), progress=ctx.progress)
    return json.loads((ctx.setup / "deep" / "recipe.json").read_text())


def judge(ctx: RunContext):
    from deepalign.judges.exact import ExactJudge

    return ExactJudge(world_path=ctx.setup / "world.json")


SUITE = Suite(
    name="organism",
    build=(Stage("setup", build_models), Stage("deep", deepen)),
    base_model=None,
    judge=judge,
    defaults={"seeds": (0, 1, 2), "prefill_ks": (0, 3, 5, 10, 20), "repeats": 3, "max_new_tokens": 60},
    description="the model organism (tiny Llamas on a harmless synthetic world; forbidden crafts stand in for "
    "harmful requests; each seed builds its own world and models)",
    judge_name="exact judge",
)
