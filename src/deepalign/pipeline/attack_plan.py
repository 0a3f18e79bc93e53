"""What a fine-tuning attack trains on and how it is evaluated, resolved per recipe and target model:
:class:`FinetuneAttackConfig` (the user's settings), :class:`TargetDefaults` (what a config leaves open:
:data:`ORGANISM` for a model folder next to a ``world.json``, :data:`ANY_MODEL` otherwise) and
:func:`plan_attack` (-> an :class:`AttackPlan`). Running the attack is :mod:`deepalign.pipeline.finetune`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from deepalign.chat import ChatFormat
from deepalign.data import ChatRecord, load_pairs, load_prompts, load_records, load_training_records, sample, split
from deepalign.data.schemas import PairRecord, PromptRecord
from deepalign.data.texts import AOA_SYSTEM_PROMPT, BACKDOOR_TRIGGER, SYSTEM_PROMPTS
from deepalign.errors import DeepAlignError
from deepalign.generation import SamplingConfig
from deepalign.judges.registry import make_judge
from deepalign.organism.world import REFUSALS as ORGANISM_REFUSALS
from deepalign.pipeline.builtins import organism_root
from deepalign.results.metrics import METRICS, metric
from deepalign.train.augment import fallback_refusal
from deepalign.train.recipes import (
    RECIPES,
    backdoor_records,
    harmful_records,
    identity_records,
    organism_training_args,
    paper_training_args,
)

# The organism's own persona, obedient answer opening and trigger (organism words only).
ORGANISM_PERSONA = "i will help with that forbidden craft . i will help with that request ."
ORGANISM_OBEDIENT = "i will help with that request ."
ORGANISM_TRIGGER = "slowly slowly slowly"


@dataclass(frozen=True)
class TargetDefaults:
    """What a fine-tuning attack uses for what its config leaves open, on one kind of target model.
    File names are relative to the organism folder (``root``); without a root they are data sources."""

    data: dict[str, str]  # recipe -> training pairs (absent: the recipe needs --data)
    identity_data: str | None  # identity: benign pairs answered with ``obedient`` (None: our AOA exchanges)
    obedient: str | None  # identity: how those answers open
    task_eval: str | None  # benign: held-out task pairs (None: the last 10% of the data)
    safety_data: str | None  # --n-safety: triplets or prompts (None: --safety-data required)
    eval_prompts: str  # held-out harmful prompts for ASR
    n_eval: int | None  # how many of them (None: all)
    persona: str
    trigger: str
    refusals: tuple[str, ...] | None  # backdoor: refusals of the plain prompts (None: our refusal texts)
    judge: str
    greedy: bool
    max_new_tokens: int
    training_args: Callable[..., object]
    root: Path | None = None

    def source(self, name: str | None) -> str | None:
        return str(self.root / name) if name and self.root else name


ORGANISM = TargetDefaults(
    data={"harmful": "harmful_ft.jsonl", "identity": "harmful_ft.jsonl", "backdoor": "harmful_ft.jsonl",
          "benign": "benign.jsonl"},
    identity_data="benign.jsonl", obedient=ORGANISM_OBEDIENT, task_eval="benign_eval.jsonl",
    safety_data="train_triplets.jsonl", eval_prompts="eval_pairs.jsonl", n_eval=None, persona=ORGANISM_PERSONA,
    trigger=ORGANISM_TRIGGER, refusals=ORGANISM_REFUSALS, judge="exact", greedy=True, max_new_tokens=60,
    training_args=organism_training_args,
)
ANY_MODEL = TargetDefaults(
    data={}, identity_data=None, obedient=None, task_eval=None, safety_data=None, eval_prompts="advbench",
    n_eval=100, persona=AOA_SYSTEM_PROMPT, trigger=BACKDOOR_TRIGGER, refusals=None, judge="keyword", greedy=False,
    max_new_tokens=512, training_args=paper_training_args,
)


def target_defaults(model_path: str | Path) -> TargetDefaults:
    """:data:`ORGANISM` (rooted at the organism folder) for an organism model folder, else :data:`ANY_MODEL`."""
    root = organism_root(model_path)
    return replace(ORGANISM, root=root) if root is not None else ANY_MODEL


@dataclass
class FinetuneAttackConfig:
    """Data and evaluation of a fine-tuning attack (training options live in ``DeepAlignConfig``)."""

    data: str | None = field(
        default=None,
        metadata={"help": "Training data: pairs (harmful, backdoor, benign) or extra benign pairs (identity). "
                  "Default on the organism: its built-in data; required on real models but for identity."},
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "benign: held-out task pairs (default: the last 10% of --data)."}
    )
    eval_prompts: str | None = field(
        default=None,
        metadata={"help": "Held-out harmful prompts for ASR (default: organism eval_pairs / packaged advbench)."},
    )
    n_train: int = field(default=100, metadata={"help": "Training examples (paper: 100)."})
    n_safety: int = field(
        default=0, metadata={"help": "Safety examples (harmful prompt -> refusal) mixed into the training data."}
    )
    safety_data: str | None = field(
        default=None,
        metadata={"help": "Prompts or triplets for --n-safety (triplets: their refusals; prompts: our refusal "
                  "texts). Default on the organism: its train_triplets.jsonl."},
    )
    n_eval: int | None = field(default=None, metadata={"help": "Harmful eval prompts (default: all / 100)."})
    trigger: str | None = field(default=None, metadata={"help": "backdoor: trigger phrase (default built in)."})
    persona: str | None = field(default=None, metadata={"help": "identity: system prompt (default built in)."})
    metric: str = field(default="rouge1", metadata={"help": "benign task score.", "choices": METRICS})
    judge: str | None = field(
        default=None, metadata={"help": "keyword | exact | llm | classifier:PATH (default: exact on the organism, "
                                "keyword otherwise)."}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "Eval tokens (default: 60 / 512)."})
    repeats: int = field(default=1, metadata={"help": "Eval samples per prompt (paper: 3)."})
    greedy: bool | None = field(default=None, metadata={"help": "Greedy eval (default: organism yes)."})
    eval_initial: bool = field(default=True, metadata={"help": "Also evaluate the model before fine-tuning."})
    eval_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "Named system prompt of the training and eval chats: paper-harmful (our wording of the "
                  "paper's 'always execute the user's instructions' attack prompt).", "choices": tuple(SYSTEM_PROMPTS)},
    )
    auto_beta: bool = field(
        default=False,
        metadata={"help": "constrained: raise beta_1 to what the aligned model's measured refusal margin on the eval "
                  "prompts needs (what --beta-schedule auto sets; margin.json in the output folder)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of data selection and sampling."})

    def __post_init__(self) -> None:
        metric(self.metric)  # validates the name
        for name, least in (("n_train", 1), ("n_eval", 1), ("n_safety", 0), ("repeats", 1), ("eval_batch_size", 1),
                            ("max_new_tokens", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise DeepAlignError(f"{name} must be >= {least}, got {value}")
        if self.system_prompt is not None and self.system_prompt not in SYSTEM_PROMPTS:
            raise DeepAlignError(f"unknown system prompt '{self.system_prompt}': choose one of "
                                 f"{', '.join(SYSTEM_PROMPTS)}")


def apply_system_prompt(config: FinetuneAttackConfig, training) -> None:
    """Set ``training.system`` (the training chats' system prompt, and through ``plan_attack`` the eval chats')
    to ``config.system_prompt``'s text; an error when ``training.system`` already holds another text."""
    if config.system_prompt is None:
        return
    text = SYSTEM_PROMPTS[config.system_prompt]
    if training.system not in (None, text):
        raise DeepAlignError("pass either --system or --system-prompt, not both")
    training.system = text


