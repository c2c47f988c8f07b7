"""Loss masks: exactly every assistant reply and its end-of-turn token carry loss, per shape."""

from __future__ import annotations

import json

import pytest

from tuneforge.data import DataConfig, prepare_data
from tuneforge.data.rendering import ChatRenderer

EOT = "<|im_end|>"

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And Norway?"},
    {"role": "assistant", "content": "Oslo."},
]

# (record, the assistant replies it holds)
SHAPES = {
    "messages": ({"messages": MULTI_TURN}, ["Hello! How can I help?", "Paris.", "Oslo."]),
    "sharegpt": (
        {
            "conversations": [
                {"from": "system", "value": "You are terse."},
                {"from": "human", "value": "Name a city"},
                {"from": "gpt", "value": "Oslo"},
                {"from": "human", "value": "Another"},
                {"from": "gpt", "value": "Paris"},
            ]
        },
        ["Oslo", "Paris"],
    ),
    "alpaca": (
        {
            "instruction": "Return the order as JSON",
            "input": "2 lamps to Oslo",
            "output": '{"n": 2}',
        },
        ['{"n": 2}'],
    ),
    "prompt_completion": ({"prompt": "Say hello", "completion": "Hello!"}, ["Hello!"]),
    "prompt_completion_chat": (
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "completion": [{"role": "assistant", "content": "Hello, friend."}],
        },
        ["Hello, friend."],
    ),
}


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def supervised_text(tokenizer, example) -> str:
    ids = [
        token
        for token, label in zip(example.input_ids, example.labels, strict=True)
        if label != -100
    ]
    return tokenizer.decode(ids)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_only_assistant_turns_and_their_end_token_carry_loss(shape, tiny_tokenizer, tmp_path):
    record, replies = SHAPES[shape]
    path = write_jsonl(tmp_path / "data.jsonl", [record])
    prepared = prepare_data(DataConfig(path=path), tiny_tokenizer)
    (example,) = prepared.train
    assert len(example.input_ids) == len(example.labels)
    assert supervised_text(tiny_tokenizer, example) == "".join(r + EOT for r in replies)
    # Each reply is one contiguous supervised run, ending with the end-of-turn token.
    runs, previous = 0, False
    for label in example.labels:
        runs += label != -100 and not previous
        previous = label != -100
    assert runs == len(replies)


def test_end_of_turn_token_carries_loss(tiny_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": MULTI_TURN}])
    (example,) = prepare_data(DataConfig(path=path), tiny_tokenizer).train
    eos = tiny_tokenizer.eos_token_id
    eos_positions = [i for i, token in enumerate(example.input_ids) if token == eos]
    supervised_eos = [i for i in eos_positions if example.labels[i] == eos]
    assert len(supervised_eos) == 3  # one per assistant turn; system/user ends stay masked
    assert tiny_tokenizer.pad_token_id != eos


def test_train_on_inputs_supervises_every_token(tiny_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": MULTI_TURN}])
    (example,) = prepare_data(DataConfig(path=path, train_on_inputs=True), tiny_tokenizer).train
    assert example.labels == example.input_ids


def test_raw_text_trains_on_every_token_and_ends_with_eos(tiny_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "The capital of France is Paris."}])
    config = DataConfig(path=path, format="text", text_field="body")
    (example,) = prepare_data(config, tiny_tokenizer).train
    assert example.labels == example.input_ids
    assert example.input_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(example.input_ids) == "The capital of France is Paris." + EOT


def test_fallback_template_when_tokenizer_has_none(tiny_tokenizer, tmp_path):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": MULTI_TURN}])
    prepared = prepare_data(DataConfig(path=path), tokenizer)
    assert prepared.report.template == "fallback"
    assert (
        supervised_text(tokenizer, prepared.train[0])
        == "Hello! How can I help?<|im_end|>Paris.<|im_end|>Oslo.<|im_end|>"
    )


# A different layout, and one that trims contents (which disables the fast skeleton path).
OTHER_TEMPLATES = {
    "hash-headers": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}### Assistant:\n"
        "{{ m['content'] }}<|im_end|>\n{% else %}### {{ m['role'] }}:\n{{ m['content'] }}\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
    ),
    "trimming": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}


