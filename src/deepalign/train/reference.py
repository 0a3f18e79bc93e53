"""Reference log-probs of the constrained objective (pi_ref = the frozen initial model).

- Fixed data (e.g. fine-tuning attack data): computed once before the first step with the initial model
  (for LoRA: the same model with the adapter disabled; under FSDP or ZeRO-3 the prepared, sharded model
  itself at the start of training, :class:`ReferenceCallback`), split over processes, and cached as a
  safetensors file named by sha256(weights fingerprint, format, example keys), one float32 tensor per
  example key holding the log-probs of its supervised tokens. Each batch carries its example keys and
  the cached values are scattered back onto the supervised positions (:func:`scatter_reference`), so
  shuffling, padding and process sharding cannot misalign them. A second run with the same model and
  data loads the file instead of computing.
- Redrawn data (safety-recovery augmentation) can't be precomputed: the trainer runs the reference on
  the fly each step without gradients, for LoRA as the same model with the adapter disabled, for full
  fine-tuning as a frozen copy of the initial model (:func:`frozen_copy`; ZeRO-3 loads it again and
  shards it in an engine of its own, FSDP shards it, as TRL does for reference models).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformers import TrainerCallback

from deepalign.chat import ChatFormat, pad_batch
from deepalign.errors import DeepAlignError
from deepalign.io import atomic_write_bytes, iter_batches
from deepalign.train.augment import Example
from deepalign.train.objectives import IGNORE_INDEX, response_mask, token_logps


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def require_full_weights(model) -> None:
    """The weights fingerprint needs the initial weights in this process (ZeRO-3 partitions are gathered)."""
    if any(p.device.type == "meta" for p in model.parameters()):
        raise DeepAlignError(
            "the reference cache needs the full initial weights on the main process: set "
            "fsdp_cpu_ram_efficient_loading: false (FSDP)"
        )


def _full(tensor) -> Tensor:
    """A state-dict entry as a full CPU tensor: a ZeRO-3 partitioned parameter is gathered for the copy."""
    if hasattr(tensor, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([tensor]):
            return tensor.detach().cpu().clone()
    return tensor.detach().cpu()


def accepts_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (most transformers causal LMs do)."""
    model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    base = model.get_base_model() if is_peft(model) else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def logits_to_keep(labels: Tensor) -> int:
    """How many last positions' logits a forward must keep to predict every supervised token of
    labels [B, L]: from the position before the batch's first supervised token on."""
    cols = response_mask(labels).any(0).nonzero()
    start = int(cols[0]) - 1 if len(cols) else labels.shape[1] - 1
    return labels.shape[1] - start


def logps_of_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log pi(labels[:, i] | input[:, :i]) [B, L] as :func:`token_logps` aligns it, from the logits [B, K, V]
    of the last K positions (K = L when all were kept)."""
    start = labels.shape[1] - logits.shape[1]
    logps = token_logps(logits, labels[:, start:])  # its column 0 (label `start`) is never supervised
    return F.pad(logps, (start, 0))


def forward_logps(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, keep_logits: bool = True):
    """One forward pass -> (log-probs [B, L] of ``labels``, the model outputs). With ``keep_logits`` the LM
    head runs only from the position before the batch's first supervised token (``logits_to_keep``),
    which saves its time and the logits' memory."""
    kwargs = {"logits_to_keep": logits_to_keep(labels)} if keep_logits else {}
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return logps_of_logits(outputs.logits, labels), outputs


def weights_fingerprint(model) -> str:
    """sha256 of a model's type and every weight (bytes, names, shapes, dtypes), ~1.7 GB/s.

    For a PEFT model, adapter weights are left out and names are those of the plain model, so the
    fingerprint is the reference's (the base model) with or without the adapter.
    """
    require_full_weights(model)
    base = model.get_base_model() if is_peft(model) else model
    h = hashlib.sha256(f"{type(base).__name__}\0{getattr(base.config, 'model_type', '')}".encode())
    for name, tensor in sorted(base.state_dict(keep_vars=True).items()):
        if "lora_" in name:
            continue
        t = _full(tensor).contiguous()
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


def reference_path(model, fmt: ChatFormat, examples: Sequence[Example], root: Path, precision: str = "no") -> Path:
    """The cache file in ``root`` for these examples, this model's reference weights and the training
    ``precision`` ("no", "bf16", "fp16": the autocast the reference is computed under)."""
    payload = {
        "fingerprint": weights_fingerprint(model),
        "format": fmt.describe(),
        "keys": sorted({e["example_key"] for e in examples}),
    }
    if precision != "no":  # fp32 keys stay those of earlier caches
        payload["precision"] = precision
    return root / f"{hashlib.sha256(json.dumps(payload).encode()).hexdigest()}.safetensors"


def is_sharded(trainer) -> bool:
    """Whether the trainer shards parameters (FSDP, DeepSpeed ZeRO-3): its model then runs only once
    prepared, so a reference pass waits for the start of training (:class:`ReferenceCallback`)."""
    if trainer.is_fsdp_enabled:
        return True
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return plugin is not None and plugin.zero_stage == 3


