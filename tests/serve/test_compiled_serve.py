"""``tuneforge serve --compile``: the decode step compiles while the server starts, before it
answers anyone; a request through the official ``openai`` client then runs compiled steps and
gets the reply of ``tuneforge generate`` (eager); an adapter's request stays eager."""

from __future__ import annotations

import shutil

import pytest

from conftest import BASE_NAME, Server
from tuneforge.generation.compiled_step import compile_decode_steps


@pytest.mark.skipif(
    not any(shutil.which(name) for name in ("c++", "g++", "clang++")),
    reason="no C++ compiler on PATH: inductor cannot compile here",
)
def test_serve_compile_compiles_at_start_and_answers_as_generate(
    tiny_model_dir, adapter_root, compiled_calls
):
    from tuneforge.generation import GenerationSettings, generate
    from tuneforge.models import load_model
    from tuneforge.serve import ServeSettings, serve_in_thread
    from tuneforge.serve.launch import build_server

    settings = ServeSettings(model_name=BASE_NAME, api_key="k")
    built = build_server(
        str(tiny_model_dir),
        {"a1": adapter_root / "a1"},
        settings,
        dtype="float32",
        compile_steps=True,
    )
    assert built.compiled.startswith("single-row decode steps compiled in"), built.compiled
    assert compiled_calls == [True] * 3  # the 4-token warm-up: 3 decode steps, compiled
    compiled_calls.clear()
    messages = [{"role": "user", "content": "The capital of France is"}]
    with serve_in_thread(built.app) as url:
        client = Server(url=url, engine=None, api_key="k").client()
        base = client.chat.completions.create(
            model=BASE_NAME, messages=messages, max_tokens=10, temperature=0
        )
        steps = list(compiled_calls)
        adapted = client.chat.completions.create(
            model="a1", messages=messages, max_tokens=10, temperature=0
        )
    assert steps and all(steps)  # the base request's decode steps ran compiled
    assert compiled_calls == steps  # the adapter's did not call the compiled step
    compile_decode_steps(False)
    loaded = load_model(str(tiny_model_dir), dtype="float32")
    eager = generate(
        loaded.model, loaded.tokenizer, messages, GenerationSettings(max_new_tokens=10)
    )
    assert base.choices[0].message.content == eager.text
    assert adapted.choices[0].message.content != eager.text


def test_serve_help_offers_compile(capsys):
    from tuneforge.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--compile" in capsys.readouterr().out
