"""Every exported family and weight type, run under llama.cpp itself against transformers.

Tolerances per type, as ``max |logit difference| / max |logit|`` over the sample prompts' positions
and the share of positions whose most likely next token agrees. They were measured on these
tiny random models (weights of std 0.2: chaotic, so rounding shows far more than on a trained
model; the default model is checked in ``test_default_model_gguf.py``) with about 2-3x margin. A
wrong tensor layout, norm offset, rope or tokenizer gives differences of the logits' own size and
agreement near 1/vocabulary.
"""

from __future__ import annotations

import pytest
from family_assets import FAMILIES

from tuneforge.export.gguf_file import write_gguf
from tuneforge.export.llama_cpp_check import compare_with_llama_cpp

# dtype -> (max relative logit difference, min top-1 agreement)
TOLERANCES = {
    "f32": (1e-3, 1.0),
    "f16": (1e-2, 0.98),
    "bf16": (6e-2, 0.85),
    "q8_0": (0.2, 0.75),
    "q5_1": (0.9, 0.55),
    "q5_0": (0.9, 0.55),
    "q4_1": (1.6, 0.3),
    "q4_0": (1.6, 0.3),
}
EVERY_FAMILY_DTYPES = ("f32", "f16", "q8_0", "q4_0")
CASES = [(f, d) for f in FAMILIES for d in EVERY_FAMILY_DTYPES] + [
    ("llama", d) for d in TOLERANCES if d not in EVERY_FAMILY_DTYPES
]


@pytest.mark.parametrize(("family", "dtype"), CASES)
def test_family_and_dtype_match_under_llama_cpp(
    family, dtype, family_models, llama_cpp_runtime, tmp_path
):
    model, tokenizer = family_models(family)
    written = write_gguf(model, tokenizer, tmp_path / f"{family}.gguf", dtype=dtype)
    result = compare_with_llama_cpp(written.path, model, tokenizer, max_new_tokens=6)
    max_relative, min_top1 = TOLERANCES[dtype]
    assert result.tokenization_matches == result.prompts  # vocabulary and pre-tokenizer
    assert result.max_logit_diff / result.logit_span <= max_relative
    assert result.top1_agreement >= min_top1
    if dtype in ("f32", "f16"):  # greedy answers: the same tokens, not just close logits
        assert result.greedy_matches == result.prompts, result.answers


@pytest.mark.parametrize(
    ("family", "architecture", "tokenizer_model", "pre_tokenizer"),
    [
        ("llama", "llama", "gpt2", "smollm"),
        ("llama3", "llama", "gpt2", "llama-bpe"),
        ("mistral", "llama", "llama", None),
        ("qwen2", "qwen2", "gpt2", "qwen2"),
        ("qwen3", "qwen3", "gpt2", "qwen2"),
        ("gemma2", "gemma2", "llama", None),
        ("gemma3", "gemma3", "llama", None),
    ],
)
def test_family_metadata(
    family, architecture, tokenizer_model, pre_tokenizer, family_models, tmp_path
):
    import gguf

    model, tokenizer = family_models(family)
    written = write_gguf(model, tokenizer, tmp_path / "m.gguf", dtype="q8_0")
    assert (written.architecture, written.tokenizer_model) == (architecture, tokenizer_model)
    assert written.pre_tokenizer == pre_tokenizer
    reader = gguf.GGUFReader(str(written.path))
    assert reader.fields["general.architecture"].contents() == architecture
    assert reader.fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert written.size_bytes == written.path.stat().st_size
    if family == "llama3":  # rope_scaling llama3 becomes llama.cpp's rope_freqs tensor
        assert types["rope_freqs.weight"] == "F32"