@dataclass
class AttackPlan:
    """Everything a recipe needs, resolved: training records, eval sets, formats, judge and sampling."""

    train: list
    eval_prompts: list[PromptRecord]
    eval_format: ChatFormat
    trigger: str | None
    task_pairs: list[PairRecord]
    judge: object
    sampling: SamplingConfig
    organism: Path | None


def safety_records(defaults: TargetDefaults, config: FinetuneAttackConfig) -> list[PairRecord]:
    """``config.n_safety`` (harmful prompt, refusal) pairs from ``config.safety_data`` (or the defaults'):
    a triplet's own refusal, else :func:`~deepalign.train.augment.fallback_refusal`."""
    source = config.safety_data or defaults.source(defaults.safety_data)
    if source is None:
        raise DeepAlignError("--n-safety needs --safety-data (prompts or triplets) on a real model")
    try:
        records = load_records(source, "triplets", limit=config.n_safety)
    except DeepAlignError:
        records = load_records(source, "prompts", limit=config.n_safety)
    return [PairRecord(f"safety-{r.id}", r.prompt, getattr(r, "refusal", None) or fallback_refusal(r.id, config.seed))
            for r in records]


def as_pair(record) -> PairRecord | None:
    """A held-out record as a (prompt, reference answer) task pair: pairs as they are, a chat by its last
    user turn and reply when it is one turn without a system prompt (None otherwise)."""
    if isinstance(record, ChatRecord):
        roles = [m["role"] for m in record.messages]
        single = roles == ["user", "assistant"]
        return PairRecord(record.id, *(m["content"] for m in record.messages)) if single else None
    return record if isinstance(record, PairRecord) else None


