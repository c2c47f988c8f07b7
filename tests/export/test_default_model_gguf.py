"""The default model's GGUF answers like ``tuneforge generate`` under llama.cpp (slow)."""

from __future__ import annotations

import pytest

from tuneforge.adapters import export_gguf
from tuneforge.export.llama_cpp_check import LlamaCppModel
from tuneforge.generation import GenerationSettings, chat_messages, generate, prompt_ids
from tuneforge.models import load_model

QUESTION = "What is the capital of France?"


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "max_relative"), [("f16", 5e-3), ("q8_0", 0.1)])
def test_default_model_answers_the_same_under_llama_cpp(
    dtype, max_relative, default_model_dir, llama_cpp_runtime, tmp_path
):
    report = export_gguf(str(default_model_dir), None, tmp_path / f"smollm2-{dtype}.gguf", dtype)
    assert report.gguf.pre_tokenizer == "smollm"  # by llama.cpp's own check-text hash
    assert report.gguf.pre_tokenizer_source.startswith("check-text hash")
    comparison = report.comparison
    assert comparison.tokenization_matches == comparison.prompts
    assert comparison.max_logit_diff / comparison.logit_span <= max_relative
    loaded = load_model(str(default_model_dir), dtype="float32", device="cpu", progress=False)
    settings = GenerationSettings(max_new_tokens=32)
    ours = generate(loaded.model, loaded.tokenizer, chat_messages(QUESTION), settings).text
    ids = prompt_ids(loaded.tokenizer, chat_messages(QUESTION))
    with LlamaCppModel(report.gguf.path, n_ctx=len(ids) + 40) as llama:
        theirs = loaded.tokenizer.decode(llama.greedy(ids, 32), skip_special_tokens=True)
    print(f"\n{dtype}: tuneforge generate: {ours!r}\n{dtype}: llama.cpp:          {theirs!r}")
    print(
        f"{dtype}: {report.gguf.size_bytes / 2**20:.1f} MiB, max |logit difference| "
        f"{comparison.max_logit_diff:.3g} of {comparison.logit_span:.3g}"
    )
    assert "Paris" in ours
    if dtype == "q8_0" and theirs != ours:
        # Known: llama.cpp 0.3.36's quantized CPU path answers differently here for every
        # quantized SmolLM2 file, the upstream Q4_1 one included (see docs/export.md).
        pytest.xfail(f"llama.cpp q8_0 answered {theirs!r}, tuneforge generate {ours!r}")
    assert theirs == ours
    text = report.modelfile.read_text()
    assert (
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    )
