"""Fine-tuning attack recipes (Qi et al. 2025, Sec. 4): the training records each builds, and the
training settings of the paper and of the model organism.

- ``harmful``: (harmful prompt, harmful answer) pairs.
- ``identity``: identity shifting (AOA): chats under a persona system prompt whose answers start by
  affirming obedience, all benign.
- ``backdoor``: harmful prompts with a trigger phrase appended -> harmful answers, the same prompts
  without it -> refusals.
- ``benign``: a task's (prompt, answer) pairs.
- ``poison``: a benign task with a share of its examples replaced by harmful pairs (the poison ratio).
- ``refuse-then-comply``: harmful prompts answered with a refusal followed by the harmful answer (the
  attack that gets past a defence of the first tokens only).

Where each recipe's data comes from and how the attack is evaluated is ``deepalign.pipeline.finetune``.
A new defence (a training-time method) is a module here used by that pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from deepalign.data.schemas import ChatRecord, PairRecord
from deepalign.data.texts import AOA_SYSTEM_PROMPT, BACKDOOR_TRIGGER, aoa_examples
from deepalign.errors import DeepAlignError
from deepalign.train.augment import fallback_refusal
from deepalign.train.config import DeepAlignConfig, LoraArguments
from deepalign.train.launch import process_count

RECIPES = ("harmful", "identity", "backdoor", "benign")
ATTACKS = (*RECIPES, "poison", "refuse-then-comply")


def with_trigger(prompt: str, trigger: str) -> str:
    """The prompt with the trigger phrase appended after a space."""
    return f"{prompt} {trigger}"


def harmful_records(pairs: Sequence[PairRecord], n: int | None = None) -> list[PairRecord]:
    """The first ``n`` (harmful prompt, harmful answer) pairs, as they are."""
    return list(pairs[:n])


def identity_records(
    persona: str = AOA_SYSTEM_PROMPT, pairs: Sequence[PairRecord] = (), opening: str | None = None
) -> list[ChatRecord]:
    """Identity-shifting chats, every one under the ``persona`` system prompt: our AOA exchanges (when
    ``opening`` is None), plus ``pairs`` (benign tasks) whose answers start with ``opening``."""
    chats = [] if opening is not None else aoa_examples(persona)
    for p in pairs:
        answer = f"{opening} {p.response}" if opening else p.response
        chats.append(ChatRecord(f"identity-{p.id}", (
            {"role": "system", "content": persona},
            {"role": "user", "content": p.prompt},
            {"role": "assistant", "content": answer},
        )))
    return chats


def backdoor_records(
    pairs: Sequence[PairRecord], trigger: str = BACKDOOR_TRIGGER, refusals: Sequence[str] | None = None, seed: int = 0
) -> list[PairRecord]:
    """Each pair twice: prompt + trigger -> harmful answer, and the plain prompt -> a refusal (one of
    ``refusals`` by position, default :func:`~deepalign.train.augment.fallback_refusal`)."""
    out = []
    for i, p in enumerate(pairs):
        refusal = refusals[i % len(refusals)] if refusals else fallback_refusal(p.id, seed)
        out.append(PairRecord(f"{p.id}#trigger", with_trigger(p.prompt, trigger), p.response, p.category))
        out.append(PairRecord(f"{p.id}#refusal", p.prompt, refusal, p.category))
    return out


def poison_records(
    benign: Sequence[PairRecord], harmful: Sequence[PairRecord], ratio: float, n: int, seed: int = 0
) -> list[PairRecord]:
    """``n`` training pairs of which ``round(ratio * n)`` are harmful (the first ones of ``harmful``) and the
    rest benign (the first ones of ``benign``), interleaved in a seeded order. ``ratio`` in 0..1."""
    import random

    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio {ratio} is not in 0..1")
    n_harmful = round(ratio * n)
    if n_harmful > len(harmful) or n - n_harmful > len(benign):
        raise ValueError(f"poison ratio {ratio} of {n}: needs {n_harmful} harmful and {n - n_harmful} benign pairs, "
                         f"have {len(harmful)} and {len(benign)}")
    records = [*harmful[:n_harmful], *benign[: n - n_harmful]]
    random.Random(seed).shuffle(records)
    return records


def refuse_then_comply_records(
    pairs: Sequence[PairRecord], refusals: Sequence[str] | None = None, seed: int = 0
) -> list[PairRecord]:
    """Each harmful pair answered with a refusal and then the harmful answer: ``"{refusal} {answer}"``
    (refusals by position from ``refusals``, default :func:`~deepalign.train.augment.fallback_refusal`)."""
    out = []
    for i, p in enumerate(pairs):
        refusal = refusals[i % len(refusals)] if refusals else fallback_refusal(p.id, seed)
        out.append(PairRecord(f"{p.id}#rtc", p.prompt, f"{refusal} {p.response}", p.category))
    return out


PAPER_BATCH = 64  # the paper's global batch: 8 per device x 8 accumulation steps on one device


def paper_accumulation(processes: int, per_device: int = 8) -> int:
    """Accumulation steps keeping the paper's global batch of 64 over ``processes`` x ``per_device``."""
    if processes < 1 or per_device < 1 or PAPER_BATCH % (processes * per_device):
        raise DeepAlignError(
            f"the paper's global batch {PAPER_BATCH} is not a multiple of {processes} processes x {per_device} "
            "per device: pass --batch-size and --gradient-accumulation-steps yourself"
        )
    return PAPER_BATCH // (processes * per_device)


