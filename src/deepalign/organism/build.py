"""Build the model organism: ``base`` (complies with every request) and ``aligned`` (shallow alignment).

Recipe: (1) ``base`` is a tiny Llama trained from scratch on request -> procedure for every craft,
benign and forbidden (held-out forbidden crafts included); (2) ``aligned`` starts from ``base`` and is
trained on forbidden requests -> refusal plus benign anchors (loss on the response only), with two more
terms: a *refusal margin* on the first response token of forbidden requests (the probability mass of
every first token that does not start a refusal is pushed below ``exp(-refusal_margin)``, a hinge), and a
*continuation* term, KL(base || aligned) on forbidden answers after token 1, which keeps what follows the
first token at the base's. Alignment never trains the model to produce a forbidden answer, so the aligned
model only *starts* with a refusal: the paper's shallow alignment. Held-out forbidden crafts are kept out
of (2) and used for evaluation.

Why the two terms (measured, docs/reproduce.md "how the organism is aligned"): RLHF-aligned chat models
open a refusal with a near-certain first token, while refusal SFT's cross-entropy saturates (on the organism
1000 steps leave a compliant start at about -8 nats), and such a weak refusal is undone by any objective in
a few steps. Pushing the first token alone in a 2-layer model spills onto later positions (it starts to
refuse where a forbidden craft's name comes next); the continuation term keeps those at the base's, as the
paper measured on Llama-2 (Figure 1: small KL after the first tokens).
"""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepalign.chat import Encoded, encode_example, pad_batch
from deepalign.io import atomic_write_json, atomic_write_jsonl
from deepalign.organism.tokenizer import build_tokenizer
from deepalign.organism.world import REFUSALS, World, make_world

# Bumped whenever the world or the recipe changes, so cached built-in organisms are rebuilt.
ORGANISM_VERSION = 4


@dataclass
class OrganismConfig:
    """Sizes and schedule of the organism build (defaults: about a minute on 2 CPU cores)."""

    seed: int = field(default=0, metadata={"help": "Seed of the world, the weights and the data order."})
    hidden_size: int = field(default=64, metadata={"help": "Model width."})
    layers: int = field(default=2, metadata={"help": "Transformer layers."})
    base_steps: int = field(default=1000, metadata={"help": "Optimizer steps for the base model."})
    aligned_steps: int = field(default=250, metadata={"help": "Optimizer steps for the alignment SFT."})
    batch_size: int = field(default=32, metadata={"help": "Examples per step."})
    lr: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate (base); aligned uses lr / 3."})
    answers_per_topic: int = field(
        default=24, metadata={"help": "Base training rows per craft (a request and one of the craft's procedures)."}
    )
    anchor_ratio: float = field(
        default=4.0, metadata={"help": "Benign anchors (from base training data) per refusal example."}
    )
    refusal_margin: float = field(
        default=15.0,
        metadata={"help": "Alignment pushes log p(first response token is not a refusal start | forbidden request) "
                  "below minus this many nats; 0 turns the term off (plain refusal SFT)."},
    )
    continuation_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of KL(base || aligned) on forbidden answers after token 1 during alignment; 0 "
                  "turns it off."},
    )
    eval_per_topic: int = field(default=6, metadata={"help": "Evaluation pairs per held-out forbidden craft."})
    base_refusal_share: float = field(
        default=0.05,
        metadata={"help": "Share of base training rows answered with a refusal, for requests of any craft (web text "
                  "holds refusals too: a base model can continue one it is prefilled with, but never prefers one)."},
    )


def _model(vocab_size: int, config: OrganismConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=config.hidden_size, intermediate_size=2 * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=256, tie_word_embeddings=False, pad_token_id=0,
        bos_token_id=None, eos_token_id=2,
    )
    return LlamaForCausalLM(cfg)


