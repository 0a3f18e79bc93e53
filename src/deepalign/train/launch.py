"""What ``accelerate launch`` asked for, and whether the run got it: precision, process count, FSDP and
DeepSpeed. A launch setting that was not applied stops the run with one clear line instead of a silent
fallback (accelerate drops an FSDP plugin on CPU and keeps the yaml's ``mixed_precision`` over
``bf16=False``).

The launcher passes its settings as environment variables (``ACCELERATE_MIXED_PRECISION``,
``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``, ``WORLD_SIZE``); these functions read them, the
process state is accelerate's own (``PartialState``).
"""

from __future__ import annotations

import os

from deepalign.errors import DeepAlignError

PRECISIONS = ("no", "bf16", "fp16")


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def launcher_precision() -> str | None:
    """The ``mixed_precision`` ``accelerate launch`` was given ("no", "bf16", "fp16"), or None outside it."""
    value = os.environ.get("ACCELERATE_MIXED_PRECISION")
    return value.lower() if value else None


def check_precision(bf16: bool, fp16: bool) -> str:
    """The training precision of ``bf16`` / ``fp16`` ("no", "bf16" or "fp16"); raise DeepAlignError when
    the launcher asked for another one (transformers would otherwise train in the launcher's silently)."""
    if bf16 and fp16:
        raise DeepAlignError("--bf16 and --fp16 both given: choose one precision")
    asked = "bf16" if bf16 else "fp16" if fp16 else "no"
    launched = launcher_precision()
    if launched is not None and launched != asked:
        flag = {"no": "neither --bf16 nor --fp16", "bf16": "--bf16 True", "fp16": "--fp16 True"}[asked]
        fix = {"no": "--mixed_precision no", "bf16": "--bf16 True", "fp16": "--fp16 True"}
        raise DeepAlignError(
            f"precision mismatch: accelerate launch has mixed_precision {launched} but the training arguments "
            f"say {flag}; pass {fix[launched]} to the command or launch with --mixed_precision {asked}"
        )
    return asked


def process_count() -> int:
    """The number of training processes (accelerate's ``PartialState``; 1 outside a launcher)."""
    from accelerate import PartialState

    return PartialState().num_processes


def check_launch(accelerator) -> None:
    """Raise DeepAlignError when the launcher's world size, FSDP or DeepSpeed request was not applied by
    ``accelerator`` (a ``accelerate.Accelerator``, e.g. a Trainer's)."""
    from accelerate.utils import DistributedType

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != accelerator.num_processes:
        raise DeepAlignError(
            f"the launcher started {world} processes but training runs as {accelerator.num_processes}: "
            "on CPU launch DDP/FSDP with ACCELERATE_USE_CPU=1, DeepSpeed with --ddp_backend gloo (docs/scaling.md)"
        )
    kind = accelerator.distributed_type
    if _flag("ACCELERATE_USE_FSDP") and kind != DistributedType.FSDP:
        raise DeepAlignError(
            f"FSDP was asked for (accelerate config) but accelerate set up {kind.value}: on CPU accelerate drops "
            "FSDP unless forced, set DEEPALIGN_FSDP_ON_CPU=1 to force it (docs/scaling.md)"
        )
    if _flag("ACCELERATE_USE_DEEPSPEED") and kind != DistributedType.DEEPSPEED:
        raise DeepAlignError(
            f"DeepSpeed was asked for (accelerate config) but accelerate set up {kind.value}: install deepspeed "
            "(pip install 'deepalign[deepspeed]'); on CPU see docs/scaling.md"
        )


FORCE_FSDP_ON_CPU = "DEEPALIGN_FSDP_ON_CPU"


def force_fsdp_on_cpu() -> bool:
    """Let FSDP run on CPU processes (gloo), for testing the sharded path without GPUs.

    accelerate sets up FSDP only for multi-accelerator distributed types, so with ``fsdp.yaml`` on CPU
    it silently trains as DDP. With ``DEEPALIGN_FSDP_ON_CPU=1`` (and ``ACCELERATE_USE_FSDP`` from the
    launcher) this marks the already started CPU process group as multi-device before the Trainer's
    ``Accelerator`` reads it, so accelerate builds its FSDP plugin as on GPUs. Call it before the
    ``Accelerator`` exists; returns whether it forced anything.
    """
    if not (_flag("ACCELERATE_USE_FSDP") and _flag(FORCE_FSDP_ON_CPU)):
        return False
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    state = PartialState()
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if AcceleratorState._shared_state:
        raise DeepAlignError(f"{FORCE_FSDP_ON_CPU}: an Accelerator already exists; force before the Trainer")
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU  # read once by AcceleratorState
    return True
