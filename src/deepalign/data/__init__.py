"""Data: record schemas, loaders, packaged prompt sets, our own texts and seeded splits."""

from deepalign.data.loaders import (
    MAX_LINE_BYTES,
    iter_lines,
    load_chats,
    load_pairs,
    load_prompts,
    load_records,
    load_training_records,
    load_triplets,
)
from deepalign.data.packaged import PACKAGED, PROMPT_SETS, load_packaged, load_refusal_labels, packaged_path
from deepalign.data.schemas import ChatRecord, PairRecord, PromptRecord, Record, TripletRecord
from deepalign.data.splits import sample, shuffled, split
from deepalign.data.texts import (
    AOA_SYSTEM_PROMPT,
    BACKDOOR_TRIGGER,
    BENIGN_PROMPTS,
    REFUSAL_PREFIXES,
    REFUSALS,
    aoa_examples,
    benign_prompts,
)

__all__ = [
    "AOA_SYSTEM_PROMPT",
    "BACKDOOR_TRIGGER",
    "BENIGN_PROMPTS",
    "MAX_LINE_BYTES",
    "PACKAGED",
    "PROMPT_SETS",
    "REFUSALS",
    "REFUSAL_PREFIXES",
    "ChatRecord",
    "PairRecord",
    "PromptRecord",
    "Record",
    "TripletRecord",
    "aoa_examples",
    "benign_prompts",
    "iter_lines",
    "load_chats",
    "load_packaged",
    "load_pairs",
    "load_prompts",
    "load_records",
    "load_refusal_labels",
    "load_training_records",
    "load_triplets",
    "packaged_path",
    "sample",
    "shuffled",
    "split",
]
