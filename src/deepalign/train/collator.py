"""Collation of training examples (see :mod:`deepalign.train.augment`) into right-padded batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deepalign.chat import pad_batch
from deepalign.train.augment import Example
from deepalign.train.objectives import IGNORE_INDEX


def flatten(items: Iterable[Example | list[Example]]) -> list[Example]:
    """Examples, with the groups of an augmented dataset (one safety example and its anchors) unrolled."""
    return [e for item in items for e in (item if isinstance(item, list) else [item])]


@dataclass
class DeepAlignCollator:
    """Items (examples, or lists of examples from an augmented dataset) -> a right-padded batch.

    Returns input_ids [B, L] long, attention_mask [B, L] long, labels [B, L] long (-100 on padding) and
    example_keys (list of B str).
    """

    pad_id: int

    def __call__(self, items: Sequence[Example | list[Example]]) -> dict:
        examples = flatten(items)
        input_ids, attention_mask = pad_batch([e["input_ids"] for e in examples], self.pad_id)
        labels, _ = pad_batch([e["labels"] for e in examples], IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "example_keys": [e["example_key"] for e in examples],
        }
