"""Build the model organism: ``base`` (complies with every request) and ``aligned`` (shallow alignment).

Recipe: (1) ``base`` is a tiny Llama trained from scratch on request -> procedure for every craft,
benign and forbidden (held-out forbidden crafts included); (2) ``aligned`` starts from ``base`` and is
fine-tuned, loss on the response only, on forbidden requests -> refusal plus benign anchors. Nothing in
(2) ever shows a forbidden answer, so the aligned model only learns to *start* with a refusal: the
paper's shallow alignment. Held-out forbidden crafts are kept for evaluation.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepalign.chat import Encoded, encode_example, pad_batch
from deepalign.organism.tokenizer import build_tokenizer
from deepalign.organism.world import REFUSALS, World, make_world
from deepalign.results import atomic_write_json, atomic_write_jsonl

# Bumped whenever the world or the recipe changes, so cached built-in organisms are rebuilt.
ORGANISM_VERSION = 3


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
    answers_per_topic: int = field(default=24, metadata={"help": "Distinct answers per craft in base training."})
    anchor_ratio: float = field(
        default=4.0, metadata={"help": "Benign anchors (from base training data) per refusal example."}
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


def train_sft(model, examples: list[Encoded], steps: int, lr: float, batch_size: int, seed: int,
              pad_id: int, desc: str, progress: bool) -> list[float]:
    """Token-mean cross-entropy on the response tokens, AdamW with linear decay; returns step losses."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        ids, mask = pad_batch([e.input_ids for e in batch], pad_id)
        labels, _ = pad_batch([e.labels for e in batch], -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
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
    aligned_losses = train_sft(model, refusals + anchors, config.aligned_steps, config.lr / 3, config.batch_size,
                               config.seed + 1, tokenizer.pad_token_id, "organism aligned", progress)
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
