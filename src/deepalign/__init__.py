"""deepalign: measure, deepen and protect the depth of a language model's safety alignment."""

__version__ = "0.1.0"

from deepalign.chat import ChatFormat, Encoded, encode_example, encode_prompt, splice  # noqa: E402
from deepalign.data import (  # noqa: E402
    ChatRecord,
    PairRecord,
    PromptRecord,
    TripletRecord,
    load_chats,
    load_pairs,
    load_prompts,
    load_records,
    load_triplets,
)
from deepalign.depth.kl import KLConfig, KLProfile, kl_profile, run_kl  # noqa: E402
from deepalign.depth.prefill import PrefillPoint, prefill_attack  # noqa: E402
from deepalign.errors import DataError, DeepAlignError  # noqa: E402
from deepalign.generation import Generation, GenerationRequest, SamplingConfig, generate  # noqa: E402
from deepalign.judges import Judge, JudgeInput, Judgment, make_judge, summarize  # noqa: E402
from deepalign.models import load_model, load_tokenizer  # noqa: E402
from deepalign.organism.build import OrganismConfig, build_organism  # noqa: E402
from deepalign.train.objectives import BetaSchedule, constrained_loss, sft_loss, token_logps  # noqa: E402

__all__ = [
    "BetaSchedule",
    "ChatFormat",
    "ChatRecord",
    "DataError",
    "DeepAlignError",
    "Encoded",
    "Generation",
    "GenerationRequest",
    "Judge",
    "JudgeInput",
    "Judgment",
    "KLConfig",
    "KLProfile",
    "OrganismConfig",
    "PairRecord",
    "PrefillPoint",
    "PromptRecord",
    "SamplingConfig",
    "TripletRecord",
    "__version__",
    "build_organism",
    "constrained_loss",
    "encode_example",
    "encode_prompt",
    "generate",
    "kl_profile",
    "load_chats",
    "load_model",
    "load_pairs",
    "load_prompts",
    "load_records",
    "load_tokenizer",
    "load_triplets",
    "make_judge",
    "prefill_attack",
    "run_kl",
    "sft_loss",
    "splice",
    "summarize",
    "token_logps",
]
