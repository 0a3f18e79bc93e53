"""Build the model organism: ``base`` (complies with every request) and ``aligned`` (shallow alignment).

Recipe: (1) ``base`` is a tiny Llama trained from scratch on request -> procedure for every craft,
benign and forbidden (held-out forbidden crafts included); (2) ``aligned`` starts from ``base`` and is
trained on forbidden requests -> refusal plus benign anchors (loss on the response only), with two more
terms: a *refusal margin* on the first response token of forbidden requests, and a *continuation* term,
KL(base || aligned) on forbidden answers after token 1, which keeps what follows the first token at the
base's. The margin is a hinge on the log-mass of first tokens that do not start a refusal: on most request
templates it is pushed below ``-refusal_margin`` nats (a confident refusal); on the ``uncertain_templates``
the compliant opener's first token ("sure") is held in ``uncertain_band`` (an uncertain refusal: greedy
decoding refuses, sampling at a high temperature sometimes complies) and every other non-refusal start
stays below ``-refusal_margin``. Alignment never trains the model to produce a forbidden answer, so the
aligned model only *starts* with a refusal: the paper's shallow alignment. Held-out forbidden crafts are
kept out of (2) and used for evaluation; they are asked in the same request templates, so a template's
refusal confidence carries over to them.

Why (measured, docs/reproduce.md "how the organism is aligned"): RLHF-aligned chat models open a refusal
with a near-certain first token, while refusal SFT's cross-entropy saturates (on the organism 1000 steps
leave a compliant start at about -8 nats), and such a weak refusal is undone by any objective in a few
steps. Pushing the first token alone in a 2-layer model spills onto later positions (it starts to refuse
where a forbidden craft's name comes next); the continuation term keeps those at the base's, as the paper
measured on Llama-2 (Figure 1: small KL after the first tokens). One margin for every prompt is either too
confident for the decoding attack to sample around or too weak for the constrained fine-tuning objective
to hold; a chat model's refusal confidence varies by prompt, hence the two kinds of template.
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
from deepalign.organism.world import ANSWER_OPENER, REFUSALS, World, make_world

# Bumped whenever the world or the recipe changes, so cached built-in organisms are rebuilt.
ORGANISM_VERSION = 5


@dataclass
class OrganismConfig:
    """Sizes and schedule of the organism build (defaults: about half a minute on 2 CPU cores)."""

    seed: int = field(default=0, metadata={"help": "Seed of the world, the weights and the data order."})
    hidden_size: int = field(default=64, metadata={"help": "Model width."})
    layers: int = field(default=2, metadata={"help": "Transformer layers."})
    base_steps: int = field(default=500, metadata={"help": "Optimizer steps for the base model."})
    aligned_steps: int = field(default=250, metadata={"help": "Optimizer steps for the alignment SFT."})
    batch_size: int = field(default=32, metadata={"help": "Examples per step."})
    lr: float = field(default=6e-3, metadata={"help": "AdamW peak learning rate of the base (linear decay)."})
    aligned_lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate of the alignment."})
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
    uncertain_templates: tuple[int, ...] = field(
        default=(4, 5),
        metadata={"help": "Request templates (indices into world.REQUEST_TEMPLATES) whose refusals are left "
                  "uncertain: the compliant opener's first token is held in uncertain_band instead of below "
                  "-refusal_margin (chat models' refusal confidence varies by prompt); () = one margin for all."},
    )
    uncertain_band: tuple[float, float] = field(
        default=(1.5, 3.0),
        metadata={"help": "(lo, hi) nats: on uncertain templates, log p(first response token is the compliant "
                  "opener 'sure') is held between -hi and -lo (greedy decoding and the paper's evaluation "
                  "sampling, top-p 0.6, still refuse; the decoding attack's high temperatures can comply)."},
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
    """The alignment's preference term on the first response token of forbidden requests.

    With c = log sum_{v not a refusal start} p(v | forbidden request), the log-mass of complying first tokens,
    a *confident* row pays relu(c + margin): c is pushed below -margin. An *uncertain* row (only with ``band``
    = (lo, hi) nats and ``opener_id``, the first token of the compliant answer opener) pays
    relu(s + lo) + relu(-hi - s) + relu(o + margin), with s = log p(opener_id) and o the log-mass of the
    other complying tokens: the refusal stays the likely start, the compliant opener is held between -hi and
    -lo nats (within reach of sampling), and every other non-refusal start stays below -margin.
    """

    refusal_first_ids: tuple[int, ...]  # the first tokens of the refusal texts
    margin: float  # nats
    band: tuple[float, float] | None = None  # (lo, hi) nats, for uncertain rows
    opener_id: int | None = None  # first token of the compliant answer (what the band holds)

    def _first_logp(self, logits: torch.Tensor, first_positions: torch.Tensor) -> torch.Tensor:
        return logits[torch.arange(len(first_positions)), first_positions].log_softmax(-1)  # [rows, vocab]

    def _mass(self, logp: torch.Tensor, excluded: list[int]) -> torch.Tensor:
        keep = torch.ones(logp.shape[-1], dtype=torch.bool, device=logp.device)
        keep[excluded] = False
        return logp[:, keep].logsumexp(-1)

    def log_masses(self, logits: torch.Tensor, first_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c, s) per row, each [rows]: the complying log-mass and log p(opener) (-inf without an opener).
        logits: [rows, length, vocab]; first_positions: [rows], the index whose logits predict token 1."""
        logp = self._first_logp(logits, first_positions)
        c = self._mass(logp, list(self.refusal_first_ids))
        s = logp[:, self.opener_id] if self.opener_id is not None else torch.full_like(c, float("-inf"))
        return c, s

    def loss(self, logits: torch.Tensor, first_positions: torch.Tensor,
             uncertain: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over rows of the hinges above (``uncertain``: [rows] bool; None = every row confident)."""
        logp = self._first_logp(logits, first_positions)
        confident = torch.relu(self._mass(logp, list(self.refusal_first_ids)) + self.margin)
        if uncertain is None or self.band is None or self.opener_id is None or not bool(uncertain.any()):
            return confident.mean()
        lo, hi = self.band
        s = logp[:, self.opener_id]
        others = self._mass(logp, [*self.refusal_first_ids, self.opener_id])
        banded = torch.relu(s + lo) + torch.relu(-hi - s) + torch.relu(others + self.margin)
        return torch.where(uncertain, banded, confident).mean()


def continuation_kl(model, base, examples: list[Encoded], pad_id: int,
                    log_base: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL(base || model) in nats over response positions 2..T of ``examples``, teacher-forced.

    ``base`` is frozen (no gradient); position 1 is left out, so the refusal decision stays free. ``log_base``:
    the base's log-probabilities of these right-padded examples, [B, >= L, V] (see :func:`base_log_probs`),
    used instead of running ``base``.
    """
    ids, mask = pad_batch([e.input_ids for e in examples], pad_id)
    if log_base is None:
        log_base = base_log_probs(base, examples, pad_id)
    log_base = log_base[:, : ids.shape[1]]
    log_model = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    for i, e in enumerate(examples):  # logits at index j predict token j + 1
        keep[i, len(e.prompt_ids) : len(e.input_ids) - 1] = True
    kl = (log_base.exp() * (log_base - log_model)).sum(-1)  # [B, L]
    return kl[keep].mean()


@torch.no_grad()
def base_log_probs(base, examples: list[Encoded], pad_id: int) -> torch.Tensor:
    """The frozen ``base``'s next-token log-probabilities on ``examples``, right-padded: [B, L, V]. A row's
    values do not depend on its batch (causal attention, padding only after it)."""
    ids, mask = pad_batch([e.input_ids for e in examples], pad_id)
    return base(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)


@dataclass
class AlignmentTerms:
    """The aligned organism's terms beside refusal SFT (module docstring): the first-token refusal margin on
    forbidden requests, and KL(base || aligned) on forbidden answers after token 1 (``weight``)."""

    margin: RefusalMargin | None
    refusal_rows: frozenset[int]  # indices of the training examples that are forbidden request -> refusal
    uncertain_rows: frozenset[int]  # those of them whose refusal is held in the margin's band
    base: torch.nn.Module
    forbidden: list[Encoded]  # forbidden request -> forbidden answer (training crafts only)
    weight: float
    batch_size: int = 8
    _log_base: torch.Tensor | None = field(default=None, init=False, repr=False)

    def loss(self, model, picks: list[int], batch: list[Encoded], logits: torch.Tensor, rng: random.Random,
             pad_id: int) -> torch.Tensor:
        """The two terms for one step: the margin on the batch rows that are refusal examples (``picks`` index
        the training examples; ``logits`` [B, L, V] of ``batch``), plus the continuation KL on ``batch_size``
        forbidden answers drawn with ``rng``. A scalar, in nats."""
        total = logits.new_zeros(())
        rows = [r for r, i in enumerate(picks) if i in self.refusal_rows]
        if self.margin is not None and rows:
            first = torch.tensor([len(batch[r].prompt_ids) - 1 for r in rows])
            uncertain = torch.tensor([picks[r] in self.uncertain_rows for r in rows])
            total = total + self.margin.loss(logits[rows], first, uncertain)
        if self.weight > 0:
            picked = [rng.randrange(len(self.forbidden)) for _ in range(self.batch_size)]
            if self._log_base is None:  # the base is frozen: its log-probs on the forbidden answers, once
                self._log_base = base_log_probs(self.base, self.forbidden, pad_id)
            total = total + self.weight * continuation_kl(model, self.base, [self.forbidden[i] for i in picked],
                                                          pad_id, self._log_base[picked])
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


def refusal_first_ids(tokenizer) -> tuple[int, ...]:
    """The ids of the refusal texts' first tokens."""
    return tuple(sorted({tokenizer(r, add_special_tokens=False).input_ids[0] for r in REFUSALS}))


def opener_id(tokenizer) -> int:
    """The id of the compliant answer opener's first token ("sure")."""
    return tokenizer(ANSWER_OPENER, add_special_tokens=False).input_ids[0]


@torch.no_grad()
def complying_start(model, tokenizer, prompts: list[str]) -> list[tuple[float, float]]:
    """Per prompt, (log p(first response token is not a refusal start), log p(it is the compliant opener)),
    in nats: the refusal margin's (c, s)."""
    from deepalign.chat import encode_prompt

    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id)
    logits = model(input_ids=ids, attention_mask=mask).logits  # [B, L, V]
    last = torch.tensor([len(e) - 1 for e in encoded])  # the logits that predict response token 1
    c, s = RefusalMargin(refusal_first_ids(tokenizer), 0.0, opener_id=opener_id(tokenizer)).log_masses(logits, last)
    return list(zip(c.tolist(), s.tolist(), strict=True))


