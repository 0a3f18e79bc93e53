"""``DeepAlignTrainer``: ``transformers.Trainer`` training plain SFT or the token-wise constrained objective.

Batches are right-padded token ids with labels (-100 off the supervised tokens) and the examples' keys
(content hashes, see :mod:`deepalign.train.augment`).

**Normalisation** is transformers' own: the objective is the Trainer's ``compute_loss_func``, so
``super().compute_loss`` runs the forward pass, counts ``num_items_in_batch`` (the supervised tokens
``labels[..., 1:] != -100`` over all accumulated micro-batches and, with
``average_tokens_across_devices``, all processes) and scales for DDP's gradient averaging; the objective
returns its token sum divided by that count. So grad-accum 2 x batch 2, batch 4 and 2 processes x batch 2
take the same step: the trained loss is the token mean over one optimizer step.

**Reference log-probs** (constrained objective): see :mod:`deepalign.train.reference`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from deepalign.chat import ChatFormat
from deepalign.errors import DeepAlignError
from deepalign.paths import reference_dir
from deepalign.train.callbacks import EpochCallback, HeapTrimCallback
from deepalign.train.collator import DeepAlignCollator, flatten
from deepalign.train.config import DeepAlignConfig
from deepalign.train.launch import check_launch, force_fsdp_on_cpu
from deepalign.train.objectives import BetaSchedule, constrained_loss, sft_loss
from deepalign.train.reference import (
    ReferenceCallback,
    accepts_logits_to_keep,
    compute_cached_reference,
    find_cached_reference,
    forward_logps,
    frozen_copy,
    is_peft,
    is_sharded,
    logits_to_keep,
    logps_of_logits,
    scatter_reference,
)


class DeepAlignTrainer(Trainer):
    """``transformers.Trainer`` whose loss is SFT or the token-wise constrained objective (see module doc).

    ``train_dataset`` yields examples or lists of examples (:mod:`deepalign.train.augment`); a dataset
    with ``redrawn = True`` gets an on-the-fly reference, any other one a cached reference. ``peft_config``
    (e.g. a ``peft.LoraConfig``) wraps the model in an adapter first, as TRL's trainers do. Logs add
    ``objective``: the exact objective's token mean since the last log (the constrained loss, or CE).
    """

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
        peft_config=None,
    ):
        if peft_config is not None:
            from peft import get_peft_model
            from transformers import set_seed

            # the adapter's random init: seeded here, as the Trainer seeds only after the model exists, so
            # two runs (and every process) start from the same adapter
            set_seed(args.seed)
            model = get_peft_model(model, peft_config)
        pad_id = processing_class.pad_token_id
        pad_id = processing_class.eos_token_id if pad_id is None else pad_id
        force_fsdp_on_cpu()  # only with DEEPALIGN_FSDP_ON_CPU=1 under an FSDP launch (docs/scaling.md)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator or DeepAlignCollator(pad_id),
            callbacks=callbacks,
            compute_loss_func=self.objective_loss,
        )
        check_launch(self.accelerator)
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
        if self.args.device.type == "cpu":
            self.add_callback(HeapTrimCallback())
        self.model_accepts_loss_kwargs = False  # the objective is compute_loss_func's; the model computes none
        self.schedule = BetaSchedule.parse(self.args.beta_schedule)
        self.pad_id = pad_id
        self.keep_logits = accepts_logits_to_keep(self.model)
        self._objective_acc = [0.0, 0]  # exact objective sum and token count since the last log (this process)
        self._batch_reference: Tensor | None = None  # the current batch's reference log-probs [B, L]
        self.reference: dict[str, Tensor] | None = None
        self.ref_model = None
        if self.args.objective == "constrained":
            if not redrawn:
                examples = flatten(train_dataset[i] for i in range(len(train_dataset)))
                root = Path(self.args.ref_cache_dir) if self.args.ref_cache_dir else reference_dir()
                path, self.reference = find_cached_reference(self, examples, self.format, root)
                if self.reference is None and is_sharded(self):  # computed once the model is prepared
                    self.add_callback(ReferenceCallback(self, examples, path))
                elif self.reference is None:
                    self.reference = compute_cached_reference(self, examples, self.format, path)
            elif not is_peft(self.model):
                self.ref_model = frozen_copy(self)

    @property
    def format(self) -> ChatFormat:
        return ChatFormat(self.args.template, self.args.system)

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
        """The Trainer's own ``compute_loss`` on the model inputs (example keys dropped, logits kept from
        the first supervised position on), with :meth:`objective_loss` as its loss function."""
        if self.args.objective == "constrained":  # the reference first: its logits are freed before the
            self._batch_reference = self.reference_logps(model, inputs)  # policy's graph is built
        model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                        "labels": inputs["labels"], "use_cache": False}
        if self.keep_logits:
            model_inputs["logits_to_keep"] = logits_to_keep(inputs["labels"])
        try:
            return super().compute_loss(model, model_inputs, return_outputs, num_items_in_batch)
        finally:
            self._batch_reference = None

    def objective_loss(self, outputs, labels: Tensor, num_items_in_batch=None) -> Tensor:
        """SFT or constrained loss of a micro-batch: its token sum / ``num_items_in_batch`` (the step's
        supervised token count; this batch's when None)."""
        logps = logps_of_logits(outputs.logits, labels)
        if self._batch_reference is None:
            out = sft_loss(logps, labels)
        else:
            args = self.args
            out = constrained_loss(
                logps, self._batch_reference, labels, self.schedule, surrogate=args.surrogate,
                clamp_min=args.clamp_min,
            )
        if self.model.training:
            self._objective_acc[0] += out.objective_sum
            self._objective_acc[1] += out.n_tokens
        return out.mean(num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["objective"] = pop_objective(self)
        super().log(logs, start_time)


def pop_objective(trainer) -> float:
    """The exact objective's token mean since the last log over all processes, from ``trainer._objective_acc``
    ([sum, token count] of this process), which is reset."""
    acc = torch.tensor(trainer._objective_acc, dtype=torch.float64, device=trainer.args.device)
    if trainer.accelerator.num_processes > 1:
        acc = trainer.accelerator.reduce(acc, reduction="sum")
    trainer._objective_acc = [0.0, 0]
    return (acc[0] / acc[1].clamp(min=1)).item()
