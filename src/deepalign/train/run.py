"""``train()``: fine-tune a model folder on records and save it (or its adapter) with its training log.

Run under ``accelerate launch --config_file configs/accelerate/<ddp|fsdp|...>.yaml`` for several devices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset
from transformers import PrinterCallback, TrainerCallback

from deepalign.chat import ChatFormat
from deepalign.data.schemas import TripletRecord
from deepalign.errors import DeepAlignError
from deepalign.meta import write_run_metadata
from deepalign.models import load_model
from deepalign.train.augment import SafetyRecoveryDataset, encode_records
from deepalign.train.callbacks import TrainingLogCallback
from deepalign.train.config import DeepAlignConfig
from deepalign.train.trainer import DeepAlignTrainer


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
    """
    out = Path(out_dir)
    model, tokenizer = load_model(model_name_or_path, dtype=config.model_dtype)
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
            precision=config.precision,
            distributed=trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU (DDP), FSDP, DEEPSPEED, ...
            processes=trainer.accelerator.num_processes,
            config=config.to_dict(),
            peft=peft_config.to_dict() if peft_config is not None else None,
        )
    trainer.accelerator.wait_for_everyone()
    return out
