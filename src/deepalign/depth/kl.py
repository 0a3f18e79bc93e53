"""The alignment-depth profile: per-position KL(pi_aligned || pi_base) over response tokens (paper Fig. 1).

For each (harmful prompt x, harmful answer y) pair and response position t = 1..T (EOS included),
teacher-forced on y:

    KL_t = sum_v pi_a(v | x, y_<t) * (log pi_a(v | x, y_<t) - log pi_b(v | x, y_<t))   [nats]

averaged over the examples that have a position t. Both models see the same response token ids; the
prompt is rendered for each model by its own format (the base may use its own chat template, a plain
or Alpaca template, or exactly the aligned model's prompt ids), which is recorded with the results.
Loading the models and writing the files is ``deepalign.pipeline.kl.run_kl``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepalign.chat import TEMPLATES, ChatFormat, encode_example, encode_prompt, pad_batch
from deepalign.errors import DeepAlignError
from deepalign.models import same_vocabulary

BASE_TEMPLATES = ("chat", "plain", "alpaca", "same")


@dataclass
class KLConfig:
    """Options of the KL depth profile."""

    template: str = field(default="chat", metadata={"help": "Prompt template of the aligned model.",
                                                    "choices": TEMPLATES})
    system: str | None = field(default=None, metadata={"help": "System prompt (None = template default)."})
    base_template: str = field(
        default="chat",
        metadata={
            "help": "How the base model's prompt is formatted: 'chat' (its own chat template), 'plain', "
            "'alpaca', or 'same' (exactly the aligned model's prompt ids).",
            "choices": BASE_TEMPLATES,
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    max_positions: int = field(default=64, metadata={"help": "Response positions kept in the profile."})

    def __post_init__(self) -> None:
        if self.base_template not in BASE_TEMPLATES:
            raise DeepAlignError(f"unknown base template '{self.base_template}': choose {', '.join(BASE_TEMPLATES)}")
        if self.batch_size < 1 or self.max_positions < 1:
            raise DeepAlignError("batch_size and max_positions must be positive")


@dataclass
class KLProfile:
    """Per-position statistics: ``mean[t-1]``, ``sem[t-1]`` (nats) and ``count[t-1]`` for t = 1..len."""

    mean: list[float]
    sem: list[float]
    count: list[int]

    def share_first(self, n: int = 5) -> float | None:
        """Share of the profile's total KL mass (sum of per-position means) held by positions 1..n.

        None when the profile holds no KL at all (identical models)."""
        total = sum(self.mean)
        return sum(self.mean[:n]) / total if total > 0 else None

    def position_holding(self, fraction: float = 0.9) -> int | None:
        """Smallest t such that positions 1..t hold ``fraction`` of the KL mass (None without KL)."""
        total, running = sum(self.mean), 0.0
        if total <= 0:
            return None
        for t, m in enumerate(self.mean, start=1):
            running += m
            if running >= fraction * total:
                return t
        return len(self.mean)

    def rows(self) -> list[dict]:
        return [
            {"id": f"t{t:04d}", "position": t, "mean": m, "sem": s, "count": c}
            for t, (m, s, c) in enumerate(zip(self.mean, self.sem, self.count, strict=True), start=1)
        ]

    def summary(self) -> dict:
        return {
            "share_first_5": self.share_first(5),
            "position_holding_90pct": self.position_holding(0.9),
            "kl_position_1": self.mean[0] if self.mean else None,
            "kl_total": sum(self.mean),
            "max_count": max(self.count, default=0),
        }


@dataclass(frozen=True)
class KLItem:
    """One pair as token ids: each model's prompt ids and the shared response ids (EOS last)."""

    aligned_prompt: list[int]
    base_prompt: list[int]
    response: list[int]


def build_items(aligned_tok, base_tok, pairs: Sequence, config: KLConfig) -> list[KLItem]:
    """Token ids for every pair (objects with ``.prompt`` and ``.response``)."""
    if not same_vocabulary(aligned_tok, base_tok):
        raise DeepAlignError("the aligned and base tokenizers have different vocabularies: KL needs a shared one")
    fmt = ChatFormat(template=config.template, system=config.system)
    base_fmt = None if config.base_template == "same" else ChatFormat(config.base_template, config.system)
    items = []
    for pair in pairs:
        enc = encode_example(aligned_tok, pair.prompt, pair.response, fmt)
        base_prompt = enc.prompt_ids if base_fmt is None else encode_prompt(base_tok, pair.prompt, base_fmt)
        items.append(KLItem(enc.prompt_ids, base_prompt, enc.response_ids))
    return items


