"""Fine-tuning with plain SFT or the token-wise constrained objective, under ``accelerate launch``.

Batches are right-padded token ids with labels (-100 off the supervised tokens) and the examples' keys
(content hashes, see :mod:`deepalign.train.augment`).

**Normalisation.** The trained loss is the token mean over one optimizer step: each micro-batch returns
its token sum divided by ``num_items_in_batch``, the Trainer's count of supervised tokens
(``labels[..., 1:] != -100``) over all accumulated micro-batches and, with
``average_tokens_across_devices`` (default), over all processes; it is then multiplied by the number of
processes because DDP averages gradients. So grad-accum 2 x batch 2, batch 4 and 2 processes x batch 2
take the same step. (This mirrors ``transformers.Trainer.compute_loss`` for models that take
``num_items_in_batch``; ``loss_is_scaled_for_ga = True`` tells the Trainer not to divide again.)

**Reference log-probs** (constrained objective; pi_ref = the frozen initial model):

- Fixed data (e.g. fine-tuning attack data): computed once before the first step with the initial model
  (for LoRA: the same model with the adapter disabled), split over processes, and cached as a
  safetensors file in ``ref_cache_dir`` named by sha256(weights fingerprint, format, example keys), one
  float32 tensor per example key holding the log-probs of its supervised tokens. Each batch carries its
  example keys and the cached values are scattered back onto the supervised positions, so shuffling,
  padding and process sharding cannot misalign them. A second run with the same model and data loads
  the file instead of computing.
- Redrawn data (safety-recovery augmentation: a refusal after a random prefix, a new sequence each
  epoch) can't be precomputed: the reference runs on the fly each step without gradients, for LoRA as
  the same model with the adapter disabled (no second copy), for full fine-tuning as a frozen copy of
  the initial model (ZeRO-3 shards it, FSDP wraps it, as TRL does for reference models).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from deepalign.chat import ChatFormat, pad_batch
from deepalign.data.schemas import TripletRecord
from deepalign.errors import DeepAlignError
from deepalign.results import ResultsWriter, atomic_write_bytes, iter_batches, write_run_metadata
from deepalign.train.augment import (
    AugmentConfig,
    Example,
    SafetyRecoveryDataset,
    encode_records,
)
from deepalign.train.objectives import (
    IGNORE_INDEX,
    BetaSchedule,
    constrained_loss,
    response_mask,
    sft_loss,
    token_logps,
)

OBJECTIVES = ("sft", "constrained")


@dataclass
class DeepAlignConfig(TrainingArguments):
    """``transformers.TrainingArguments`` plus the objective, reference, LoRA and data options."""

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
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch input."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Comma-separated module names for LoRA, or 'all-linear'."}
    )
    max_length: int = field(default=1024, metadata={"help": "Examples are truncated to this many tokens."})
    template: str = field(default="chat", metadata={"help": "Prompt template: chat, plain or alpaca."})
    system: str | None = field(
        default=None, metadata={"help": "System prompt (default: the template's own)."}
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
    # TrainingArguments defaults changed for this use
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate (paper: 2e-5)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log (and write training_log.jsonl) every N steps."}
    )
    save_strategy: str = field(
        default="no",
        metadata={"help": "Checkpoint strategy: 'no' (only the final model), 'steps' or 'epoch'."},
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
        super().__post_init__()

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(self.p_plain, self.max_prefix, self.anchors_per_safety, seed=self.seed)


@dataclass
class DeepAlignCollator:
    """Items (examples, or lists of examples from an augmented dataset) -> a right-padded batch.

    Returns input_ids [B, L] long, attention_mask [B, L] long, labels [B, L] long (-100 on padding) and
    example_keys (list of B str).
    """

    pad_id: int

    def __call__(self, items: Sequence[Example | list[Example]]) -> dict:
        examples = _flatten(items)
        input_ids, attention_mask = pad_batch([e["input_ids"] for e in examples], self.pad_id)
        labels, _ = pad_batch([e["labels"] for e in examples], IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "example_keys": [e["example_key"] for e in examples],
        }


def _flatten(items: Iterable[Example | list[Example]]) -> list[Example]:
    return [e for item in items for e in (item if isinstance(item, list) else [item])]


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _require_full_weights(model) -> None:
    """The reference is taken from the initial weights before sharding: every process must hold them."""
    if any(p.device.type == "meta" or hasattr(p, "ds_id") for p in model.parameters()):
        raise DeepAlignError(
            "the reference model needs the full initial weights in every process: set "
            "fsdp_cpu_ram_efficient_loading: false (FSDP) or zero3_init_flag: false (DeepSpeed ZeRO-3)"
        )


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (most transformers causal LMs do)."""
    model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    base = model.get_base_model() if _is_peft(model) else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def forward_logps(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, keep_logits: bool = True):
    """One forward pass -> (log pi(labels[:, i] | input[:, :i]) [B, L] as :func:`token_logps` aligns it,
    the model outputs). With ``keep_logits`` the LM head runs only from the position before the batch's
    first supervised token (``logits_to_keep``), which saves its time and the logits' memory."""
    start = 0
    if keep_logits:
        cols = response_mask(labels).any(0).nonzero()
        start = int(cols[0]) - 1 if len(cols) else labels.shape[1] - 1
        kwargs = {"logits_to_keep": labels.shape[1] - start}
    else:
        kwargs = {}
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logps = token_logps(outputs.logits, labels[:, start:])  # its column 0 (label `start`) is never supervised
    return F.pad(logps, (start, 0)), outputs