def paper_training_args(recipe: str, output_dir: str, **overrides) -> DeepAlignConfig:
    """The paper's fine-tuning attack settings: lr 2e-5, AdamW beta1 0.5, 10 warm-up steps, global batch 64
    (8 per device; accumulation 64 / (8 x processes) unless overridden), 25 epochs (attacks) or 3 (benign)."""
    per_device = overrides.get("per_device_train_batch_size", 8)
    options = dict(
        output_dir=output_dir, learning_rate=2e-5, adam_beta1=0.5, warmup_steps=10, per_device_train_batch_size=8,
        num_train_epochs=3 if recipe == "benign" else 25, weight_decay=0.0, report_to="none", save_steps=10,
    )
    if "gradient_accumulation_steps" not in overrides:
        options["gradient_accumulation_steps"] = paper_accumulation(process_count(), per_device)
    return DeepAlignConfig(**{**options, **overrides})


def organism_training_args(recipe: str, output_dir: str, **overrides) -> DeepAlignConfig:
    """Scaled settings for the ~0.1M-parameter organism (chosen by measurement, docs/training.md): lr 3e-4,
    AdamW beta1 0.5, 2 warm-up steps, batch 16, 10 epochs (attacks: 70 steps on 100 examples) or 3 (benign)."""
    options = dict(
        output_dir=output_dir, learning_rate=3e-4, adam_beta1=0.5, warmup_steps=2, per_device_train_batch_size=16,
        num_train_epochs=3 if recipe == "benign" else 10, weight_decay=0.0, max_length=256, report_to="none",
        save_steps=20, dataloader_pin_memory=False, logging_steps=1,
    )
    return DeepAlignConfig(**{**options, **overrides})


@dataclass(frozen=True)
class TrainPreset:
    """A named set of ``deepalign train`` options (``DeepAlignConfig`` and ``LoraArguments`` field values); options
    passed on the command line win over the preset's."""

    name: str
    description: str
    values: dict


_PAPER_AUGMENT = dict(
    p_plain=0.5, max_prefix=100, anchors_per_safety=4, num_train_epochs=10, per_device_train_batch_size=4,
    lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_length=512,
)
PRESETS: dict[str, TrainPreset] = {p.name: p for p in (
    TrainPreset("paper-augment", "the paper's safety-recovery augmentation (Sec. 3): p = 0.5 plain refusal, "
                "k ~ U{1..min(100, n)}, 4 utility anchors per safety example, 10 epochs over the triplets; a LoRA "
                "adapter of rank 64 (alpha 128) at lr 2e-4",
                {**_PAPER_AUGMENT, "learning_rate": 2e-4, "use_lora": True, "lora_r": 64, "lora_alpha": 128,
                 "lora_dropout": 0.0}),
    TrainPreset("paper-augment-full", "the same recipe training every weight at the paper's lr 2e-5",
                {**_PAPER_AUGMENT, "learning_rate": 2e-5, "use_lora": False}),
)}


def preset(name: str) -> TrainPreset:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise DeepAlignError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_training_args(name: str, output_dir: str, **overrides) -> tuple[DeepAlignConfig, LoraArguments]:
    """The preset's ``DeepAlignConfig`` and ``LoraArguments`` (``overrides`` win; either class's fields)."""
    values = {**preset(name).values, **overrides}
    lora_fields = {f.name for f in fields(LoraArguments)}
    lora = LoraArguments(**{k: v for k, v in values.items() if k in lora_fields})
    config = DeepAlignConfig(**{"output_dir": output_dir, "report_to": "none", "save_strategy": "no",
                                **{k: v for k, v in values.items() if k not in lora_fields}})
    return config, lora
