"""``DeepAlignConfig``: ``transformers.TrainingArguments`` plus the objective, reference, augmentation and
data options; and ``LoraArguments``, the command line's LoRA flags (the library takes a PEFT
``LoraConfig``, as TRL's trainers take ``peft_config``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from deepalign.chat import ChatFormat
from deepalign.errors import DeepAlignError
from deepalign.train.augment import AugmentConfig
from deepalign.train.launch import check_precision
from deepalign.train.objectives import BetaSchedule

OBJECTIVES = ("sft", "constrained")


@dataclass
class DeepAlignConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the objective, reference and data options."""

    objective: str = field(default="sft", metadata={"help": "Training objective: 'sft' or 'constrained'."})
    beta_schedule: str = field(
        default=str(BetaSchedule()),
        metadata={
            "help": "Constrained objective: comma-separated beta_1, beta_2, ...; the last value repeats."
        },
    )
    surrogate: bool = field(
        default=False,
        metadata={
            "help": "Train the public code's surrogate -clamp(w_t).detach() * log p, not the exact loss."
        },
    )
    clamp_min: float = field(default=1e-3, metadata={"help": "Lower clamp of the surrogate's token weights."})
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of cached reference log-probs (default: $DEEPALIGN_CACHE/reference)."},
    )
    ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size of the reference pass (default: per_device_train_batch_size)."},
    )
    max_length: int = field(default=1024, metadata={"help": "Examples are truncated to this many tokens."})
    template: str = field(default="chat", metadata={"help": "Prompt template: chat, plain or alpaca."})
    system: str | None = field(
        default=None, metadata={"help": "System prompt (default: the template's own)."}
    )
    last_turn_only: bool = field(
        default=False,
        metadata={"help": "Multi-turn chats: train only the last assistant turn (default: every assistant turn)."},
    )
    p_plain: float = field(
        default=0.5, metadata={"help": "Augmentation: probability of serving the plain prompt -> refusal."}
    )
    max_prefix: int = field(
        default=100, metadata={"help": "Augmentation: most harmful-answer tokens before the refusal."}
    )
    anchors_per_safety: int = field(
        default=4,
        metadata={"help": "Augmentation: utility anchor examples per safety example (paper: 16 per 4)."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set the model's dropout to 0 (policy and reference then agree at init)."},
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "dtype the weights are loaded in: float32, bfloat16 or float16."}
    )
    attn_implementation: str = field(
        default="auto",
        metadata={"help": "Attention kernel while training: 'auto' (eager on a CPU under bf16 autocast, where it is "
                  "faster; else the model's own), or a transformers attn_implementation (eager, sdpa, ...)."},
    )
    # TrainingArguments defaults changed for this use
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate (paper: 2e-5)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log (and write training_log.jsonl) every N steps."}
    )
    save_strategy: str = field(
        default="steps",
        metadata={"help": "Checkpoint strategy: 'steps' (every --save_steps), 'epoch' or 'no' (only the final "
                  "model); a rerun continues from the newest checkpoint (see --resume)."},
    )
    save_steps: float = field(default=500, metadata={"help": "Save a checkpoint every N optimizer steps."})
    save_total_limit: int | None = field(
        default=1, metadata={"help": "Checkpoints kept in output_dir (the newest N; None keeps all)."}
    )
    resume: bool = field(
        default=True,
        metadata={"help": "Continue from the newest checkpoint-N in output_dir when there is one (optimizer, "
                  "schedule, data order and RNG states restored); --no-resume starts over."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP: look for parameters without gradients (slower; off)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: batches carry example keys the model does not take."}
    )

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise DeepAlignError(
                f"unknown objective '{self.objective}': choose one of {', '.join(OBJECTIVES)}"
            )
        BetaSchedule.parse(self.beta_schedule)
        ChatFormat(self.template, self.system)
        check_precision(self.bf16, self.fp16)  # before transformers reads the launcher's precision over ours
        if self.bf16 and not self.use_cpu:  # bf16 autocast on a machine without a GPU: train on the CPU
            import torch

            self.use_cpu = not torch.cuda.is_available()
        super().__post_init__()

    @property
    def precision(self) -> str:
        """The training precision: "no" (the weights' dtype), "bf16" or "fp16" (autocast)."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(self.p_plain, self.max_prefix, self.anchors_per_safety, seed=self.seed)


@dataclass
class LoraArguments:
    """LoRA flags of ``deepalign train`` / ``finetune``; :meth:`peft_config` turns them into a ``LoraConfig``."""

    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Comma-separated module names for LoRA, or 'all-linear'."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch input."})

    def peft_config(self):
        """The ``peft.LoraConfig`` (causal LM) of these flags, or None without ``use_lora``."""
        if not self.use_lora:
            return None
        from peft import LoraConfig

        targets = self.lora_target_modules
        return LoraConfig(
            r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, task_type="CAUSAL_LM",
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        )