@pytest.mark.parametrize("name", sorted(OTHER_TEMPLATES))
def test_template_file_masks_follow_the_template(name, tiny_tokenizer, tmp_path):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    template = tmp_path / "template.jinja"
    template.write_text(OTHER_TEMPLATES[name], encoding="utf-8")
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": MULTI_TURN}])
    prepared = prepare_data(DataConfig(path=path, template_file=str(template)), tokenizer)
    assert prepared.report.template == "file"
    expected = "Hello! How can I help?<|im_end|>Paris.<|im_end|>Oslo.<|im_end|>"
    assert supervised_text(tokenizer, prepared.train[0]) == expected


def test_skeleton_rendering_matches_jinja_rendering(tiny_tokenizer):
    """The fast path (one Jinja render per role sequence) equals rendering each example."""
    renderer = ChatRenderer(tiny_tokenizer)
    reference = ChatRenderer(tiny_tokenizer)
    contents = ["  spaced  ", "line\nbreak", "{{ not jinja }}", "ünïcödé ✓", "<|im_end|> inside"]
    conversations = [
        (("user", a), ("assistant", b), ("user", c), ("assistant", d))
        for a, b, c, d in zip(
            contents, contents[1:], contents[2:], contents[3:] + contents[:1], strict=False
        )
    ] * 20
    for turns in conversations:
        assert renderer.render(turns) == reference.render_exact(turns)
    # One skeleton render (each a few Jinja calls) plus a couple of verifications, not 100.
    assert renderer.jinja_renders <= 4


def test_truncation_is_counted_and_fully_cut_replies_are_dropped(tiny_tokenizer, tmp_path):
    long_prompt = "word " * 200
    records = [
        {
            "messages": [
                {"role": "user", "content": long_prompt},
                {"role": "assistant", "content": "ok"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "a " * 100},
            ]
        },
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    prepared = prepare_data(DataConfig(path=path, max_length=64), tiny_tokenizer)
    report = prepared.report
    assert report.truncated == 2  # the long prompt and the long reply
    assert report.dropped_no_supervised == 1  # the long prompt left no reply: never trained on
    assert len(prepared.train) == 2
    assert all(len(ex.input_ids) <= 64 for ex in prepared.train)
    assert all(any(label != -100 for label in ex.labels) for ex in prepared.train)

    dropped = prepare_data(DataConfig(path=path, max_length=64, truncation="drop"), tiny_tokenizer)
    assert dropped.report.dropped_too_long == 2 and len(dropped.train) == 1


@pytest.mark.slow
def test_masks_with_the_default_model_tokenizer(default_model_dir, tmp_path):
    """SmolLM2's template injects a default system turn; masks still cover only the replies."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    records = [{"messages": MULTI_TURN[1:]}, SHAPES["sharegpt"][0], SHAPES["alpaca"][0]]
    (tmp_path / "data").mkdir()
    for index, record in enumerate(records):  # one shape per file, detected per file
        write_jsonl(tmp_path / "data" / f"{index}.jsonl", [record])
    prepared = prepare_data(DataConfig(path=str(tmp_path / "data")), tokenizer)
    assert prepared.report.format == "messages+sharegpt+alpaca"
    expected = [
        "Hello! How can I help?<|im_end|>Paris.<|im_end|>Oslo.<|im_end|>",
        "Oslo<|im_end|>Paris<|im_end|>",
        '{"n": 2}<|im_end|>',
    ]
    assert [supervised_text(tokenizer, ex) for ex in prepared.train] == expected
    assert "SmolLM" in tokenizer.decode(prepared.train[0].input_ids)  # injected system turn


def test_tokenizer_left_set_to_truncate_still_masks_correctly(tiny_tokenizer, tmp_path):
    """A backend left configured to truncate is not used directly (transformers handles it)."""
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.backend_tokenizer.enable_truncation(max_length=4096)
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": MULTI_TURN}])
    (example,) = prepare_data(DataConfig(path=path), tokenizer).train
    expected = "Hello! How can I help?<|im_end|>Paris.<|im_end|>Oslo.<|im_end|>"
    assert supervised_text(tokenizer, example) == expected