def find_cached_reference(trainer, examples: list[Example], fmt: ChatFormat, root: Path):
    """``(path, reference)``: the cache file for ``examples`` under ``trainer.model``'s initial weights and
    the training precision, and its log-probs when it exists (else None; every process gets the same)."""
    from accelerate.utils import broadcast_object_list
    from safetensors.torch import load_file

    acc = trainer.accelerator
    found: list = [None, False]
    partitioned = any(hasattr(p, "ds_id") for p in trainer.model.parameters())  # ZeRO-3: gathering is collective
    if acc.is_main_process or partitioned:  # else the fingerprint needs the full weights only here
        path = reference_path(trainer.model, fmt, examples, root, acc.mixed_precision)
        found = [str(path), path.exists()]
    if acc.num_processes > 1:
        broadcast_object_list(found)
    path, hit = Path(found[0]), found[1]
    if not hit:
        return path, None
    loaded = [load_file(path) if acc.is_main_process else None]
    if acc.num_processes > 1:
        broadcast_object_list(loaded)
    return path, loaded[0]


def compute_cached_reference(trainer, examples: list[Example], fmt: ChatFormat, path: Path) -> dict[str, Tensor]:
    """Compute the reference log-probs of ``examples`` over all processes with ``trainer.model`` itself
    (LoRA: its adapter disabled) under the training autocast, and save them to ``path`` (main process).

    Unsharded (one process, DDP, ZeRO-2) this runs before training on the full model; sharded (FSDP,
    ZeRO-3) it must run once the model is prepared, before the first step: the forward then gathers the
    shards as training does, no second engine is built and no full copy is held."""
    from accelerate.utils import gather_object
    from safetensors.torch import save

    acc, model, args = trainer.accelerator, trainer.model, trainer.args
    if not is_sharded(trainer):
        require_full_weights(model)
        model.to(acc.device)
    no_adapter = model.disable_adapter() if is_peft(model) else contextlib.nullcontext()
    with no_adapter, acc.autocast():
        part = compute_reference_logps(
            model, examples, batch_size=args.ref_batch_size or args.per_device_train_batch_size,
            pad_id=trainer.pad_id, device=acc.device, rank=acc.process_index, world_size=acc.num_processes,
            progress=not args.disable_tqdm and acc.is_main_process,
        )
    reference = {}
    for shard in gather_object([part]) if acc.num_processes > 1 else [part]:
        reference.update(shard)
    if acc.is_main_process:
        meta = {"n_examples": str(len(reference)), "format": json.dumps(fmt.describe()),
                "precision": acc.mixed_precision}
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in reference.items()}, metadata=meta))
    acc.wait_for_everyone()
    return reference


def cached_reference(trainer, examples: list[Example], fmt: ChatFormat, root: Path) -> dict[str, Tensor]:
    """The reference log-probs of ``examples`` for ``trainer.model``: loaded from ``root`` when cached, else
    computed now over all processes and saved (an unsharded trainer; a sharded one uses
    :class:`ReferenceCallback`, as :class:`~deepalign.train.trainer.DeepAlignTrainer` does)."""
    path, reference = find_cached_reference(trainer, examples, fmt, root)
    return reference if reference is not None else compute_cached_reference(trainer, examples, fmt, path)


class ReferenceCallback(TrainerCallback):
    """Computes a sharded trainer's cached reference at the start of training, once its model is
    prepared and still holds the initial weights."""

    def __init__(self, trainer, examples: list[Example], path: Path):
        self.trainer, self.examples, self.path = trainer, examples, path

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.reference is None:
            if state.global_step > 0:
                raise DeepAlignError(f"resuming needs the cached reference {self.path}, which is gone")
            trainer.reference = compute_cached_reference(trainer, self.examples, trainer.format, self.path)
        return control


def frozen_copy(trainer):
    """A frozen copy of ``trainer.model`` for an on-the-fly reference, prepared like the policy (ZeRO-3:
    loaded again from the model's folder, partitioned as it loads, in an engine of its own; FSDP: sharded)."""
    if trainer.is_deepspeed_enabled and is_sharded(trainer):
        from transformers import AutoModelForCausalLM
        from trl.models import prepare_deepspeed

        model = trainer.model
        ref = AutoModelForCausalLM.from_pretrained(model.config._name_or_path, dtype=model.dtype)
        return prepare_deepspeed(ref.eval().requires_grad_(False), trainer.accelerator)
    require_full_weights(trainer.model)
    ref = copy.deepcopy(trainer.model).eval().requires_grad_(False)
    if trainer.is_deepspeed_enabled:
        from trl.models import prepare_deepspeed

        return prepare_deepspeed(ref, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        from trl.models import prepare_fsdp

        return prepare_fsdp(ref, trainer.accelerator)
    return trainer.accelerator.prepare_model(ref, evaluation_mode=True)