def weights_fingerprint(model) -> str:
    """sha256 of a model's type and every weight (bytes, names, shapes, dtypes), ~1.7 GB/s.

    For a PEFT model, adapter weights are left out and names are those of the plain model, so the
    fingerprint is the reference's (the base model) with or without the adapter.
    """
    _require_full_weights(model)
    base = model.get_base_model() if _is_peft(model) else model
    h = hashlib.sha256(f"{type(base).__name__}\0{getattr(base.config, 'model_type', '')}".encode())
    for name, tensor in sorted(base.state_dict().items()):
        if "lora_" in name:
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"\0{name.replace('.base_layer.', '.')}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def compute_reference_logps(
    model,
    examples: Sequence[Example],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, Tensor]:
    """{example key: log pi(y_t | ..) of its supervised tokens, float32 [T] on CPU} for this process's share.

    Examples are sorted by length (less padding) and dealt out ``rank::world_size``; every process runs
    the same number of forward passes (a short share repeats a batch), as sharded models need.
    """
    unique = sorted(
        {e["example_key"]: e for e in examples}.values(),
        key=lambda e: (-len(e["input_ids"]), e["example_key"]),
    )
    mine = unique[rank::world_size]
    n_batches = math.ceil(math.ceil(len(unique) / world_size) / batch_size)
    batches = list(iter_batches(mine, batch_size))
    batches += [None] * (n_batches - len(batches))
    device = device or next(model.parameters()).device
    keep_logits = accepts_logits_to_keep(model)
    was_training = model.training
    model.eval()
    out: dict[str, Tensor] = {}
    for batch in tqdm(batches, desc="reference log-probs", unit="batch", disable=not progress):
        # a filler batch (None) keeps collective forwards in step across processes; its result is dropped
        rows = batch or unique[:1]
        ids, mask = pad_batch([e["input_ids"] for e in rows], pad_id)
        labels, _ = pad_batch([e["labels"] for e in rows], IGNORE_INDEX)
        logps, _ = forward_logps(model, ids.to(device), mask.to(device), labels.to(device), keep_logits)
        logps = logps.float().cpu()  # [B, L]
        if batch is not None:
            supervised = response_mask(labels)
            for row, e in enumerate(rows):
                out[e["example_key"]] = logps[row][supervised[row]]
    model.train(was_training)
    return out


