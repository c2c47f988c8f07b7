"""What the GGUF writer identifies, computes and refuses, without running llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_assets import CHATML, byte_level_tokenizer, family_config, family_model

from tuneforge.errors import ModelError
from tuneforge.export.families import llama3_rope_factors
from tuneforge.export.gguf_file import write_gguf
from tuneforge.export.pretokenizer import CHECK_TEXT, check_hash, identify_pretokenizer
from tuneforge.export.quantization import GGUF_DTYPES, tensor_type


@pytest.mark.parametrize("kind", ["smollm", "llama-bpe", "qwen2"])
def test_a_retrained_tokenizer_is_identified_by_its_pre_tokenizer(kind):
    tokenizer = byte_level_tokenizer(kind, ["<|im_end|>"], CHATML, eos_token="<|im_end|>")
    found = identify_pretokenizer(tokenizer)
    assert found.name == kind
    assert found.source == "tokenizer.json pre_tokenizer"  # its vocabulary hashes differently
    assert found.check_hash == check_hash(tokenizer)


def test_an_unknown_pre_tokenizer_is_refused_by_name_never_guessed(tmp_path):
    from tokenizers import Regex, pre_tokenizers

    tokenizer = byte_level_tokenizer("smollm", ["<|im_end|>"], CHATML, eos_token="<|im_end|>")
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{L}+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.name_or_path = "acme/odd-tokenizer"
    with pytest.raises(ModelError) as error:
        identify_pretokenizer(tokenizer)
    message = str(error.value)
    assert "acme/odd-tokenizer" in message and check_hash(tokenizer) in message
    assert "gpt2" not in message.split("Known:")[0]  # no silent gpt2
    model, _ = family_model("llama")
    with pytest.raises(ModelError, match="acme/odd-tokenizer"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_check_text_is_llama_cpp_s():
    # A few of the converter's probes: whitespace runs, emoji ZWJ, digits, CJK, Bulgarian.
    assert CHECK_TEXT.startswith("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal)")
    assert "😶\u200d🌫️" in CHECK_TEXT and "нещо на Български" in CHECK_TEXT
    assert CHECK_TEXT.endswith("We'Ve a'lL")


def test_llama3_rope_factors_match_transformers_rope():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    _, tokenizer = family_model("llama")
    config = family_config("llama3", tokenizer)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    base = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    factors = llama3_rope_factors(config)
    assert factors.shape == (8,) and factors.max() > 1  # some frequencies are slowed
    np.testing.assert_allclose(base.numpy() / factors, scaled.numpy(), rtol=1e-5)
    assert llama3_rope_factors(family_config("llama", tokenizer)) is None


def test_unsupported_architectures_are_refused_by_name(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = family_model("llama")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(
        ModelError, match="model_type 'gpt2'.*supported: gemma2, gemma3_text, llama"
    ):
        write_gguf(model, tokenizer, tmp_path / "x.gguf")


@pytest.mark.parametrize(
    ("family", "change", "message"),
    [
        (
            "llama",
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
            "rope_type 'yarn'",
        ),
        ("gemma3", {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
        ("gemma2", {"query_pre_attn_scalar": 32}, "query_pre_attn_scalar 32"),
        ("qwen2", {"use_sliding_window": True}, "use_sliding_window"),
        ("llama", {"mlp_bias": True}, "mlp_bias"),
    ],
)
def test_settings_llama_cpp_would_not_honour_are_refused(family, change, message, tmp_path):
    model, tokenizer = family_model(family)
    for key, value in change.items():
        setattr(model.config, key, value)
    with pytest.raises(ModelError, match=message):
        write_gguf(model, tokenizer, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def test_quantized_types_keep_embeddings_precise_and_fall_back_for_odd_rows():
    import gguf

    types = gguf.GGMLQuantizationType
    matrix = np.zeros((64, 64), dtype=np.float32)
    assert tensor_type(GGUF_DTYPES["q4_0"], "blk.0.attn_q.weight", matrix) == types.Q4_0
    assert tensor_type(GGUF_DTYPES["q4_0"], "token_embd.weight", matrix) == types.Q8_0
    assert tensor_type(GGUF_DTYPES["q8_0"], "output.weight", matrix) == types.Q8_0
    assert tensor_type(GGUF_DTYPES["q8_0"], "blk.0.attn_norm.weight", matrix[0]) == types.F32
    odd = np.zeros((64, 48), dtype=np.float32)  # rows of 48: not whole blocks of 32
    assert tensor_type(GGUF_DTYPES["q4_1"], "blk.0.ffn_up.weight", odd) == types.F16


def test_an_unknown_dtype_is_refused_with_the_choices(tmp_path):
    model, tokenizer = family_model("llama")
    with pytest.raises(ModelError, match="f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0"):
        write_gguf(model, tokenizer, tmp_path / "x.gguf", dtype="q4_k_m")
