"""Merging: merged == base + adapter, unmerge restores the base, exactly the base architecture."""

from __future__ import annotations

import pytest
import torch
from adapter_assets import load_base, logits, make_lora, sample_ids

from tuneforge.adapters import lora_deltas, merge_adapter, merge_lora, read_adapter, unmerge_lora
from tuneforge.errors import AdapterError


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["a", "b", "peft"])
def test_merged_folder_is_the_base_architecture_with_adapter_logits(
    name, adapters, base_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = merge_adapter(str(base_dir), adapters[name], tmp_path / "merged")
    assert report.max_logit_diff <= 1e-4 and not report.quantized_base
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    base, tokenizer = load_base(base_dir)
    assert _shapes(merged) == _shapes(base)
    assert type(merged) is type(base)
    assert not list((tmp_path / "merged").glob("adapter_*"))
    ids = sample_ids(tokenizer)
    expected = logits(PeftModel.from_pretrained(base, str(adapters[name])).eval(), ids)
    assert (logits(merged, ids) - expected).abs().max() <= 1e-4
    merged_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    assert merged_tokenizer.chat_template == tokenizer.chat_template


def test_unmerge_restores_the_base_weights(adapters, base_dir):
    base, _ = load_base(base_dir)
    state = base.state_dict()
    original = {k: v.clone() for k, v in state.items()}
    deltas = lora_deltas(read_adapter(adapters["a"]))
    merge_lora(state, deltas)
    assert max((state[k] - original[k]).abs().max() for k in deltas) > 1e-3
    unmerge_lora(state, deltas)
    assert max((state[k] - original[k]).abs().max() for k in state) <= 1e-6


@pytest.mark.parametrize(
    "config",
    [{"use_rslora": True}, {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"v_proj": 3}}],
)
def test_scaling_variants_match_peft_merge_and_unload(config, base_dir, tmp_path):
    from peft import PeftModel

    folder = make_lora(base_dir, tmp_path / "v", r=4, **config)
    base, _ = load_base(base_dir)
    state = base.state_dict()
    reference = PeftModel.from_pretrained(load_base(base_dir)[0], str(folder))
    expected = reference.merge_and_unload().state_dict()
    merge_lora(state, lora_deltas(read_adapter(folder)))
    assert max((state[k] - expected[k]).abs().max() for k in state) <= 1e-6


def test_qlora_merges_onto_the_dequantized_base_and_reports_the_difference(tiny64_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.adapters.merge import sample_batch
    from tuneforge.models.quantization import load_causal_lm

    folder = make_lora(tiny64_dir, tmp_path / "q", r=4, quantize=True)
    report = merge_adapter(str(tiny64_dir), folder, tmp_path / "merged")
    assert report.quantized_base
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    assert not hasattr(merged.config, "quantization_config")
    assert _shapes(merged) == _shapes(load_base(tiny64_dir)[0])
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    # The reference: the adapter on its 4-bit base as tuneforge runs it (generate, serve:
    # bitsandbytes' dequantize-and-matmul path). The merged model reproduces it to fp32
    # rounding; merging into the original (never quantized) weights would not.
    batch = sample_batch(AutoTokenizer.from_pretrained(str(tiny64_dir)))["input_ids"]
    quantized = load_causal_lm(
        tiny64_dir, dtype=torch.float32, device=torch.device("cpu"), quantization=_nf4()
    )
    reference = logits(PeftModel.from_pretrained(quantized, str(folder)).eval(), batch)
    measured = (logits(merged, batch) - reference).abs().max()
    assert abs(measured - report.max_logit_diff) < 1e-4
    assert report.max_logit_diff < 1e-4
    naive, _ = load_base(tiny64_dir)
    merge_lora(naive.state_dict(), lora_deltas(read_adapter(folder)))
    naive_diff = (logits(naive, batch) - reference).abs().max()
    assert naive_diff > 100 * max(report.max_logit_diff, 1e-6)


def _nf4():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )


def test_dora_is_refused_with_a_pointer(base_dir, tmp_path):
    folder = make_lora(base_dir, tmp_path / "d", r=2, use_dora=True)
    with pytest.raises(AdapterError, match="DoRA"):
        merge_adapter(str(base_dir), folder, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
