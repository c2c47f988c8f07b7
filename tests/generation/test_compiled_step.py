"""The compiled single-row decode step (``compiled_step``) against the eager fast path and
``model.generate`` on tiny random models (fp32 and bf16): same greedy tokens, one compile for a
reply that grows the cache, eager prefills and batches around it, eager decoding when compiling
fails."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_batched_lora import with_adapters
from test_fast_path import build, rows_for, texts

from tiny import build_tokenizer
from tuneforge.generation import generate_rows, new_batch_decoder
from tuneforge.generation.compiled_step import compile_decode_steps, decode_steps_compiled
from tuneforge.generation.decoding import decode_all, generate_rows_plain
from tuneforge.generation.packed_linear import packing_supported
from tuneforge.generation.slot_cache import COLUMN_BLOCK

# inductor compiles C++ on CPU: without a compiler the step stays eager (as the test of a
# failed compile shows)
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
    reason="no C++ compiler on PATH: inductor cannot compile here",
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def compiling(compiled_calls):
    """Compiled steps on for one test (``compiled_calls`` turns them off and resets dynamo)."""
    compile_decode_steps(True)


def test_compiling_is_off_unless_asked(tokenizer):
    assert not decode_steps_compiled()
    model = build("llama", tokenizer)
    decoder = new_batch_decoder(model, tokenizer)
    decode_all(decoder, model, rows_for(tokenizer, [3], prompts=["Hi"]))
    assert [forward.compiled for forward in decoder.model_forwards()] == [None]


@needs_compiler
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_a_compiled_step_decodes_the_greedy_tokens_of_the_eager_step(tokenizer, compiling, family):
    model = build(family, tokenizer)
    # one row past a cache block: the cache grows mid-reply without a second compile
    rows = rows_for(tokenizer, [COLUMN_BLOCK + 20], prompts=["The capital of France is"])
    decoder = new_batch_decoder(model, tokenizer)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = decode_all(decoder, model, rows)
    step = decoder.model_forwards()[0].compiled
    assert step is not None and step.failed is None and step.compile_seconds is not None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1
    compile_decode_steps(False)
    assert texts(compiled) == texts(generate_rows(model, tokenizer, rows))
    assert texts(compiled) == texts(generate_rows_plain(model, tokenizer, rows))
    assert compiled[0].completion_tokens == COLUMN_BLOCK + 20


@needs_compiler
def test_batches_stay_eager_and_match_alone(tokenizer, compiling):
    model = build("llama", tokenizer)
    rows = rows_for(tokenizer, [12, 5, 9], prompts=["The capital of France is", "Hello!", "Hi"])
    batched = generate_rows(model, tokenizer, rows)  # steps of 3, then 2, then 1 row
    alone = [generate_rows(model, tokenizer, [row])[0] for row in rows]  # compiled steps
    assert texts(batched) == texts(alone)
    compile_decode_steps(False)
    assert texts(alone) == texts(generate_rows_plain(model, tokenizer, rows))


@needs_compiler
def test_a_one_token_prompt_joining_a_running_row_gets_its_solo_tokens(tokenizer, compiling):
    """A one-token prefill into slot 1 is not a slot-0 step: it stays eager."""
    from tuneforge.generation import GenerationSettings, Row

    model = build("llama", tokenizer)
    first = rows_for(tokenizer, [12], prompts=["The capital of France is"])[0]
    second = Row([tokenizer.bos_token_id or 1], GenerationSettings(max_new_tokens=6))
    decoder = new_batch_decoder(model, tokenizer)
    replies = {id(row): reply for row, reply in decoder.join(model, [first])}
    for _ in range(3):
        replies.update({id(row): reply for row, reply in decoder.step(model)})
    replies.update({id(row): reply for row, reply in decoder.join(model, [second])})
    while decoder.active:
        replies.update({id(row): reply for row, reply in decoder.step(model)})
    compile_decode_steps(False)
    for row in (first, second):
        assert texts([replies[id(row)]]) == texts(generate_rows(model, tokenizer, [row]))


@needs_compiler
@pytest.mark.skipif(
    not packing_supported(torch.zeros(1, dtype=torch.bfloat16)),
    reason="this CPU has no native bf16 products (no packed weights to compile around)",
)
def test_a_bf16_compiled_step_runs_the_packed_products(tokenizer, compiling):
    model = build("llama", tokenizer).to(torch.bfloat16)
    rows = rows_for(tokenizer, [16], prompts=["The capital of France is"])
    decoder = new_batch_decoder(model, tokenizer)
    compiled = decode_all(decoder, model, rows)
    step = decoder.model_forwards()[0].compiled
    assert step.packed and step.failed is None
    compile_decode_steps(False)
    eager = generate_rows(model, tokenizer, rows)
    # bf16 kernels may round differently once fused: the reply starts the same
    assert compiled[0].completion_tokens == 16
    assert compiled[0].text[:8] == eager[0].text[:8]


def test_a_failed_compile_warns_and_decodes_eagerly(tokenizer, compiling, monkeypatch, caplog):
    import tuneforge.generation.compiled_step as compiled_step

    def broken(function, **_):
        def fails(*args):
            raise RuntimeError("no C++ compiler found\nmore lines")

        return fails

    monkeypatch.setattr(compiled_step.torch, "compile", broken)
    model = build("llama", tokenizer)
    rows = rows_for(tokenizer, [6], prompts=["Hello!"])
    decoder = new_batch_decoder(model, tokenizer)
    with caplog.at_level("WARNING"):
        replies = decode_all(decoder, model, rows)
    step = decoder.model_forwards()[0].compiled
    assert step.failed == "RuntimeError: no C++ compiler found"
    assert "decoding eagerly" in caplog.text
    compile_decode_steps(False)
    assert texts(replies) == texts(generate_rows(model, tokenizer, rows))


@needs_compiler
def test_on_a_model_with_adapters_base_rows_compile_and_adapter_rows_stay_eager(
    tokenizer, compiling, compiled_calls
):
    steps = compiled_calls
    model = with_adapters(tokenizer)
    names = ["__base__", "a", "b"]
    rows = rows_for(tokenizer, [10, 10, 10], prompts=["The capital of France is", "Hello!", "Hi"])
    alone = []
    for row, name in zip(rows, names, strict=True):
        steps.clear()
        alone += generate_rows(model, tokenizer, [row], [name])
        # a base row's 9 decode steps ran compiled; an adapter's row never called it
        assert steps == ([True] * 9 if name == "__base__" else [])
    compile_decode_steps(False)
    assert texts(alone) == texts(generate_rows_plain(model, tokenizer, rows, names))
    assert alone[1].text != generate_rows(model, tokenizer, [rows[1]], ["__base__"])[0].text
