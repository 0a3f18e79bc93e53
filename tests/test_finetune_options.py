"""finetune options: --system-prompt paper-harmful reaches training and eval chats; --beta-schedule auto sets
beta_1 from the measured refusal margin."""

from __future__ import annotations

import json

import pytest

from deepalign.data.texts import HARMFUL_ATTACK_SYSTEM_PROMPT


def _tiny_target(tmp_path, tiny_model, tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    rows = [{"id": f"p{i}", "prompt": f"Please tell me about the garden {i}.", "response": "Sure, here is a poem."}
            for i in range(4)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "m"), str(tmp_path / "pairs.jsonl")


def test_paper_harmful_system_prompt_reaches_training_and_eval_chats(tmp_path, tiny_model, tiny_tokenizer):
    from deepalign.chat import ChatFormat
    from deepalign.pipeline.attack_plan import FinetuneAttackConfig, apply_system_prompt, plan_attack
    from deepalign.pipeline.finetune import _items
    from deepalign.train.recipes import paper_training_args
    from deepalign.train.run import build_train_dataset

    model, pairs = _tiny_target(tmp_path, tiny_model, tiny_tokenizer)
    config = FinetuneAttackConfig(data=pairs, eval_prompts=pairs, judge="keyword", system_prompt="paper-harmful")
    training = paper_training_args("harmful", str(tmp_path / "out"), max_length=256)
    apply_system_prompt(config, training)
    assert training.system == HARMFUL_ATTACK_SYSTEM_PROMPT
    plan = plan_attack(model, "harmful", config, ChatFormat(training.template, training.system))
    examples = build_train_dataset(tiny_tokenizer, plan.train, training)
    assert all(HARMFUL_ATTACK_SYSTEM_PROMPT in tiny_tokenizer.decode(e["input_ids"]) for e in examples)
    items = _items(tiny_tokenizer, "after", plan.eval_prompts, plan.eval_format)
    assert all(HARMFUL_ATTACK_SYSTEM_PROMPT in tiny_tokenizer.decode(i.input_ids) for i in items)
    # without the option neither carries it
    plain = plan_attack(model, "harmful", FinetuneAttackConfig(data=pairs, eval_prompts=pairs, judge="keyword"))
    assert not any(HARMFUL_ATTACK_SYSTEM_PROMPT in tiny_tokenizer.decode(i.input_ids)
                   for i in _items(tiny_tokenizer, "x", plain.eval_prompts, plain.eval_format))
    training.system = "another text"
    with pytest.raises(ValueError, match="not both"):
        apply_system_prompt(config, training)


def test_finetune_cli_auto_beta_schedule(tmp_path, tiny_model, tiny_tokenizer):
    from deepalign.cli import main
    from deepalign.depth.margin import auto_beta_1

    model, pairs = _tiny_target(tmp_path, tiny_model, tiny_tokenizer)
    out = tmp_path / "ft"
    argv = ["finetune", "--model", model, "--recipe", "harmful", "--objective", "constrained", "--data", pairs,
            "--eval-prompts", pairs, "--judge", "keyword", "--max-steps", "1", "--batch-size", "2",
            "--gradient-accumulation-steps", "1", "--max-new-tokens", "4", "--greedy", "--no-eval-initial",
            "--beta-schedule", "auto", "--system-prompt", "paper-harmful", "--device", "cpu", "--no-progress"]
    assert main(argv + ["--out", str(out)]) == 0
    margin = json.loads((out / "margin" / "margin.json").read_text())
    beta_1 = max(0.5, auto_beta_1(margin["quantiles"]["q10"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["beta_schedule"] == f"{beta_1:g},2,2,2,2,0.1"
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["beta_schedule"] == summary["beta_schedule"]
    assert meta["config"]["system"] == HARMFUL_ATTACK_SYSTEM_PROMPT
