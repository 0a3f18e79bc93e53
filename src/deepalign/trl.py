"""The token-wise constrained objective as a TRL trainer: ``ConstrainedSFTTrainer(SFTTrainer)``.

For TRL users: pass what ``trl.SFTTrainer`` takes (a model or its path, a ``datasets.Dataset`` of
conversational ``messages`` or prompt-completion rows, a ``peft_config``) with a
:class:`ConstrainedSFTConfig`. TRL prepares the data as usual (chat template, tokenization, its
completion-only / assistant-only loss masks, truncation); the loss is deepalign's constrained objective
(:func:`deepalign.train.objectives.constrained_loss`, Qi et al. 2025 Sec. 4) instead of the cross-entropy.

- Response positions t = 1.. restart at the first supervised token of every span (each assistant turn of a
  multi-turn chat), so beta_1.. weigh the start of every reply.
- The reference pi_ref is the model as passed (for PEFT: the same model with the adapter disabled). Its
  log-probs over the prepared training (and eval) rows are computed once before training and cached on
  disk by sha256(weights fingerprint, example content hashes) (:func:`deepalign.train.reference.cached_reference`),
  so a second run on the same model and data loads them. Batches find theirs by content hash, whatever
  the shuffling or padding.
- It refuses what would leave a token without its reference or its position: an ``IterableDataset``
  (nothing to precompute), packing and padding-free batches (sequences concatenated into one row), and
  rows whose every token is supervised (no prompt masking: pass prompt-completion data, or
  ``assistant_only_loss=True`` for ``messages``).

The loss is normalised as transformers does it: the token sum over one micro-batch divided by
``num_items_in_batch`` (the step's supervised-token count), so it is the token mean over one optimizer step,
as in :class:`deepalign.train.trainer.DeepAlignTrainer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor
from trl import SFTConfig, SFTTrainer

from deepalign.chat import ChatFormat
from deepalign.errors import DeepAlignError
from deepalign.paths import reference_dir
from deepalign.train.augment import example_key
from deepalign.train.objectives import IGNORE_INDEX, BetaSchedule, constrained_loss
from deepalign.train.reference import (
    accepts_logits_to_keep,
    cached_reference,
    logits_to_keep,
    logps_of_logits,
    scatter_reference,
)
from deepalign.train.trainer import pop_objective

logger = logging.getLogger(__name__)
TOKEN_IDS = ChatFormat("chat", None)  # rows arrive as token ids: the format is in their content hashes


@dataclass
class ConstrainedSFTConfig(SFTConfig):
    """``trl.SFTConfig`` plus the constrained objective's options (the paper's defaults)."""

    beta_schedule: str = field(
        default=str(BetaSchedule()),
        metadata={"help": "Comma-separated beta_1, beta_2, ... per response position; the last value repeats."},
    )
    surrogate: bool = field(
        default=False,
        metadata={"help": "Train the public code's surrogate -clamp(w_t).detach() * log p, not the exact loss."},
    )
    clamp_min: float = field(default=1e-3, metadata={"help": "Lower clamp of the surrogate's token weights."})
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of cached reference log-probs (default: $DEEPALIGN_CACHE/reference)."},
    )
    ref_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the reference pass (default: per_device_train_batch_size)."}
    )

    def __post_init__(self) -> None:
        BetaSchedule.parse(self.beta_schedule)
        if self.packing or self.padding_free:
            raise DeepAlignError(
                "ConstrainedSFTTrainer does not support packing or padding_free: concatenated sequences lose the "
                "per-example reference log-probs; set packing=False and padding_free=False"
            )
        super().__post_init__()


def row_key(input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None) -> str:
    """The content hash (:func:`deepalign.train.augment.example_key`) of one right-padded batch row."""
    n = int(attention_mask.sum()) if attention_mask is not None else len(input_ids)
    return example_key(input_ids[:n].tolist(), labels[:n].tolist())


class ConstrainedSFTTrainer(SFTTrainer):
    """``trl.SFTTrainer`` training the token-wise constrained objective against the initial model (see
    the module doc). Takes ``SFTTrainer``'s arguments; ``args`` must be a :class:`ConstrainedSFTConfig`.
    Logs add ``objective``: the exact constrained loss's token mean over the logged steps."""

    def __init__(self, model, args: ConstrainedSFTConfig | None = None, *pos, **kwargs):
        if not isinstance(args, ConstrainedSFTConfig):
            raise DeepAlignError("ConstrainedSFTTrainer needs args=ConstrainedSFTConfig(...) (its beta schedule "
                                 "and reference cache options)")
        if kwargs.get("compute_loss_func") is not None:
            raise DeepAlignError("ConstrainedSFTTrainer computes its own loss: drop compute_loss_func")
        super().__init__(model, args, *pos, **kwargs)
        if args.loss_type != "nll" or self.label_smoother is not None:
            raise DeepAlignError("ConstrainedSFTTrainer replaces the loss: keep loss_type='nll' and no label smoothing")
        if getattr(self, "padding_free", False):
            raise DeepAlignError("ConstrainedSFTTrainer does not support padding-free batches (see packing)")
        self.schedule = BetaSchedule.parse(args.beta_schedule)
        self.pad_id = self.processing_class.pad_token_id
        self.keep_logits = accepts_logits_to_keep(self.model)
        self._objective_acc = [0.0, 0]
        datasets = [self.train_dataset]
        if self.eval_dataset is not None:
            evals = self.eval_dataset
            datasets += list(evals.values()) if isinstance(evals, dict) else [evals]
        examples = [example for ds in datasets for example in self._examples(ds)]
        root = Path(args.ref_cache_dir) if args.ref_cache_dir else reference_dir()
        self.reference: dict[str, Tensor] = cached_reference(self, examples, TOKEN_IDS, root)

    @staticmethod
    def _examples(dataset) -> list[dict]:
        """The prepared rows as examples with their content hash; refuses rows it cannot reference."""
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise DeepAlignError("ConstrainedSFTTrainer needs a datasets.Dataset (not an IterableDataset): its "
                                 "reference log-probs are computed once over every row before training")
        out = []
        for i, row in enumerate(dataset):
            ids, labels = list(row["input_ids"]), list(row.get("labels", row["input_ids"]))
            if not labels or labels[0] != IGNORE_INDEX:
                raise DeepAlignError(
                    f"row {i}: every token is supervised, so no response start can be found: pass prompt-completion "
                    "data (completion_only_loss), or set assistant_only_loss=True for conversational 'messages'")
            out.append({"input_ids": ids, "labels": labels, "example_key": example_key(ids, labels)})
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Constrained loss of a micro-batch: its token sum / ``num_items_in_batch`` (times the process count
        when tokens are averaged across devices, as DDP averages gradients)."""
        labels, mask = inputs["labels"], inputs.get("attention_mask")
        keys = [row_key(inputs["input_ids"][b], labels[b], None if mask is None else mask[b])
                for b in range(labels.shape[0])]
        ref = scatter_reference(self.reference, keys, labels)
        model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": mask, "use_cache": False}
        if self.keep_logits:
            model_inputs["logits_to_keep"] = logits_to_keep(labels)
        outputs = model(**model_inputs)
        logps = logps_of_logits(outputs.logits, labels)
        args = self.args
        out = constrained_loss(logps, ref, labels, self.schedule, surrogate=args.surrogate, clamp_min=args.clamp_min)
        loss = out.mean(num_items_in_batch)
        if args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        if self.model.training:
            self._objective_acc[0] += out.objective_sum
            self._objective_acc[1] += out.n_tokens
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["objective"] = pop_objective(self)
        super().log(logs, start_time)
