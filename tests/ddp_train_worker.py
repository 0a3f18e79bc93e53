"""Run deepalign.train.run.train from the command line (for tests under `accelerate launch`).

python tests/ddp_train_worker.py MODEL_DIR DATA.jsonl KIND OUT_DIR '{"objective": "constrained", ...}'

The options are DeepAlignConfig's, plus ``"lora": true`` for a LoRA adapter (:data:`LORA`).

The process group is destroyed before exit, so no rank tears down while a collective is still alive
(which aborted a rank with "terminate called without an active exception").
"""

from __future__ import annotations

import json
import sys

from accelerate import PartialState

from deepalign.data import load_records
from deepalign.train.config import DeepAlignConfig
from deepalign.train.run import train

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def run(model_dir: str, data: str, kind: str, out_dir: str, options: dict) -> None:
    from peft import LoraConfig

    options = dict(options)
    peft_config = LoraConfig(**LORA) if options.pop("lora", False) else None
    train(model_dir, load_records(data, kind), DeepAlignConfig(**options), out_dir=out_dir, peft_config=peft_config)


if __name__ == "__main__":
    model_dir, data, kind, out_dir, options = sys.argv[1:6]
    try:
        run(model_dir, data, kind, out_dir, json.loads(options))
    finally:
        PartialState().destroy_process_group()
