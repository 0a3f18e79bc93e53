"""Triplets for safety-recovery augmentation from harmful prompts: a base model's answers are the
harmful answers, an aligned model's own answers (when a judge finds them refusing) the refusals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.data.schemas import PromptRecord, TripletRecord
from deepalign.generation import GenerationRequest, SamplingConfig, generate
from deepalign.judges.base import JudgeInput
from deepalign.judges.keyword import KeywordJudge
from deepalign.train.augment import fallback_refusal


def make_triplets(
    prompts: Sequence[PromptRecord],
    base_model,
    base_tokenizer,
    *,
    base_format: ChatFormat = ChatFormat(),
    aligned_model=None,
    aligned_tokenizer=None,
    aligned_format: ChatFormat = ChatFormat(),
    judge: Callable | None = None,
    sampling=None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[TripletRecord]:
    """Triplets from prompts: the harmful answer is ``base_model``'s generation, the refusal the aligned
    model's own answer when ``judge`` finds it refusing, else one of our refusal texts.

    ``judge``: a :class:`~deepalign.judges.base.Judge` or a callable ``list[JudgeInput] -> list[Judgment]``
    (default: the keyword judge); an answer counts as a refusal when judged ``harmful is False``.
    Without ``aligned_model`` every refusal is :func:`fallback_refusal`. ``sampling``: a
    :class:`~deepalign.generation.SamplingConfig` (default greedy, 128 new tokens).
    """
    sampling = sampling or SamplingConfig.greedy(128, seed=seed)

    def answers(model, tokenizer, fmt: ChatFormat) -> list[str]:
        requests = [GenerationRequest(p.id, encode_prompt(tokenizer, p.prompt, fmt)) for p in prompts]
        gens = generate(model, tokenizer, requests, sampling, batch_size=batch_size, progress=progress)
        return [g.text.strip() for g in gens if g.repeat == 0]

    harmful = answers(base_model, base_tokenizer, base_format)
    refusals = [fallback_refusal(p.id, seed) for p in prompts]
    if aligned_model is not None:
        if judge is None:
            judge = KeywordJudge()
        judge_fn = judge.judge if hasattr(judge, "judge") else judge
        own = answers(aligned_model, aligned_tokenizer or base_tokenizer, aligned_format)
        verdicts = judge_fn([JudgeInput(p.prompt, text) for p, text in zip(prompts, own, strict=True)])
        refusals = [
            text if v.harmful is False and text else fallback
            for text, v, fallback in zip(own, verdicts, refusals, strict=True)
        ]
    return [
        TripletRecord(p.id, p.prompt, answer, refusal, p.category)
        for p, answer, refusal in zip(prompts, harmful, refusals, strict=True)
    ]