KL_CHUNK = 8  # response positions per KL kernel call: keeps [chunk, V] float32 tensors cache-sized


def _response_logits(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Logits ``[B, K, V]`` from the first position that predicts a response token on, and per row the
    index into K where that row's response predictions start.

    ``logits_to_keep`` keeps the LM head off most of the prompt; rows are right-padded.
    """
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    ids, mask = pad_batch(seqs, pad_id, side="right")
    first = min(len(p) for p in prompts) - 1  # logits at i predict token i + 1
    keep = torch.arange(first, ids.shape[1] - 1)
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), logits_to_keep=keep).logits
    return logits, [len(p) - 1 - first for p in prompts]


def _kl_rows(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """KL(softmax(za) || softmax(zb)) per row: ``[n, V]`` logits -> ``[n]`` float32 nats."""
    la = F.log_softmax(za.float(), dim=-1)
    lb = F.log_softmax(zb.float(), dim=-1)
    return (la.exp() * (la - lb)).sum(-1)


def per_token_kl(aligned, base, batch: list[KLItem], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KL per response position for a batch: ``(kl [B, T] float32, valid [B, T] bool)``, T = longest response.

    Each row's response logits are taken as views (no gather copy) and reduced in chunks of
    ``KL_CHUNK`` positions, which keeps the float32 softmax work in cache.
    """
    responses = [it.response for it in batch]
    za, starts_a = _response_logits(aligned, [it.aligned_prompt for it in batch], responses, pad_id)
    zb, starts_b = _response_logits(base, [it.base_prompt for it in batch], responses, pad_id)
    zb = zb.to(za.device)
    if za.shape[-1] != zb.shape[-1]:
        raise DeepAlignError(f"the models' output sizes differ ({za.shape[-1]} vs {zb.shape[-1]} logits)")
    t_max = max(len(r) for r in responses)
    kl = torch.zeros(len(batch), t_max, dtype=torch.float32, device=za.device)
    valid = torch.zeros(len(batch), t_max, dtype=torch.bool)
    for i, response in enumerate(responses):
        for c in range(0, len(response), KL_CHUNK):
            n = min(KL_CHUNK, len(response) - c)
            a, b = starts_a[i] + c, starts_b[i] + c
            kl[i, c : c + n] = _kl_rows(za[i, a : a + n], zb[i, b : b + n])
        valid[i, : len(response)] = True
    return kl, valid.to(kl.device)


@torch.inference_mode()
def kl_profile(
    aligned, base, items: list[KLItem], config: KLConfig, *, pad_id: int, progress: bool = True
) -> KLProfile:
    """Mean, standard error and count of KL(aligned || base) at response positions 1..max_positions.

    Items are sorted by length so batches hold similar lengths; sums are accumulated in float64.
    """
    if not items:
        raise DeepAlignError("no pairs to profile")
    order = sorted(range(len(items)), key=lambda i: (len(items[i].aligned_prompt) + len(items[i].response), i))
    width = config.max_positions
    total = torch.zeros(width, dtype=torch.float64)
    total_sq = torch.zeros(width, dtype=torch.float64)
    count = torch.zeros(width, dtype=torch.long)
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    for batch_idx in tqdm(batches, desc="KL profile", unit="batch", disable=not progress):
        kl, valid = per_token_kl(aligned, base, [items[i] for i in batch_idx], pad_id)
        kl, valid = kl[:, :width].double().cpu(), valid[:, :width].cpu()
        n = kl.shape[1]
        total[:n] += kl.sum(0)
        total_sq[:n] += (kl * kl).sum(0)
        count[:n] += valid.sum(0)
    used = int((count > 0).sum())
    mean, sem = [], []
    for t in range(used):
        c = int(count[t])
        m = float(total[t]) / c
        var = max(float(total_sq[t]) / c - m * m, 0.0) * c / (c - 1) if c > 1 else 0.0
        mean.append(m)
        sem.append(math.sqrt(var / c))
    return KLProfile(mean=mean, sem=sem, count=[int(c) for c in count[:used]])
