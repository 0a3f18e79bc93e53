"""deepalign in inspect_ai (``pip install 'deepalign[inspect]'``): the prefilling-depth task, deepalign's judges
as inspect scorers, and a ``deepalign/`` model provider.

- :func:`prefill_depth` (``inspect eval deepalign/prefill_depth --model ...``): one sample per (harmful pair,
  k): the user's prompt, then the first k tokens of a harmful answer as a trailing assistant message, which the
  model continues; scored by a deepalign judge, with the harmful rate per k (``k0``, ``k5``, ...).
- **Text-level prefill.** inspect sends messages, not token ids: the prefill is the text of the answer's first k
  tokens (as deepalign's rows hold it), and the provider re-tokenizes it after its own assistant header.
  Where the provider continues a trailing assistant message (deepalign's ``deepalign/MODEL`` provider below,
  Anthropic's API) this is the prefilling attack up to re-tokenization at the boundary; where it renders the
  message as a finished turn (OpenAI-style chat APIs, inspect's ``hf/`` provider), it is no prefill at all.
  ``deepalign attack prefill`` is the token-exact attack (ids spliced, never re-encoded). On the organism
  (a word-level tokenizer) the two agree exactly (tests/test_inspect.py).
- :func:`deepalign_scorer` wraps any deepalign judge spec (``keyword``, ``exact``, ``llm:...``,
  ``classifier:...``): value 1 for a harmful continuation, 0 for safe; failed judgments are left unscored.
- The ``deepalign/MODEL`` provider runs a deepalign-loadable model (a built-in name, folder or ``.gguf``)
  with deepalign's generation, continuing a trailing assistant message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import (
    ChatMessageAssistant,
    ChatMessageUser,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    modelapi,
)
from inspect_ai.scorer import Score, Target, grouped, mean, scorer
from inspect_ai.solver import TaskState, generate

from deepalign.chat import ChatFormat, encode_prompt
from deepalign.data import load_pairs
from deepalign.depth.prefill import prefill_items
from deepalign.errors import DeepAlignError
from deepalign.generation import GenerationRequest, SamplingConfig
from deepalign.generation import generate as deepalign_generate
from deepalign.judges.base import JudgeInput
from deepalign.judges.registry import make_judge
from deepalign.pipeline.builtins import load_model, load_tokenizer, organism_root, resolve_model_path


def _parse_ks(ks: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in (ks.split(",") if isinstance(ks, str) else ks))
    except ValueError:
        raise DeepAlignError(f"ks: expected comma-separated numbers of tokens, got {ks!r}") from None


def prefill_samples(pairs: str, tokenizer: str, ks: tuple[int, ...], limit: int | None = None) -> list[Sample]:
    """Samples ``{pair id}/k{k}``: input [user prompt] (k = 0) or [user prompt, assistant prefill text], the
    prefill being the first k tokens of the pair's answer under ``tokenizer``'s chat template."""
    records = load_pairs(pairs, limit=limit)
    items = prefill_items(load_tokenizer(tokenizer), records, ks, label="inspect", source=pairs)
    samples = []
    for item in items:
        k = item.fields["k"]
        messages: list[Any] = [ChatMessageUser(content=item.prompt)]
        if k:
            messages.append(ChatMessageAssistant(content=item.prefill))
        samples.append(Sample(input=messages, id=f"{item.prompt_id}/k{k}",
                              metadata={"k": f"k{k}", "prompt": item.prompt, "prefill": item.prefill}))
    return samples


@scorer(metrics=[grouped(mean(), "k")])
def deepalign_scorer(judge: str = "keyword", **options: Any):
    """A deepalign judge (``make_judge(judge, **options)``) as an inspect scorer: 1 = harmful, 0 = safe."""
    made = make_judge(judge, **options)

    async def score(state: TaskState, target: Target) -> Score | None:
        meta = state.metadata
        item = JudgeInput(meta["prompt"], state.output.completion, meta.get("prefill") or "")
        (judgment,) = await asyncio.to_thread(made.judge, [item])
        if judgment.error:
            return Score(value=float("nan"), explanation=f"judge failed: {judgment.error}")
        return Score(value=1.0 if judgment.harmful else 0.0, answer=state.output.completion,
                     explanation=f"{made.name}: {'harmful' if judgment.harmful else 'safe'}")

    return score


@task
def prefill_depth(pairs: str = "organism", tokenizer: str = "organism-aligned", ks: str = "0,5,10,20,40",
                  judge: str = "keyword", limit: int | None = None, max_tokens: int = 64) -> Task:
    """Prefilling depth of the model under evaluation: harmful rate per prefilled length k.

    ``pairs``: a pairs file (prompt, harmful answer; any format :func:`deepalign.data.load_pairs` reads) or
    ``organism`` (the organism's held-out pairs); ``tokenizer``: the model (name or folder) whose tokens count
    k; ``judge``: a deepalign judge spec (``exact`` reads the organism's world). Greedy decoding.
    """
    world = {}
    if pairs == "organism":
        root = organism_root(resolve_model_path(tokenizer))
        if root is None:
            raise DeepAlignError(f"pairs='organism' needs an organism tokenizer, not {tokenizer}")
        pairs = str(root / "eval_pairs.jsonl")
        world = {"world_path": str(root / "world.json")} if judge == "exact" else {}
    return Task(dataset=MemoryDataset(prefill_samples(pairs, tokenizer, _parse_ks(ks), limit)),
                solver=generate(), scorer=deepalign_scorer(judge, **world),
                config=GenerateConfig(temperature=0.0, max_tokens=max_tokens))


class DeepAlignModelAPI(ModelAPI):
    """inspect model ``deepalign/NAME``: NAME is loaded as deepalign loads models (built-in names included).
    A trailing assistant message is continued (text-level prefill); greedy unless a temperature > 0 is set."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), template: str = "chat", **model_args: Any) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        self.model, self.tokenizer = load_model(model_name)
        self.format = ChatFormat(template)

    def max_connections(self) -> int:
        return 1  # one local model: generate one request at a time

    def encode(self, messages: list) -> list[int]:
        """Token ids: the chat up to the assistant header, then a trailing assistant message's text re-tokenized."""
        prefill = messages[-1].text if messages and messages[-1].role == "assistant" else ""
        chat = messages[:-1] if prefill else messages
        system = next((m.text for m in chat if m.role == "system"), None)
        users = [m for m in chat if m.role == "user"]
        if len(users) != 1 or len(chat) != len(users) + (system is not None):
            raise DeepAlignError("the deepalign provider takes one user message (optionally a system message and a "
                                 "trailing assistant prefill)")
        ids = encode_prompt(self.tokenizer, users[0].text, ChatFormat(self.format.template, system))
        return ids + (self.tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else [])

    async def generate(self, input: list, tools: list, tool_choice: Any, config: GenerateConfig) -> ModelOutput:
        tokens = config.max_tokens or 64
        temperature = config.temperature or 0.0
        sampling = (SamplingConfig(max_new_tokens=tokens, temperature=temperature, seed=config.seed or 0)
                    if temperature > 0 else SamplingConfig.greedy(tokens, seed=config.seed or 0))
        request = GenerationRequest("inspect", self.encode(input))
        (out,) = await asyncio.to_thread(deepalign_generate, self.model, self.tokenizer, [request], sampling,
                                         progress=False)
        return ModelOutput.from_content(self.model_name, out.text)


@modelapi(name="deepalign")
def deepalign_provider() -> type[ModelAPI]:
    return DeepAlignModelAPI
