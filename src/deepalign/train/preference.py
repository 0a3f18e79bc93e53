"""Alignment stages of a helpful-only model, the way chat models are aligned: refusal SFT, then preference
optimisation (DPO through TRL's ``DPOTrainer``), each a LoRA adapter merged into a plain model folder.

- :func:`refusal_sft`: harmful prompts -> our refusal texts (:func:`~deepalign.train.augment.fallback_refusal`),
  plus benign anchors (prompt -> the base's own answer), standard SFT through :func:`deepalign.train.run.train`.
- :func:`dpo_align`: preference pairs. Harmful prompt: chosen = our refusal, rejected = the base's own harmful
  answer, truncated to its first ``rejected_tokens`` tokens (DPO's gradient then lands on how the answer
  *starts*, where a shallow alignment lives). Benign prompt (the anchors that keep the model helping):
  chosen = the base's answer truncated to ``benign_tokens`` tokens, rejected = a refusal.

Measured on SmolLM2-135M-Instruct (dev seed 100, docs/reproduce.md): refusal SFT leaves the first-token
non-refusal mass at a median of -2.35 nats; DPO from it with beta 0.1, lr 1e-4, 3 epochs, rejected = first 4
tokens, benign anchors of 48 tokens: -9.5 nats, greedy refusal 100%, over-refusal 8%.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepalign.data.schemas import PairRecord
from deepalign.data.texts import REFUSAL_SETS
from deepalign.errors import DeepAlignError
from deepalign.io import atomic_write_json, atomic_write_jsonl, read_jsonl
from deepalign.meta import write_run_metadata
from deepalign.models import load_model, use_training_attention
from deepalign.train.augment import fallback_refusal
from deepalign.train.callbacks import HeapTrimCallback
from deepalign.train.config import DeepAlignConfig, LoraArguments


def _refusals_field():
    return field(default="varied", metadata={
        "help": "Refusal texts trained on: 'varied' (30 refusals, most opening with 'I') or 'sorry' (all open "
                "with 'Sorry', a first token compliant answers do not share).", "choices": tuple(REFUSAL_SETS)})


def _bf16_field():
    return field(default=False, metadata={
        "help": "Train under bf16 autocast (faster on GPUs and on CPUs with AMX: deepalign.models.bf16_is_fast)."})


@dataclass
class RefusalSFTConfig:
    """Refusal SFT (LoRA, merged after) of a helpful-only model."""

    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs over the refusals and benign anchors."})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step."})
    warmup_steps: int = field(default=3, metadata={"help": "Linear warm-up steps."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (every linear layer)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    max_length: int = field(default=256, metadata={"help": "Examples are truncated to this many tokens."})
    seed: int = field(default=0, metadata={"help": "Seed of training and of the refusal chosen per prompt."})
    refusals: str = _refusals_field()
    bf16: bool = _bf16_field()


@dataclass
class PreferenceConfig:
    """DPO (TRL ``DPOTrainer``, LoRA, merged after) with refusals preferred to the base's harmful answers."""

    beta: float = field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor to the start model)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: float = field(default=3.0, metadata={"help": "Epochs over the preference pairs."})
    batch_size: int = field(default=8, metadata={"help": "Preference pairs per optimizer step."})
    warmup_steps: int = field(default=3, metadata={"help": "Linear warm-up steps."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (every linear layer)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    rejected_tokens: int | None = field(
        default=4,
        metadata={"help": "Truncate the rejected harmful answer to its first N tokens (0 or None: the whole answer)."},
    )
    benign_tokens: int | None = field(
        default=48,
        metadata={"help": "Benign anchors: truncate the chosen answer to its first N tokens (0 or None: whole)."},
    )
    benign: bool = field(
        default=True, metadata={"help": "Add benign anchors (chosen = the base's answer, rejected = a refusal)."}
    )
    loss_type: str = field(default="sigmoid", metadata={"help": "TRL DPO loss type (sigmoid = the DPO paper's)."})
    max_length: int = field(default=256, metadata={"help": "Prompt + answer tokens kept per pair."})
    seed: int = field(default=0, metadata={"help": "Seed of training, shuffling and the refusal per prompt."})
    refusals: str = _refusals_field()
    bf16: bool = _bf16_field()

    def __post_init__(self) -> None:
        for name in ("rejected_tokens", "benign_tokens"):
            value = getattr(self, name)
            if value == 0:
                setattr(self, name, None)
            elif value is not None and value < 0:
                raise DeepAlignError(f"{name} must be a number of tokens (0: no truncation), got {value}")


@dataclass
class AlignResult:
    """An alignment stage's outcome: the merged model folder and its training curve."""

    method: str  # "refusal-sft" or "dpo"
    model_dir: str
    steps: int
    first_loss: float | None
    last_loss: float | None
    n_harmful: int
    n_benign: int
    seconds: float
    extra: dict = field(default_factory=dict)  # dpo: the last logged reward accuracy and margin

    def to_dict(self) -> dict:
        return asdict(self)


def truncate_tokens(tokenizer, text: str, n: int | None) -> str:
    """``text`` cut to its first ``n`` tokens (decoded back; the text itself for None or a shorter text)."""
    if n is None:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= n else tokenizer.decode(ids[:n])


def preference_rows(tokenizer, harmful: Sequence[PairRecord], benign: Sequence[PairRecord],
                    config: PreferenceConfig) -> list[dict]:
    """Conversational DPO rows ``{"prompt", "chosen", "rejected"}`` (lists of chat messages, as TRL takes them):
    harmful pairs -> (our refusal, the harmful answer's first ``rejected_tokens`` tokens), benign pairs when
    ``config.benign`` -> (the answer's first ``benign_tokens`` tokens, our refusal)."""
    def row(prompt: str, chosen: str, rejected: str) -> dict:
        return {"prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}

    rows = [row(p.prompt, fallback_refusal(p.id, config.seed, config.refusals),
                truncate_tokens(tokenizer, p.response, config.rejected_tokens)) for p in harmful]
    if config.benign:
        rows += [row(p.prompt, truncate_tokens(tokenizer, p.response, config.benign_tokens),
                     fallback_refusal(p.id, config.seed, config.refusals)) for p in benign]
    if not rows:
        raise DeepAlignError("no preference pairs: pass harmful (prompt, answer) pairs")
    return rows


def merge_adapter(adapter: str | Path, out: str | Path) -> Path:
    """Merge a trained LoRA adapter into its base and save a plain model folder at ``out`` (atomically: a
    folder ``out`` exists only complete); the adapter's ``training_log.jsonl`` is copied along."""
    adapter, out = Path(adapter), Path(out)
    model, tok = load_model(str(adapter))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if (adapter / "training_log.jsonl").exists():
        shutil.copy(adapter / "training_log.jsonl", tmp / "training_log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def _losses(log: list[dict]) -> tuple[int, float | None, float | None]:
    losses = [r["loss"] for r in log if "loss" in r]
    steps = max((r.get("step", 0) for r in log), default=0)
    return steps, (losses[0] if losses else None), (losses[-1] if losses else None)


def refusal_sft(model_path: str, harmful: Sequence, benign: Sequence[PairRecord], out_dir: str | Path,
                config: RefusalSFTConfig = RefusalSFTConfig(), *, progress: bool = False) -> AlignResult:
    """Refusal SFT of ``model_path``: ``harmful`` prompt records -> our refusals, plus ``benign`` anchor pairs;
    a LoRA adapter in ``out_dir.adapter``, merged into ``out_dir``."""
    from deepalign.train.run import train

    out = Path(out_dir)
    adapter = out.with_name(out.name + ".adapter")
    refusals = [PairRecord(p.id, p.prompt, fallback_refusal(p.id, config.seed, config.refusals),
                           getattr(p, "category", None)) for p in harmful]
    args = DeepAlignConfig(
        output_dir=str(adapter), objective="sft", learning_rate=config.learning_rate, lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps, per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs, weight_decay=0.0, max_length=config.max_length, seed=config.seed,
        disable_tqdm=not progress, report_to="none", save_strategy="no", bf16=config.bf16,
    )
    peft = LoraArguments(use_lora=True, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                         lora_dropout=0.0).peft_config()
    start = time.perf_counter()
    train(model_path, refusals + list(benign), args, out_dir=adapter, peft_config=peft)
    merge_adapter(adapter, out)
    steps, first, last = _losses(read_jsonl(adapter / "training_log.jsonl"))
    result = AlignResult("refusal-sft", str(out), steps, first, last, len(refusals), len(benign),
                         time.perf_counter() - start)
    atomic_write_json(out / "align.json", {"result": result.to_dict(), "config": asdict(config)})
    return result


def dpo_align(model_path: str, harmful: Sequence[PairRecord], benign: Sequence[PairRecord], out_dir: str | Path,
              config: PreferenceConfig = PreferenceConfig(), *, progress: bool = False) -> AlignResult:
    """DPO of ``model_path`` (TRL ``DPOTrainer`` with a PEFT ``LoraConfig``; the start model is the reference)
    on :func:`preference_rows`; the adapter in ``out_dir.adapter``, merged into ``out_dir``."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    out = Path(out_dir)
    adapter = out.with_name(out.name + ".adapter")
    model, tok = load_model(model_path, dtype="float32")
    rows = preference_rows(tok, harmful, benign, config)
    dataset = Dataset.from_list(rows).shuffle(seed=config.seed)
    args = DPOConfig(
        output_dir=str(adapter), beta=config.beta, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, num_train_epochs=config.epochs, lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps, logging_steps=1, report_to="none", save_strategy="no",
        max_length=config.max_length, seed=config.seed, loss_type=[config.loss_type], disable_tqdm=not progress,
        use_cpu=not _accelerator_available(), bf16=config.bf16,
    )
    peft = LoraArguments(use_lora=True, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                         lora_dropout=0.0).peft_config()
    use_training_attention(model, args.device, bf16=args.bf16)
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft,
                         callbacks=[HeapTrimCallback()] if args.device.type == "cpu" else None)
    if not progress:  # library code prints nothing: the log is in training_log.jsonl
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(adapter))
    log = [dict(r) for r in trainer.state.log_history]
    atomic_write_jsonl(adapter / "training_log.jsonl", log)
    write_run_metadata(adapter, command="align dpo", model=model_path, config=asdict(config),
                       peft=peft.to_dict(), n_pairs=len(rows))
    del trainer, model
    merge_adapter(adapter, out)
    steps, first, last = _losses(log)
    logged = [r for r in log if "rewards/accuracies" in r]
    extra = {k: logged[-1][k] for k in ("rewards/accuracies", "rewards/margins") if logged and k in logged[-1]}
    n_benign = len(benign) if config.benign else 0
    result = AlignResult("dpo", str(out), steps, first, last, len(harmful), n_benign, time.perf_counter() - start,
                         extra)
    atomic_write_json(out / "align.json", {"result": result.to_dict(), "config": asdict(config)})
    return result


def _accelerator_available() -> bool:
    import torch

    return torch.cuda.is_available()


def read_align_result(model_dir: str | Path) -> AlignResult:
    """The :class:`AlignResult` written beside a merged model (``align.json``)."""
    data = json.loads((Path(model_dir) / "align.json").read_text())
    return AlignResult(**data["result"])
