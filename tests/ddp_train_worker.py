"""Run deepalign.train.run.train from the command line (for tests under `accelerate launch`).

python tests/ddp_train_worker.py MODEL_DIR DATA.jsonl KIND OUT_DIR '{"objective": "constrained", ...}'

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

if __name__ == "__main__":
    model_dir, data, kind, out_dir, options = sys.argv[1:6]
    try:
        train(model_dir, load_records(data, kind), DeepAlignConfig(**json.loads(options)), out_dir=out_dir)
    finally:
        PartialState().destroy_process_group()