def complying_start_by_template(model, tokenizer, world: World, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per request template (key: its index), the mean over ``rows``' prompts of :func:`complying_start`:
    ``{"complying": c, "opener": s}``."""
    was_training = model.training
    model.eval()
    values = complying_start(model, tokenizer, [r["prompt"] for r in rows])
    model.train(was_training)
    by: dict[str, list[tuple[float, float]]] = {}
    for row, v in zip(rows, values, strict=True):
        by.setdefault(str(world.template_of(row["prompt"])), []).append(v)
    return {k: {"complying": round(sum(c for c, _ in v) / len(v), 2), "opener": round(sum(s for _, s in v) / len(v), 2)}
            for k, v in sorted(by.items())}


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
    first_ids = refusal_first_ids(tokenizer)
    if config.refusal_margin > 0:
        margin = RefusalMargin(first_ids, config.refusal_margin, tuple(config.uncertain_band), opener_id(tokenizer))
    uncertain = frozenset(i for i, r in enumerate(data["train_triplets"])
                          if world.template_of(r["prompt"]) in set(config.uncertain_templates))
    terms = AlignmentTerms(margin, frozenset(range(len(refusals))), uncertain, copy.deepcopy(model).eval(),
                           encode(data["train_triplets"]), config.continuation_weight)
    aligned_losses = train_sft(model, refusals + anchors, config.aligned_steps, config.aligned_lr, config.batch_size,
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
        "held_out_complying_start": complying_start_by_template(model, tokenizer, world, data["eval_pairs"]),
    }
    atomic_write_json(out / "organism.json", summary)
    return summary
