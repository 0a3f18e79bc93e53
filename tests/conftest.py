"""Shared test fixtures: offline mode, a tiny tokenizer built here, and a tiny random Llama."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

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
