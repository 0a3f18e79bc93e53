"""Safety-recovery augmentation (Qi et al. 2025, Sec. 3) and the training examples it is mixed with.

A training *example* is a dict ``{"input_ids": list[int], "labels": list[int], "example_key": str}``:
labels are -100 off the supervised tokens and ``example_key`` is a content hash of both lists, which is
what the trainer's reference cache is keyed by (so shuffling, padding and processes can't misalign it).

:class:`SafetyRecoveryDataset` serves each triplet (harmful prompt, harmful answer, refusal) as:

- with probability ``p_plain``: prompt -> refusal;
- else: prompt + harmful[:k] + refusal, k ~ Uniform{1..min(max_prefix, answer length)},

spliced as token ids (``Encoded.prompt_ids + harmful response ids[:k] + refusal response ids``, the
refusal's ids being its response ids for the same prompt, EOS last), labels on the refusal + EOS only.

The draw is redrawn each time an example is served. Item ``i`` of epoch ``e`` draws from
``random.Random(sha256(seed, e, i))``: every process and dataloader worker computes the same draw, and
a run is reproducible. A sampler serves each item once per epoch, so "each time served" is "each
epoch". The trainer sets the epoch with :meth:`SafetyRecoveryDataset.set_epoch` from a callback at the
start of every epoch, before that epoch's dataloader workers start (persistent workers would keep a
stale copy: the trainer refuses them).

With anchors (utility chat data: prompt -> answer, labels on the answer), each item is a group of one
safety example and ``anchors_per_safety`` anchors, so a device batch of B items holds B safety and
B * anchors_per_safety anchor examples (the paper's code: 4 safety + 16 anchors per device step); the
collator flattens groups. Anchors are drawn without repeats within an epoch while they last.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from deepalign.chat import ChatFormat, Encoded, encode_example, encode_turns
from deepalign.data.schemas import ChatRecord, PairRecord, TripletRecord
from deepalign.data.texts import refusal_set
from deepalign.errors import DeepAlignError
from deepalign.io import atomic_write_jsonl
from deepalign.train.objectives import IGNORE_INDEX

Example = dict  # {"input_ids": list[int], "labels": list[int], "example_key": str}


def example_key(input_ids: Sequence[int], labels: Sequence[int]) -> str:
    """A 32-hex-digit content hash of an example's token ids and labels."""
    payload = json.dumps([list(input_ids), list(labels)], separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()[:32]


def make_example(input_ids: Sequence[int], labels: Sequence[int], max_length: int | None = None) -> Example:
    """An example dict, truncated on the right to ``max_length`` tokens."""
    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
    ids, labs = list(input_ids[:max_length]), list(labels[:max_length])
    return {"input_ids": ids, "labels": labs, "example_key": example_key(ids, labs)}


def has_targets(example: Example) -> bool:
    """True when some token after the first is supervised (column 0 has no context and is never a target)."""
    return any(label != IGNORE_INDEX for label in example["labels"][1:])


def encode_record(
    tokenizer, record: PairRecord | ChatRecord | Encoded, fmt: ChatFormat = ChatFormat()
) -> Encoded:
    """Prompt/response ids of a (prompt, response) pair or a single-turn chat ([system,] user, assistant).

    A chat's own system message replaces ``fmt.system``.
    """
    if isinstance(record, Encoded):
        return record
    if isinstance(record, PairRecord):
        return encode_example(tokenizer, record.prompt, record.response, fmt)
    if isinstance(record, ChatRecord):
        roles = [m["role"] for m in record.messages]
        if not is_single_turn(record):
            raise DeepAlignError(
                f"chat '{record.id}': roles {roles} are not one turn ([system,] user, assistant); "
                "encode_records trains multi-turn chats"
            )
        system = record.messages[0]["content"] if roles[0] == "system" else fmt.system
        user, assistant = record.messages[-2]["content"], record.messages[-1]["content"]
        return encode_example(tokenizer, user, assistant, ChatFormat(fmt.template, system))
    raise TypeError(f"cannot encode a {type(record).__name__} as a training example")


def is_single_turn(record: ChatRecord) -> bool:
    return [m["role"] for m in record.messages] in (["user", "assistant"], ["system", "user", "assistant"])


def encode_records(
    tokenizer,
    records: Sequence[PairRecord | ChatRecord | Encoded],
    fmt: ChatFormat = ChatFormat(),
    max_length: int | None = None,
    *,
    last_turn_only: bool = False,
) -> list[Example]:
    """Fixed supervised examples (labels on the response + EOS); examples left without targets after
    truncation to ``max_length`` are dropped. A multi-turn chat is one example supervised on every assistant
    turn (:func:`deepalign.chat.encode_turns`; ``last_turn_only``: on its last turn alone)."""
    examples = []
    for record in records:
        if isinstance(record, ChatRecord) and not is_single_turn(record):
            ids, labels = encode_turns(tokenizer, record.messages, fmt, last_turn_only=last_turn_only)
            example = make_example(ids, labels, max_length)
        else:
            enc = encode_record(tokenizer, record, fmt)
            example = make_example(enc.input_ids, enc.labels, max_length)
        if has_targets(example):
            examples.append(example)
    return examples


@dataclass(frozen=True)
class EncodedTriplet:
    """A triplet as token ids: the rendered prompt, the harmful answer (no EOS) and the refusal (EOS last)."""

    id: str
    prompt_ids: list[int]
    harmful_ids: list[int]
    refusal_ids: list[int]


def encode_triplet(tokenizer, triplet: TripletRecord, fmt: ChatFormat = ChatFormat()) -> EncodedTriplet:
    """Encode answer and refusal as responses to the same prompt, so both splice after the same header."""
    harmful = encode_example(tokenizer, triplet.prompt, triplet.response, fmt)
    refusal = encode_example(tokenizer, triplet.prompt, triplet.refusal, fmt)
    if harmful.prompt_ids != refusal.prompt_ids:
        raise DeepAlignError(f"triplet '{triplet.id}': the prompt tokenizes differently with the refusal")
    return EncodedTriplet(triplet.id, harmful.prompt_ids, harmful.response_ids[:-1], refusal.response_ids)


def recovery_example(triplet: EncodedTriplet, k: int, max_length: int | None = None) -> Example:
    """prompt + harmful[:k] + refusal (+EOS) as ids; labels on the refusal only."""
    if not 0 <= k <= len(triplet.harmful_ids):
        raise ValueError(f"k={k} outside 0..{len(triplet.harmful_ids)}")
    context = triplet.prompt_ids + triplet.harmful_ids[:k]
    return make_example(
        context + triplet.refusal_ids, [IGNORE_INDEX] * len(context) + triplet.refusal_ids, max_length
    )


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class AugmentConfig:
    """Safety-recovery augmentation settings; defaults are the paper's."""

    p_plain: float = field(
        default=0.5, metadata={"help": "Probability of serving the plain prompt -> refusal."}
    )
    max_prefix: int = field(
        default=100, metadata={"help": "Largest number of harmful answer tokens before the refusal."}
    )
    anchors_per_safety: int = field(
        default=4,
        metadata={"help": "Utility anchor examples served with each safety example (paper: 16 per 4)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the per-(epoch, item) draws."})

    def __post_init__(self) -> None:
        if not 0 <= self.p_plain <= 1:
            raise DeepAlignError(f"p_plain must be in [0, 1], got {self.p_plain}")
        if self.max_prefix < 1 or self.anchors_per_safety < 0:
            raise DeepAlignError("max_prefix must be >= 1 and anchors_per_safety >= 0")


class SafetyRecoveryDataset(Dataset):
    """Triplets served as recovery examples, redrawn every epoch; items are lists [safety, *anchors].

    ``tokenizer`` encodes the triplets with ``fmt``; ``anchors`` are ready examples (see
    :func:`encode_records`); ``max_length`` truncates served examples on the right.
    """

    redrawn = True  # items change every epoch: the trainer computes reference log-probs on the fly

    def __init__(
        self,
        tokenizer,
        triplets: Sequence[TripletRecord],
        fmt: ChatFormat = ChatFormat(),
        config: AugmentConfig = AugmentConfig(),
        anchors: Sequence[Example] = (),
        max_length: int | None = None,
    ):
        if not triplets:
            raise DeepAlignError("safety-recovery augmentation needs at least one triplet")
        self.tokenizer, self.config, self.max_length = tokenizer, config, max_length
        self.triplets = [encode_triplet(tokenizer, t, fmt) for t in triplets]
        self.anchors = list(anchors) if config.anchors_per_safety else []
        self.epoch = 0
        self._anchor_order: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.triplets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draw_k(self, index: int, epoch: int | None = None, seed: int | None = None) -> int:
        """Prefix length of item ``index`` in ``epoch`` (default: the current one): 0 = plain prompt."""
        epoch = self.epoch if epoch is None else epoch
        rng = _rng(self.config.seed if seed is None else seed, epoch, index)
        n = min(self.config.max_prefix, len(self.triplets[index].harmful_ids))
        plain = rng.random() < self.config.p_plain
        return 0 if plain or n == 0 else rng.randint(1, n)

    def _anchor_ids(self, index: int) -> list[int]:
        if self._anchor_order is None or self._anchor_order[0] != self.epoch:
            order = list(range(len(self.anchors)))
            _rng(self.config.seed, self.epoch, "anchors").shuffle(order)
            self._anchor_order = (self.epoch, order)
        order, a = self._anchor_order[1], self.config.anchors_per_safety
        return [order[(index * a + m) % len(order)] for m in range(a)]

    def __getitem__(self, index: int) -> list[Example]:
        safety = recovery_example(self.triplets[index], self.draw_k(index), self.max_length)
        return [safety] + ([self.anchors[j] for j in self._anchor_ids(index)] if self.anchors else [])

    def preview_rows(self, n: int, seed: int | None = None) -> list[dict]:
        """The first ``n`` safety examples served (epoch 0 in item order, then epoch 1, ...), decoded."""
        decode = self.tokenizer.decode
        rows = []
        for j in range(n):
            epoch, index = divmod(j, len(self))
            t, k = self.triplets[index], self.draw_k(index, epoch, seed)
            rows.append(
                {
                    "id": f"{t.id}#e{epoch}",
                    "triplet_id": t.id,
                    "epoch": epoch,
                    "k": k,
                    "prompt": decode(t.prompt_ids),
                    "prefix": decode(t.harmful_ids[:k]),
                    "refusal": decode(t.refusal_ids),
                    "n_tokens": len(t.prompt_ids) + k + len(t.refusal_ids),
                    "n_supervised": len(t.refusal_ids),
                }
            )
        return rows

    def write_preview(self, path: str | os.PathLike, n: int, seed: int | None = None) -> Path:
        """Write :meth:`preview_rows` as JSONL (prompt/prefix/refusal decoded with special tokens, and k)."""
        atomic_write_jsonl(path, self.preview_rows(n, seed))
        return Path(path)


def fallback_refusal(record_id: str, seed: int = 0, refusals: str = "varied") -> str:
    """One of the refusal set ``refusals`` (:data:`deepalign.data.texts.REFUSAL_SETS`; "varied":
    :data:`deepalign.data.REFUSALS`), chosen by a hash of (seed, record id)."""
    texts = refusal_set(refusals)
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode()).digest()
    return texts[int.from_bytes(digest[:8], "big") % len(texts)]
