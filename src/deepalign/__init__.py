"""deepalign: measure, deepen and protect the depth of a language model's safety alignment.

The public API below is imported lazily (PEP 562): ``import deepalign`` loads nothing heavy, and
``import deepalign.judges.keyword`` does not import torch. ``deepalign.load_model`` accepts built-in
names (``organism-aligned``, ``smollm2-135m-instruct``) as well as folders, ``.gguf`` files and hub ids.
"""

from importlib import import_module

from deepalign._version import __version__  # noqa: F401 (in __all__ below)

_EXPORTS = {
    "BetaSchedule": "train.objectives", "constrained_loss": "train.objectives", "sft_loss": "train.objectives",
    "token_logps": "train.objectives",
    "ChatFormat": "chat", "Encoded": "chat", "encode_example": "chat", "encode_prompt": "chat", "splice": "chat",
    "ChatRecord": "data", "PairRecord": "data", "PromptRecord": "data", "TripletRecord": "data",
    "load_chats": "data", "load_pairs": "data", "load_prompts": "data", "load_records": "data",
    "load_triplets": "data", "load_training_records": "data",
    "ConstrainedSFTConfig": "trl", "ConstrainedSFTTrainer": "trl",
    "DataError": "errors", "DeepAlignError": "errors",
    "Generation": "generation", "GenerationRequest": "generation", "SamplingConfig": "generation",
    "generate": "generation",
    "Judge": "judges.base", "JudgeInput": "judges.base", "Judgment": "judges.base", "summarize": "judges.base",
    "make_judge": "judges.registry", "judge_file": "judges.apply",
    "KLConfig": "depth.kl", "KLProfile": "depth.kl", "kl_profile": "depth.kl",
    "PrefillPoint": "results.summaries",
    "load_model": "pipeline.builtins", "load_tokenizer": "pipeline.builtins",
    "OrganismConfig": "organism.build", "build_organism": "organism.build",
    "DeepAlignConfig": "train.config", "DeepAlignTrainer": "train.trainer", "train": "train.run",
    "prefill_attack": "pipeline.attacks", "run_prefill": "pipeline.attacks", "run_refusal_prefix": "pipeline.attacks",
    "run_decoding_attack": "pipeline.attacks", "run_gcg": "pipeline.attacks",
    "run_kl": "pipeline.kl", "finetune_attack": "pipeline.finetune", "audit": "pipeline.audit",
    "reproduce": "pipeline.reproduce",
}
__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f"deepalign.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'deepalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
