"""Model loading: folders, LoRA adapters, built-in names, and one-line errors offline."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_llama

from deepalign.errors import DeepAlignError
from deepalign.models import load_model, load_tokenizer, same_vocabulary, use_training_attention


@pytest.fixture
def saved_model(tmp_path, tiny_tokenizer, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_folder_round_trip(saved_model, tiny_model):
    model, tok = load_model(str(saved_model))
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny_model(ids).logits, atol=1e-6)
    assert tok.pad_token_id is not None and not model.training


def test_lora_adapter_folder_loads_with_its_base(tmp_path, saved_model):
    from peft import LoraConfig, get_peft_model

    base, _ = load_model(str(saved_model))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    direct, _ = load_model(str(tmp_path / "adapter"))
    explicit, _ = load_model(str(saved_model), adapter=str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        assert torch.allclose(direct(ids).logits, expected, atol=1e-6)
        assert torch.allclose(explicit(ids).logits, expected, atol=1e-6)


def test_adapter_for_another_base_is_refused(tmp_path, saved_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    other = build_tiny_llama(len(tiny_tokenizer), hidden=64)
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "wrong")
    with pytest.raises(DeepAlignError, match="does not fit"):
        load_model(str(saved_model), adapter=str(tmp_path / "wrong"))


@pytest.mark.parametrize(
    ("name", "message"),
    [("organism-nope", "unknown model"), ("meta-llama/Llama-2-7b-chat-hf", "HF_HUB_OFFLINE"),
     ("./missing/folder", "unknown model")],
)
def test_unloadable_names_give_one_line_errors(name, message):
    with pytest.raises(DeepAlignError, match=message) as e:
        load_model(name)
    assert "\n" not in str(e.value)


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepAlignError, match="no config.json"):
        load_tokenizer(str(tmp_path / "empty"))


def test_same_vocabulary(tiny_tokenizer, llama2_tokenizer):
    assert same_vocabulary(tiny_tokenizer, tiny_tokenizer)
    assert same_vocabulary(tiny_tokenizer, llama2_tokenizer)  # same BPE, different template


@pytest.mark.parametrize(("device", "bf16", "expected"), [
    ("cpu", True, "eager"),  # the CPU flash-attention backward is the slow part of a bf16 step
    ("cpu", False, "sdpa"),  # float32 on the CPU: sdpa was faster (bench/train.py --attention)
    ("cuda", True, "sdpa"),  # an accelerator keeps the model's own kernel
])
def test_training_attention_auto(tiny_model, device, bf16, expected):
    tiny_model.set_attn_implementation("sdpa")
    assert use_training_attention(tiny_model, device, bf16=bf16) == expected
    assert tiny_model.config._attn_implementation == expected


def test_training_attention_named_and_unknown(tiny_model):
    assert use_training_attention(tiny_model, "cpu", "eager") == "eager"
    assert tiny_model.config._attn_implementation == "eager"
    with pytest.raises(DeepAlignError, match="attention 'no-such-kernel'"):
        use_training_attention(tiny_model, "cpu", "no-such-kernel")


def test_eager_and_sdpa_training_losses_agree(tiny_model):
    """The kernel changes speed, not the numbers: loss and gradients agree to float32 rounding."""
    ids = torch.randint(3, tiny_model.config.vocab_size, (2, 12))

    def loss_and_grad(kernel):
        tiny_model.set_attn_implementation(kernel)
        tiny_model.zero_grad()
        loss = tiny_model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), tiny_model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    (l_eager, g_eager), (l_sdpa, g_sdpa) = loss_and_grad("eager"), loss_and_grad("sdpa")
    assert l_eager == pytest.approx(l_sdpa, rel=1e-5)
    assert torch.allclose(g_eager, g_sdpa, atol=1e-6, rtol=1e-4)
