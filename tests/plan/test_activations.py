"""The activation formula against the tensors autograd really keeps on tiny random models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuneforge.plan.activations import estimate_activations
from tuneforge.plan.config import ModelConfig
from tuneforge.plan.parameters import lora_count

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny(tie: bool = True, attention: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=300,
        hidden_size=48,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = attention
    return model, ModelConfig.from_dict(config.to_dict(), "tiny")


def saved_bytes(
    method: str,
    dtype: torch.dtype,
    batch: int = 2,
    length: int = 40,
    attention: str = "sdpa",
    lora_input_cast: bool = False,
) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for one loss like tuneforge's."""
    from peft import LoraConfig, get_peft_model

    model, _ = _tiny(attention=attention)
    if method == "lora":
        model.to(dtype)
        for param in model.parameters():
            param.requires_grad_(False)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=TARGETS))
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        for module in model.modules():  # as tuneforge trains (stock peft: lora_input_cast)
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = lora_input_cast
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    ids = torch.randint(0, 300, (batch, length))
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        hidden = base.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        rows = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        logits = base.get_output_embeddings()(rows)
        F.cross_entropy(logits.float(), ids[:, 1:].reshape(-1), reduction="sum")
    return sum(seen.values())


@pytest.mark.parametrize(
    ("method", "dtype", "attention", "lora_input_cast"),
    [
        ("full", torch.float32, "sdpa", False),
        ("full", torch.bfloat16, "sdpa", False),
        ("lora", torch.float32, "sdpa", False),
        ("lora", torch.bfloat16, "sdpa", False),
        ("lora", torch.bfloat16, "sdpa", True),
        ("lora", torch.bfloat16, "eager", False),
    ],
    ids=[
        "full-fp32",
        "full-bf16-autocast",
        "lora-fp32",
        "lora-bf16-autocast",
        "lora-bf16-stock-peft-cast",
        "lora-bf16-eager",
    ],
)
def test_formula_matches_the_saved_tensors(method, dtype, attention, lora_input_cast):
    model, config = _tiny(attention=attention)
    compute = 2 if dtype == torch.bfloat16 else 4
    stream = 4 if method == "full" or compute == 4 else 2
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    lora = lora_count(config, 4, TARGETS)
    estimate = estimate_activations(
        config,
        method=method,
        batch_size=2,
        max_length=40,
        compute_bytes=compute,
        stream_bytes=stream,
        lora_modules=TARGETS if method == "lora" else [],
        lora_r=4,
        autocast_linear_weights=linear if method == "full" else lora,
        attention=attention,
        lora_input_cast=lora_input_cast,
    )
    predicted = estimate.activations + estimate.logits_saved
    measured = saved_bytes(method, dtype, attention=attention, lora_input_cast=lora_input_cast)
    assert abs(predicted - measured) / measured < 0.01, (predicted, measured)
