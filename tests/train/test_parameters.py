"""Parameter accounting of a loaded model, printed before training."""

from __future__ import annotations

import torch
from torch import nn

from tuneforge.plan import lora_parameter_count, percent_fewer
from tuneforge.train.parameters import count_parameters, parameter_summary


def test_textbook_lora_count():
    """A 1000x1000 linear at r=8: 16,000 LoRA parameters, 98.4% fewer than 1,000,000."""
    from peft import LoraConfig, get_peft_model

    assert lora_parameter_count(1000, 1000, 8) == 16_000
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(1000, 1000, bias=False))
    wrapped = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["proj"]))
    counts = count_parameters(wrapped)
    assert counts.trainable == 16_000
    assert counts.total == 1_016_000
    assert round(percent_fewer(counts.trainable, 1_000_000), 1) == 98.4
    summary = parameter_summary(counts, "lora")
    assert "16,000 trainable of 1,016,000 parameters (1.5748%)" in summary
    assert "98.4% fewer trainable parameters than full fine-tuning" in summary


def test_4bit_weights_count_logically(tiny64_dir):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    plain = AutoModelForCausalLM.from_pretrained(tiny64_dir)
    quantized = AutoModelForCausalLM.from_pretrained(
        tiny64_dir,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        device_map={"": "cpu"},
        dtype=torch.float32,
    )
    assert count_parameters(quantized).total == count_parameters(plain).total
    assert count_parameters(quantized).weight_bytes < count_parameters(plain).weight_bytes / 2
