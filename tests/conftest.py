"""Shared test fixtures: offline mode, a tiny tokenizer built here, a tiny random Llama, and the built-in
models' cache.

Outside the ``slow`` marker the built-in names resolve in a temporary cache of this session, where the
organism is built small on first use (seconds) and converting SmolLM2 is an error, so the fast suite
neither depends on nor writes the user's ``$DEEPALIGN_CACHE``. Slow tests use the user's cache and the
real organism.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

USER_CACHE = os.environ.get("DEEPALIGN_CACHE")
# the organism the fast suite builds on first use of a built-in name (about 10 s on 2 CPU cores)
SMALL_ORGANISM = {"hidden_size": 32, "base_steps": 20, "aligned_steps": 5, "batch_size": 8, "answers_per_topic": 3}

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A Llama-2-style template written for the tests (BOS, [INST] ... [/INST], space before the answer, EOS).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (('<<SYS>>\n' + system + '\n<</SYS>>\n\n') if loop.first and system else '')"
    " + message['content'].strip() + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
CORPUS = [
    "Hello there, how are you today? I am fine, thank you very much.",
    "Please tell me about the weather in the garden and the river.",
    "I cannot help with that request. Sorry, but I won't do it.",
    "Sure, here is a short poem about apples, pears and plums.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
    "[INST] <<SYS>> <</SYS>> ### Instruction: ### Response: User: Assistant:",
]


def save_tiny_model(folder: Path) -> Path:
    """A tiny random Llama and its tokenizer saved into ``folder`` (a model folder any command can load)."""
    tok = build_tiny_tokenizer()
    build_tiny_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_tokenizer(template: str = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer (~400 tokens) trained on a few neutral sentences, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    is_llama = template == LLAMA2_TEMPLATE
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>" if is_llama else "<|im_start|>",
        eos_token="</s>" if is_llama else "<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = template
    return fast


def build_tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def llama2_tokenizer():
    return build_tiny_tokenizer(LLAMA2_TEMPLATE)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return build_tiny_llama(len(tiny_tokenizer))


def image_sources(page: str) -> list[str]:
    """The ``src`` of every <img> in an HTML page."""
    from html.parser import HTMLParser

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sources: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    parser.feed(page)
    return parser.sources


OPENAI_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_API_KEY",
              "OPENAI_BASE_URL", "DEEPALIGN_JUDGE_API_KEY", "DEEPALIGN_JUDGE_BASE_URL", "DEEPALIGN_JUDGE_MODEL")


@pytest.fixture
def no_openai_env(monkeypatch):
    """No proxy and no judge endpoint settings from the environment (tests talk to the local fake server)."""
    for name in OPENAI_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def small_builtins(tmp_path_factory):
    """This session's cache for built-in names (a small organism; no SmolLM2 conversion). Yields the
    patched names' real values, for the slow tests."""
    import deepalign.pipeline.builtins as builtins
    from deepalign.organism.build import OrganismConfig

    def no_conversion(src, dest):
        raise AssertionError("a fast test converts SmolLM2: mark it slow")

    real = {"ORGANISM_CONFIG": builtins.ORGANISM_CONFIG, "convert_smollm2": builtins.convert_smollm2}
    patch = pytest.MonkeyPatch()
    patch.setenv("DEEPALIGN_CACHE", str(tmp_path_factory.mktemp("deepalign-cache")))
    patch.setattr(builtins, "ORGANISM_CONFIG", OrganismConfig(**SMALL_ORGANISM))
    patch.setattr(builtins, "convert_smollm2", no_conversion)
    yield real
    patch.undo()


@pytest.fixture(autouse=True)
def user_builtins_for_slow_tests(request, monkeypatch, small_builtins):
    """Slow tests resolve built-in names in the user's cache, with the real recipe."""
    if request.node.get_closest_marker("slow") is None:
        return
    import deepalign.pipeline.builtins as builtins

    if USER_CACHE is None:
        monkeypatch.delenv("DEEPALIGN_CACHE")
    else:
        monkeypatch.setenv("DEEPALIGN_CACHE", USER_CACHE)
    for name, value in small_builtins.items():
        monkeypatch.setattr(builtins, name, value)


def _hypothesis_profiles() -> None:
    """``fast`` (the default: few examples, derandomized so the suite is deterministic, no example database
    written) and ``thorough`` (HYPOTHESIS_PROFILE=thorough: many random examples) for tests/test_fuzz_*.py."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the fuzz tests skip themselves
        return
    quiet = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("fast", deadline=None, derandomize=True, database=None, suppress_health_check=quiet)
    settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


_hypothesis_profiles()