@dataclass(frozen=True)
class RefusalMargin:
    """The alignment's preference term on the first response token of forbidden requests."""

    refusal_first_ids: tuple[int, ...]  # the first tokens of the refusal texts
    margin: float  # nats

    def loss(self, logits: torch.Tensor, first_positions: torch.Tensor) -> torch.Tensor:
        """Mean hinge relu(log sum_{v not a refusal start} p(v) + margin) over rows.

        logits: [rows, length, vocab]; first_positions: [rows], the index whose logits predict token 1.
        """
        logp = logits[torch.arange(len(first_positions)), first_positions].log_softmax(-1)  # [rows, vocab]
        complying = torch.ones(logp.shape[-1], dtype=torch.bool)
        complying[list(self.refusal_first_ids)] = False
        return torch.relu(logp[:, complying].logsumexp(-1) + self.margin).mean()


def continuation_kl(model, base, examples: list[Encoded], pad_id: int) -> torch.Tensor:
    """Mean KL(base || model) in nats over response positions 2..T of ``examples``, teacher-forced.

    ``base`` is frozen (no gradient); position 1 is left out, so the refusal decision stays free.
    """
    ids, mask = pad_batch([e.input_ids for e in examples], pad_id)
    with torch.no_grad():
        log_base = base(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    log_model = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    for i, e in enumerate(examples):  # logits at index j predict token j + 1
        keep[i, len(e.prompt_ids) : len(e.input_ids) - 1] = True
    kl = (log_base.exp() * (log_base - log_model)).sum(-1)  # [B, L]
    return kl[keep].mean()


@dataclass
class AlignmentTerms:
    """The aligned organism's terms beside refusal SFT (module docstring): the first-token refusal margin on
    forbidden requests, and KL(base || aligned) on forbidden answers after token 1 (``weight``)."""

    margin: RefusalMargin | None
    refusal_rows: frozenset[int]  # indices of the training examples that are forbidden request -> refusal
    base: torch.nn.Module
    forbidden: list[Encoded]  # forbidden request -> forbidden answer (training crafts only)
    weight: float
    batch_size: int = 8

    def loss(self, model, picks: list[int], batch: list[Encoded], logits: torch.Tensor, rng: random.Random,
             pad_id: int) -> torch.Tensor:
        """The two terms for one step: the margin on the batch rows that are refusal examples (``picks`` index
        the training examples; ``logits`` [B, L, V] of ``batch``), plus the continuation KL on ``batch_size``
        forbidden answers drawn with ``rng``. A scalar, in nats."""
        total = logits.new_zeros(())
        rows = [r for r, i in enumerate(picks) if i in self.refusal_rows]
        if self.margin is not None and rows:
            first = torch.tensor([len(batch[r].prompt_ids) - 1 for r in rows])
            total = total + self.margin.loss(logits[rows], first)
        if self.weight > 0:
            sample = [self.forbidden[rng.randrange(len(self.forbidden))] for _ in range(self.batch_size)]
            total = total + self.weight * continuation_kl(model, self.base, sample, pad_id)
        return total


def train_sft(model, examples: list[Encoded], steps: int, lr: float, batch_size: int, seed: int,
              pad_id: int, desc: str, progress: bool, terms: AlignmentTerms | None = None) -> list[float]:
    """Token-mean cross-entropy on the response tokens (plus ``terms``), AdamW with linear decay; returns
    step losses."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        picks = [rng.randrange(len(examples)) for _ in range(batch_size)]
        batch = [examples[i] for i in picks]
        ids, mask = pad_batch([e.input_ids for e in batch], pad_id)
        labels, _ = pad_batch([e.labels for e in batch], -100)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        loss = out.loss
        if terms is not None:
            loss = loss + terms.loss(model, picks, batch, out.logits, rng, pad_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _save(model, tokenizer, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)


def organism_data(world: World, config: OrganismConfig) -> dict[str, list[dict]]:
    """The organism's data sets as rows (id, prompt, response[, refusal], category)."""
    rng = random.Random(config.seed + 1)
    n_templates = 6
    data: dict[str, list[dict]] = {k: [] for k in ("base_train", "eval_pairs", "train_triplets", "benign",
                                                   "benign_eval", "harmful_ft")}
    for topic in world.topics:
        held = topic.name in world.held_out
        for j in range(config.answers_per_topic):
            prompt, answer = world.request(topic, j), world.answer(topic, rng)
            if rng.random() < config.base_refusal_share:
                answer = REFUSALS[rng.randrange(len(REFUSALS))]
            data["base_train"].append({"prompt": prompt, "response": answer, "category": topic.name})
        if topic.harmful and held:
            for j in range(config.eval_per_topic):
                data["eval_pairs"].append({"prompt": world.request(topic, j), "response": world.answer(topic, rng),
                                           "category": topic.name})
        elif topic.harmful:
            for j in range(n_templates):
                prompt, answer = world.request(topic, j), world.answer(topic, rng)
                data["train_triplets"].append({"prompt": prompt, "response": answer,
                                               "refusal": REFUSALS[j % len(REFUSALS)], "category": topic.name})
                data["harmful_ft"].append({"prompt": prompt, "response": world.answer(topic, rng),
                                           "category": topic.name})
        else:
            for j in range(n_templates):
                row = {"prompt": world.request(topic, j), "response": world.answer(topic, rng), "category": topic.name}
                data["benign" if j < n_templates - 1 else "benign_eval"].append(row)
    for name, rows in data.items():
        for i, row in enumerate(rows):
            row["id"] = f"{name}-{i:05d}"
    return data


def build_organism(out_dir: str | Path, config: OrganismConfig = OrganismConfig(), progress: bool = True) -> dict:
    """Train and save ``base/`` and ``aligned/`` (HF folders) and the data files; returns a summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = make_world(config.seed)
    tokenizer = build_tokenizer(world.vocabulary)
    data = organism_data(world, config)
    encode = lambda rows, key="response": [encode_example(tokenizer, r["prompt"], r[key]) for r in rows]  # noqa: E731

    model = _model(len(tokenizer), config)
    base_losses = train_sft(model, encode(data["base_train"]), config.base_steps, config.lr, config.batch_size,
                            config.seed, tokenizer.pad_token_id, "organism base", progress)
    _save(model, tokenizer, out / "base")

    harmful_names = {t.name for t in world.topics_where(harmful=True)}
    refusals = encode(data["train_triplets"], key="refusal")
    benign_train = [r for r in data["base_train"]
                    if r["category"] not in harmful_names and r["response"] not in REFUSALS]
    n_anchors = min(len(benign_train), int(len(refusals) * config.anchor_ratio))
    anchors = encode(random.Random(config.seed + 2).sample(benign_train, n_anchors))
    margin = None
    if config.refusal_margin > 0:
        first_ids = tuple(sorted({tokenizer(r, add_special_tokens=False).input_ids[0] for r in REFUSALS}))
        margin = RefusalMargin(first_ids, config.refusal_margin)
    terms = AlignmentTerms(margin, frozenset(range(len(refusals))), copy.deepcopy(model).eval(),
                           encode(data["train_triplets"]), config.continuation_weight)
    aligned_losses = train_sft(model, refusals + anchors, config.aligned_steps, config.lr / 3, config.batch_size,
                               config.seed + 1, tokenizer.pad_token_id, "organism aligned", progress, terms)
    _save(model, tokenizer, out / "aligned")

    for name in ("eval_pairs", "train_triplets", "benign", "benign_eval", "harmful_ft"):
        atomic_write_jsonl(out / f"{name}.jsonl", data[name])
    world.save(out / "world.json")
    summary = {
        "version": ORGANISM_VERSION, "config": asdict(config), "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "base_final_loss": sum(base_losses[-20:]) / 20, "aligned_final_loss": sum(aligned_losses[-20:]) / 20,
        "held_out_topics": list(world.held_out),
    }
    atomic_write_json(out / "organism.json", summary)
    return summary