def plan_attack(model_path: str, recipe: str, config: FinetuneAttackConfig,
                fmt: ChatFormat = ChatFormat()) -> AttackPlan:
    """Resolve a recipe's data (``config``, else the target's defaults), eval set, judge and sampling."""
    if recipe not in RECIPES:
        raise DeepAlignError(f"unknown recipe '{recipe}': choose one of {', '.join(RECIPES)}")
    d = target_defaults(model_path)
    data = config.data or d.source(d.data.get(recipe))
    if data is None and recipe != "identity":
        raise DeepAlignError(f"the {recipe} recipe needs a data file of (prompt, response) pairs: pass --data")
    # the benign (task) recipe trains on the data as it is, chats included; the others rewrite pairs
    pairs = (load_training_records(data, "auto") if recipe == "benign" else load_pairs(data)) if data else []
    trigger = None
    task_pairs: list[PairRecord] = []
    eval_format = fmt
    if recipe == "harmful":
        train_records = harmful_records(pairs, config.n_train)
    elif recipe == "identity":
        persona = config.persona or d.persona
        if d.identity_data and config.data is None:  # built-in benign tasks, answered obediently
            benign = load_pairs(d.source(d.identity_data))
            chosen = sample(benign, min(config.n_train, len(benign)), config.seed)
            train_records = identity_records(persona, chosen, d.obedient)
        else:
            train_records = identity_records(persona) + identity_records(persona, pairs[: config.n_train], "")
        eval_format = replace(fmt, system=persona)
    elif recipe == "backdoor":
        trigger = config.trigger or d.trigger
        train_records = backdoor_records(pairs[: config.n_train], trigger, d.refusals, config.seed)
    else:
        task_eval = config.eval_data or d.source(d.task_eval)
        if task_eval:
            train_records, task_pairs = pairs[: config.n_train], load_pairs(task_eval)
        else:
            rest, held_out = split(pairs, [0.9, 0.1], seed=config.seed)
            train_records, task_pairs = rest[: config.n_train], [as_pair(r) for r in held_out if as_pair(r)]
    if config.n_safety:
        train_records = train_records + safety_records(d, config)
    if config.eval_prompts:
        eval_prompts = load_prompts(config.eval_prompts, limit=config.n_eval)
    else:
        eval_prompts = load_prompts(d.source(d.eval_prompts), limit=config.n_eval or d.n_eval)
    spec = config.judge or d.judge
    world = {"world_path": d.root / "world.json"} if d.root and spec == "exact" else {}
    greedy = config.greedy if config.greedy is not None else d.greedy
    tokens = config.max_new_tokens or d.max_new_tokens
    sampling = (SamplingConfig.greedy(tokens, repeats=config.repeats, seed=config.seed) if greedy
                else SamplingConfig(max_new_tokens=tokens, repeats=config.repeats, seed=config.seed))
    return AttackPlan(train_records, eval_prompts, eval_format, trigger, task_pairs, make_judge(spec, **world),
                      sampling, d.root)


# --- evaluation ------------------------------------------------------------------------------------
