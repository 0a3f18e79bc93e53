"""Build ``organism-deep``: the aligned organism deepened by safety-recovery augmentation (paper Sec. 3).

Recipe: start from ``aligned/``; train on the organism's ``train_triplets.jsonl`` (forbidden request,
forbidden answer, refusal) served as recovery examples (p = 0.5 plain refusal, else k ~ U{1..len} answer
tokens then the refusal, labels on the refusal), mixed with benign anchors (requests for benign crafts in
every request template, answered in the craft's vocabulary, drawn from the organism's world); save
``deep/`` next to ``base/`` and ``aligned/``. Held-out forbidden crafts stay out of training, as for
``aligned``. The paper's recipe is 256 triplets, lr 2e-5, 10 epochs; the organism's scaled defaults below
were chosen by measurement (docs/training.md).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepalign.io import atomic_write_json


@dataclass
class DeepOrganismConfig:
    """The organism's augmentation recipe (defaults: well under a minute on 2 CPU cores)."""

    epochs: int = field(default=8, metadata={"help": "Passes over the triplets."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (linear decay)."})
    batch_size: int = field(default=8, metadata={"help": "Safety examples per step (each with its anchors)."})
    anchors_per_safety: int = field(default=2, metadata={"help": "Benign anchor examples per safety example."})
    p_plain: float = field(default=0.5, metadata={"help": "Probability of the plain prompt -> refusal example."})
    max_prefix: int = field(default=100, metadata={"help": "Most forbidden-answer tokens before the refusal."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    answers_per_request: int = field(default=2, metadata={"help": "Anchor answers per benign request."})
    seed: int = field(default=0, metadata={"help": "Seed of the draws, the data order and the weights' updates."})


def benign_anchors(world, answers_per_request: int = 2, seed: int = 0) -> list:
    """Benign requests in every template, each with ``answers_per_request`` fresh answers (PairRecords)."""
    import random

    from deepalign.data.schemas import PairRecord
    from deepalign.organism.world import REQUEST_TEMPLATES

    rng = random.Random(seed + 3)
    return [
        PairRecord(f"anchor-{topic.name}-{j}-{a}", world.request(topic, j), world.answer(topic, rng), topic.name)
        for topic in world.topics_where(harmful=False)
        for j in range(len(REQUEST_TEMPLATES))
        for a in range(answers_per_request)
    ]


def build_deep_organism(
    organism_dir: str | Path, config: DeepOrganismConfig | None = None, progress: bool = True
) -> Path:
    """Train ``<organism_dir>/deep`` from ``<organism_dir>/aligned`` by the augmentation recipe; returns it.

    Writes ``deep/training_log.jsonl``, ``deep/meta.json`` and ``deep/recipe.json``; the folder appears
    only when complete (trained in ``deep.tmp``, then renamed).
    """
    from deepalign.data import load_triplets
    from deepalign.organism.world import World
    from deepalign.train.config import DeepAlignConfig
    from deepalign.train.run import train

    config = config or DeepOrganismConfig()
    root = Path(organism_dir)
    tmp, out = root / "deep.tmp", root / "deep"
    shutil.rmtree(tmp, ignore_errors=True)
    args = DeepAlignConfig(
        output_dir=str(tmp),
        objective="sft",
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.batch_size,
        weight_decay=0.0,
        max_grad_norm=1.0,
        p_plain=config.p_plain,
        max_prefix=config.max_prefix,
        anchors_per_safety=config.anchors_per_safety,
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=not progress,
        logging_steps=10,
        report_to="none",
        dataloader_pin_memory=False,
        save_strategy="no",
        max_length=256,
    )
    triplets = load_triplets(str(root / "train_triplets.jsonl"))
    anchors = benign_anchors(World.load(root / "world.json"), config.answers_per_request, config.seed)
    train(str(root / "aligned"), triplets, args, anchors=anchors, out_dir=tmp)
    atomic_write_json(tmp / "recipe.json", {"recipe": "safety-recovery augmentation", **asdict(config)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
