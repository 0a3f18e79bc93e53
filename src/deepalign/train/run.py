"""``train()``: fine-tune a model folder on records and save it (or its adapter) with its training log.

Run under ``accelerate launch --config_file configs/accelerate/<ddp|fsdp|...>.yaml`` for several devices.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset
from transformers import PrinterCallback, TrainerCallback

from deepalign.chat import ChatFormat
from deepalign.data.schemas import TripletRecord
from deepalign.errors import DeepAlignError
from deepalign.io import atomic_write_jsonl, read_jsonl
from deepalign.meta import write_run_metadata
from deepalign.models import load_model, use_training_attention
from deepalign.train.augment import SafetyRecoveryDataset, encode_records
from deepalign.train.callbacks import TrainingLogCallback
from deepalign.train.config import DeepAlignConfig
from deepalign.train.trainer import DeepAlignTrainer

log = logging.getLogger(__name__)


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
    examples = encode_records(tokenizer, records, fmt, config.max_length,
                              last_turn_only=config.last_turn_only) + anchor_examples
    if not examples:
        raise DeepAlignError("no training examples (empty data, or every example truncated away)")
    return examples


def last_checkpoint(config: DeepAlignConfig) -> str | None:
    """The checkpoint a run continues from: ``resume_from_checkpoint`` when set, else (with ``resume``) the
    newest complete ``checkpoint-N`` in ``output_dir`` (one with its ``trainer_state.json``), else None."""
    if config.resume_from_checkpoint:
        return config.resume_from_checkpoint
    if not config.resume or not os.path.isdir(config.output_dir):
        return None
    steps = [int(p.name.split("-")[1]) for p in Path(config.output_dir).glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").exists()]
    return str(Path(config.output_dir) / f"checkpoint-{max(steps)}") if steps else None


def _restart_log(path: Path, checkpoint: str | None) -> None:
    """Keep the training log's rows up to the checkpoint's step (all of them go without a checkpoint), so
    the steps trained again are logged once."""
    if not path.exists():
        return
    if checkpoint is None:
        path.unlink()
        return
    step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
    atomic_write_jsonl(path, [r for r in read_jsonl(path) if r["step"] <= step])


def train(
    model_name_or_path: str,
    train_data,
    config: DeepAlignConfig,
    *,
    anchors=None,
    out_dir: str | os.PathLike,
    peft_config=None,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Fine-tune a model and save it (or its LoRA adapter) with its tokenizer to ``out_dir``.

    ``model_name_or_path``: a model folder, ``.gguf`` file or hub id (built-in names are resolved by
    :mod:`deepalign.pipeline.builtins`). ``train_data``: triplets (safety-recovery augmentation, mixed with
    ``anchors``), or pairs / chats / Encoded examples (fixed data), or a ready Dataset. ``peft_config``:
    e.g. a ``peft.LoraConfig`` to train an adapter. Writes ``out_dir/training_log.jsonl`` (per logged
    step: loss, objective, learning_rate, grad_norm) and ``out_dir/meta.json``. Returns ``out_dir``.
    ``callbacks`` are added to the trainer (e.g. :class:`deepalign.train.dynamics.DynamicsCallback`); with
    ``config.disable_tqdm`` nothing is printed (the log is in ``training_log.jsonl``).

    Checkpoints (``config.save_strategy``, every ``config.save_steps``) go to ``output_dir/checkpoint-N``;
    a rerun of a killed run continues from the newest one (transformers' ``resume_from_checkpoint``) and
    ends with the weights and log of an uninterrupted run. The constrained objective's reference is
    always that of the initial model (the cache in ``ref_cache_dir`` is reused).
    """
    out = Path(out_dir)
    model, tokenizer = load_model(model_name_or_path, dtype=config.model_dtype)
    attention = use_training_attention(model, config.device, config.attn_implementation, bf16=config.bf16)
    dataset = build_train_dataset(tokenizer, train_data, config, anchors)
    if config.disable_dropout:
        from trl.trainer.utils import disable_dropout_in_model

        disable_dropout_in_model(model)
    if config.output_dir in (None, "trainer_output"):
        config.output_dir = str(out)  # checkpoints, if any, go to out_dir/checkpoint-N
    trainer = DeepAlignTrainer(
        model,
        config,
        dataset,
        tokenizer,
        peft_config=peft_config,
        callbacks=[TrainingLogCallback(out / "training_log.jsonl"), *callbacks],
    )
    if config.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    checkpoint = last_checkpoint(config)
    if trainer.is_world_process_zero():
        if checkpoint is None and not config.resume:  # starting over: no checkpoint of the old run stays
            for old in Path(config.output_dir).glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
        _restart_log(out / "training_log.jsonl", checkpoint)
    trainer.accelerator.wait_for_everyone()
    if checkpoint is not None:
        log.info("resuming training from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
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
            precision=config.precision,
            attention=attention,
            distributed=trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU (DDP), FSDP, DEEPSPEED, ...
            processes=trainer.accelerator.num_processes,
            config=config.to_dict(),
            peft=peft_config.to_dict() if peft_config is not None else None,
        )
    trainer.accelerator.wait_for_everyone()
    return out
