"""The Ollama Modelfile: the chat format written as a Go template only when it renders the same."""

from __future__ import annotations

import pytest
from family_assets import CHATML, family_model

from tuneforge.export.modelfile import (
    CHAT_FORMATS,
    modelfile_text,
    ollama_create_command,
    ollama_model_name,
    recognise_template,
)

SMOLLM2_STYLE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant named Tiny<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize(("family", "expected"), [("qwen2", "chatml"), ("llama3", "llama3")])
def test_known_formats_are_recognised_and_written_as_go_templates(family, expected):
    _, tokenizer = family_model(family)
    recognised = recognise_template(tokenizer)
    assert recognised.chat_format.name == expected and recognised.default_system is None
    text = modelfile_text("m.gguf", tokenizer, 256)
    assert 'TEMPLATE """' + recognised.chat_format.go_template + '"""' in text
    assert f"PARAMETER stop {recognised.chat_format.end_of_turn}\n" in text
    assert "FROM ./m.gguf\n" in text and "SYSTEM" not in text


def test_a_default_system_prompt_becomes_system():
    _, tokenizer = family_model("qwen2")
    tokenizer.chat_template = SMOLLM2_STYLE
    recognised = recognise_template(tokenizer)
    assert recognised.chat_format.name == "chatml"
    assert recognised.default_system == "You are a helpful assistant named Tiny"
    text = modelfile_text("m.gguf", tokenizer, 8192)
    assert 'SYSTEM """You are a helpful assistant named Tiny"""' in text
    assert "PARAMETER num_ctx 4096" in text  # capped
    # The Go template over [system, user] renders what the Jinja template renders unasked.
    messages = [{"role": "user", "content": "Hi"}]
    with_system = [{"role": "system", "content": recognised.default_system}, *messages]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert recognised.chat_format.render(with_system) == rendered


def test_unrecognised_templates_get_no_template_but_stops_and_greedy_parameters():
    _, tokenizer = family_model("gemma3")
    assert recognise_template(tokenizer) is None
    text = modelfile_text("g.gguf", tokenizer, 256)
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "").replace("Add a TEMPLATE", "")
    assert "PARAMETER stop <end_of_turn>\n" in text and "PARAMETER stop <eos>\n" in text
    assert "PARAMETER temperature 0\n" in text and "PARAMETER repeat_penalty 1\n" in text


def test_a_template_that_differs_slightly_is_not_claimed():
    _, tokenizer = family_model("qwen2")
    tokenizer.chat_template = CHATML.replace("'\n' }}{% endfor %}", "'\n\n' }}{% endfor %}")
    assert recognise_template(tokenizer) is None
    assert {f.name for f in CHAT_FORMATS} == {"chatml", "llama3"}


def test_ollama_names_and_command(tmp_path):
    assert ollama_model_name(tmp_path / "My Model_v2.Q8.gguf") == "my-model_v2.q8"
    command = ollama_create_command(tmp_path / "json.Modelfile")
    assert command == f"ollama create json -f {tmp_path / 'json.Modelfile'}"