def scatter_reference(reference: dict[str, Tensor], keys: Sequence[str], labels: Tensor) -> Tensor:
    """Cached per-example log-probs -> ref_logps [B, L] float32 aligned with labels [B, L] (0 off-target)."""
    mask = response_mask(labels)
    try:
        parts = [reference[k] for k in keys]
    except KeyError as e:
        raise DeepAlignError(f"example {e.args[0]} has no cached reference log-probs") from None
    counts = mask.sum(-1).tolist()
    if [len(p) for p in parts] != counts:
        raise DeepAlignError("cached reference log-probs do not match the batch's supervised tokens")
    ref = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    ref[mask] = torch.cat(parts).to(labels.device)  # boolean indexing is row-major: row by row, in order
    return ref


class EpochCallback(TrainerCallback):
    """Sets the epoch of a redrawn dataset at the start of every epoch (before the epoch's dataloader
    iterator and its workers exist). accelerate's ``DataLoaderShard.set_epoch`` does not reach the
    dataset when the sampler is sharded over processes, so this is what keeps draws in step."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(round(state.epoch or 0))


class DeepAlignTrainer(Trainer):
    """``transformers.Trainer`` whose loss is SFT or the token-wise constrained objective (see module doc).

    ``train_dataset`` yields examples or lists of examples (:mod:`deepalign.train.augment`); a dataset
    with ``redrawn = True`` gets an on-the-fly reference, any other one a cached reference. Logs add
    ``objective``: the exact objective's token mean since the last log (the constrained loss, or CE).
    """

    loss_is_scaled_for_ga = True  # compute_loss divides by the whole step's token count itself

    def __init__(
        self,
        model,
        args: DeepAlignConfig,
        train_dataset: Dataset,
        processing_class,
        *,
        data_collator=None,
        eval_dataset=None,
        callbacks: list[TrainerCallback] | None = None,
    ):
        pad_id = processing_class.pad_token_id
        pad_id = processing_class.eos_token_id if pad_id is None else pad_id
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator or DeepAlignCollator(pad_id),
            callbacks=callbacks,
        )
        if self.args.n_gpu > 1:
            raise DeepAlignError(
                "several GPUs in one process (DataParallel) are not supported: "
                "use accelerate launch --config_file configs/accelerate/ddp.yaml"
            )
        redrawn = getattr(train_dataset, "redrawn", False)
        if redrawn and self.args.dataloader_persistent_workers:
            raise DeepAlignError(
                "augmented data is redrawn each epoch: persistent dataloader workers would not see it"
            )
        if hasattr(train_dataset, "set_epoch"):
            self.add_callback(EpochCallback(train_dataset))
        self.model_accepts_loss_kwargs = True  # makes the Trainer count num_items_in_batch for any model
        self.schedule = BetaSchedule.parse(self.args.beta_schedule)
        self.pad_id = pad_id
        self.keep_logits = accepts_logits_to_keep(self.model)
        # exact objective sum and token count since the last log (this process)
        self._objective_acc = [0.0, 0]
        self.reference: dict[str, Tensor] | None = None
        self.ref_model = None
        if self.args.objective == "constrained":
            if not redrawn:
                self.reference = self._cached_reference(
                    _flatten(train_dataset[i] for i in range(len(train_dataset)))
                )
            elif not _is_peft(self.model):
                self.ref_model = self._frozen_copy()

    # --- reference --------------------------------------------------------------------------------

    def _frozen_copy(self):
        _require_full_weights(self.model)
        ref = copy.deepcopy(self.model).eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models import prepare_fsdp

            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def _format(self) -> ChatFormat:
        return ChatFormat(self.args.template, self.args.system)

    def reference_path(self, examples: Sequence[Example]) -> Path:
        """The cache file for these examples and this model's reference weights."""
        root = Path(self.args.ref_cache_dir) if self.args.ref_cache_dir else _default_ref_dir()
        payload = {
            "fingerprint": weights_fingerprint(self.model),
            "format": self._format().describe(),
            "keys": sorted({e["example_key"] for e in examples}),
        }
        return root / f"{hashlib.sha256(json.dumps(payload).encode()).hexdigest()}.safetensors"

    def _cached_reference(self, examples: list[Example]) -> dict[str, Tensor]:
        from accelerate.utils import broadcast_object_list, gather_object
        from safetensors.torch import load_file, save

        acc = self.accelerator
        found: list = [None, False]
        if acc.is_main_process:
            path = self.reference_path(examples)
            found = [str(path), path.exists()]
        if acc.num_processes > 1:
            broadcast_object_list(found)
        path, hit = Path(found[0]), found[1]
        if hit:
            loaded = [load_file(path) if acc.is_main_process else None]
            if acc.num_processes > 1:
                broadcast_object_list(loaded)
            return loaded[0]
        _require_full_weights(self.model)
        model = self.model
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            model = prepare_deepspeed(self.model, acc)
        else:
            self.model.to(acc.device)
        no_adapter = self.model.disable_adapter() if _is_peft(self.model) else contextlib.nullcontext()
        with no_adapter:
            part = compute_reference_logps(
                model,
                examples,
                batch_size=self.args.ref_batch_size or self.args.per_device_train_batch_size,
                pad_id=self.pad_id,
                device=acc.device,
                rank=acc.process_index,
                world_size=acc.num_processes,
                progress=not self.args.disable_tqdm and acc.is_main_process,
            )
        reference = {}
        for shard in gather_object([part]) if acc.num_processes > 1 else [part]:
            reference.update(shard)
        if acc.is_main_process:
            meta = {"n_examples": str(len(reference)), "format": json.dumps(self._format().describe())}
            atomic_write_bytes(path, save({k: v.contiguous() for k, v in reference.items()}, metadata=meta))
        acc.wait_for_everyone()
        return reference

    def reference_logps(self, model, inputs: dict) -> Tensor:
        """Reference log-probs [B, L] float32 aligned with ``inputs["labels"]`` for a collated batch:
        from the cache, or (redrawn data) from the frozen copy / the model with its adapter disabled."""
        labels = inputs["labels"]
        if self.reference is not None:
            return scatter_reference(self.reference, inputs["example_keys"], labels)
        args = (inputs["input_ids"], inputs["attention_mask"], labels, self.keep_logits)
        with torch.no_grad():
            if self.ref_model is not None:
                return forward_logps(self.ref_model, *args)[0]
            with self.accelerator.unwrap_model(model).disable_adapter():
                return forward_logps(model, *args)[0]

    # --- loss and logs ----------------------------------------------------------------------------

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        labels = inputs["labels"]
        ref = None
        if self.args.objective == "constrained":
            # the reference first: its logits are freed before the policy's graph is built
            ref = self.reference_logps(model, inputs)
        logps, outputs = forward_logps(
            model, inputs["input_ids"], inputs["attention_mask"], labels, self.keep_logits
        )
        if ref is None:
            out = sft_loss(logps, labels)
        else:
            args = self.args
            out = constrained_loss(
                logps, ref, labels, self.schedule, surrogate=args.surrogate, clamp_min=args.clamp_min
            )
        if model.training:
            self._objective_acc[0] += out.objective_sum
            self._objective_acc[1] += out.n_tokens
        loss = out.mean(num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts all processes' tokens and DDP averages their gradients
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            acc = torch.tensor(self._objective_acc, dtype=torch.float64, device=self.args.device)
            if self.accelerator.num_processes > 1:
                acc = self.accelerator.reduce(acc, reduction="sum")
            logs["objective"] = (acc[0] / acc[1].clamp(min=1)).item()
            self._objective_acc = [0.0, 0]
        super().log(logs, start_time)


def _default_ref_dir() -> Path:
    from deepalign.models import cache_dir

    return cache_dir() / "reference"


class TrainingLogCallback(TrainerCallback):
    """Appends one JSONL row per logged step to ``path`` (main process): step, epoch, loss (the trained
    loss), objective (the exact objective), learning_rate, grad_norm."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            row = {"id": f"step-{state.global_step:07d}", "step": state.global_step}
            row.update({k: logs.get(k) for k in ("epoch", "loss", "objective", "learning_rate", "grad_norm")})
            with ResultsWriter(self.path) as writer:
                writer.write(row)


def build_train_dataset(tokenizer, train_data, config: DeepAlignConfig, anchors=None) -> Dataset:
    """Triplets -> :class:`SafetyRecoveryDataset` (with encoded ``anchors``); pairs, chats or
    :class:`~deepalign.chat.Encoded` -> a list of fixed examples (anchors appended); a Dataset is kept."""
    if isinstance(train_data, Dataset):
        return train_data
    records = list(train_data)
    fmt = ChatFormat(config.template, config.system)
    anchor_examples = encode_records(tokenizer, list(anchors or ()), fmt, config.max_length)
    n_triplets = sum(isinstance(r, TripletRecord) for r in records)
    if n_triplets and n_triplets != len(records):
        raise DeepAlignError("training data mixes triplets with other records: pass anchors separately")
    if n_triplets:
        return SafetyRecoveryDataset(
            tokenizer, records, fmt, config.augment_config(), anchor_examples, config.max_length
        )
    examples = encode_records(tokenizer, records, fmt, config.max_length) + anchor_examples
    if not examples:
        raise DeepAlignError("no training examples (empty data, or every example truncated away)")
    return examples


def train(
    model_name_or_path: str,
    train_data,
    config: DeepAlignConfig,
    *,
    anchors=None,
    out_dir: str | os.PathLike,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Fine-tune a model and save it (or its LoRA adapter) with its tokenizer to ``out_dir``.

    ``train_data``: triplets (safety-recovery augmentation, mixed with ``anchors``), or pairs / chats /
    Encoded examples (fixed data), or a ready Dataset. Writes ``out_dir/training_log.jsonl`` (per logged
    step: loss, objective, learning_rate, grad_norm) and ``out_dir/meta.json``. Returns ``out_dir``.
    ``callbacks`` are added to the trainer (e.g. :class:`deepalign.train.dynamics.DynamicsCallback`); with
    ``config.disable_tqdm`` nothing is printed (the log is in ``training_log.jsonl``).
    Run under ``accelerate launch --config_file configs/accelerate/<ddp|fsdp|...>.yaml`` for several devices.
    """
    from deepalign.models import load_model

    out = Path(out_dir)
    model, tokenizer = load_model(model_name_or_path, dtype=config.model_dtype)
    dataset = build_train_dataset(tokenizer, train_data, config, anchors)
    if config.disable_dropout:
        from trl.trainer.utils import disable_dropout_in_model

        disable_dropout_in_model(model)
    if config.use_lora:
        from peft import LoraConfig, get_peft_model

        targets = config.lora_target_modules
        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                task_type="CAUSAL_LM",
                target_modules=targets
                if targets == "all-linear"
                else [t.strip() for t in targets.split(",")],
            ),
        )
    if config.output_dir in (None, "trainer_output"):
        config.output_dir = str(out)  # checkpoints, if any, go to out_dir/checkpoint-N
    trainer = DeepAlignTrainer(
        model,
        config,
        dataset,
        tokenizer,
        callbacks=[TrainingLogCallback(out / "training_log.jsonl"), *callbacks],
    )
    if config.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        write_run_metadata(
            out,
            command="train",
            model=model_name_or_path,
            objective=config.objective,
            beta_schedule=config.beta_schedule if config.objective == "constrained" else None,
            augmented=bool(getattr(dataset, "redrawn", False)),
            n_items=len(dataset),
            reference=("cached" if trainer.reference is not None else "on the fly")
            if config.objective == "constrained"
            else None,
            config=config.to_dict(),
        )
    trainer.accelerator.wait_for_everyone()
    return out
