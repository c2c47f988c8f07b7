"""Constrained decoding on the one decoding path: replies follow the schema, rows with and
without a grammar share a batch and each gets what it gets alone, a reply cut before its JSON
closes is "length" (a complete one "stop"), and schemas the engine cannot enforce are refused
with a message naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator

from json_schemas import ORDER
from tuneforge.errors import DataError
from tuneforge.generation import (
    GenerationSettings,
    GrammarProcessor,
    JsonSchemaCompiler,
    Row,
    SchemaError,
    chat_messages,
    generate,
    generate_rows,
    prompt_ids,
    read_json_schema,
    validate_json_schema,
)

# Schemas whose every valid reply is short, so a random model always finishes them.
COVERED = {
    "enum and bounded integer": ORDER,
    "nested objects": {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {"gift": {"type": "boolean"}, "size": {"enum": ["S", "M"]}},
                "required": ["gift", "size"],
                "additionalProperties": False,
            }
        },
        "required": ["order"],
        "additionalProperties": False,
    },
    "array with bounds": {
        "type": "object",
        "properties": {
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3}
        },
        "required": ["flags"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-C]{2}-[0-9]$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "number with bounds": {
        "type": "object",
        "properties": {"price": {"type": "number", "minimum": 0, "maximum": 9, "multipleOf": 0.5}},
        "required": ["price"],
        "additionalProperties": False,
    },
    "const and anyOf": {
        "type": "object",
        "properties": {
            "version": {"const": 2},
            "note": {"anyOf": [{"type": "null"}, {"enum": ["a", "b"]}]},
        },
        "required": ["version", "note"],
        "additionalProperties": False,
    },
}

PROMPTS = ["Order 2 lamps, ship to Oslo.", "Hello!", "The capital of France is", "x"]


@pytest.fixture(scope="module")
def compiler(lm):
    model, tokenizer = lm
    return JsonSchemaCompiler.for_model(model, tokenizer)


def valid(text: str, schema: dict) -> bool:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return False
    return Draft202012Validator(schema).is_valid(parsed)


def row(tokenizer, prompt: str, max_new_tokens: int = 60, processor=None, **settings) -> Row:
    return Row(
        prompt_ids(tokenizer, chat_messages(prompt)),
        GenerationSettings(max_new_tokens=max_new_tokens, **settings),
        logits_processor=processor,
    )


@pytest.mark.parametrize("name", COVERED)
def test_replies_follow_the_schema_and_stop(lm, compiler, name):
    model, tokenizer = lm
    schema = COVERED[name]
    grammar = compiler.compile(schema)
    for prompt in PROMPTS:
        reply = generate(
            model,
            tokenizer,
            chat_messages(prompt),
            GenerationSettings(max_new_tokens=80),
            logits_processor=grammar.row_processor(),
        )
        assert reply.finish_reason == "stop", reply
        assert valid(reply.text, schema), reply.text
        # Compact JSON, in json.dumps' default format: nothing spent on whitespace.
        assert reply.text == json.dumps(json.loads(reply.text))


def test_the_free_model_does_not_follow_the_schema_alone(lm):
    """Guards the test above: the mask is what makes the replies valid."""
    model, tokenizer = lm
    replies = [
        generate(model, tokenizer, chat_messages(p), GenerationSettings(max_new_tokens=30))
        for p in PROMPTS
    ]
    assert not any(valid(reply.text, ORDER) for reply in replies)


def test_constrained_and_free_rows_in_one_batch_each_get_their_alone_reply(lm, compiler):
    model, tokenizer = lm
    grammar = compiler.compile(ORDER)
    plan = [(PROMPTS[0], True), (PROMPTS[1], False), (PROMPTS[2], True), (PROMPTS[3], False)]

    def rows():
        return [
            row(tokenizer, prompt, 40, grammar.row_processor() if constrained else None)
            for prompt, constrained in plan
        ]

    together = generate_rows(model, tokenizer, rows())
    alone = [generate_rows(model, tokenizer, [single])[0] for single in rows()]
    assert [(r.text, r.finish_reason) for r in together] == [
        (r.text, r.finish_reason) for r in alone
    ]
    for reply, (_, constrained) in zip(together, plan, strict=True):
        assert valid(reply.text, ORDER) is constrained


def test_sampled_rows_follow_the_schema_too(lm, compiler):
    """The mask comes before temperature and top-p: sampling never leaves the grammar."""
    model, tokenizer = lm
    grammar = compiler.compile(ORDER)
    for seed in range(4):
        reply = generate(
            model,
            tokenizer,
            chat_messages(PROMPTS[seed]),
            GenerationSettings(max_new_tokens=60, temperature=1.5, top_p=0.9, seed=seed),
            logits_processor=grammar.row_processor(),
        )
        assert reply.finish_reason == "stop"
        assert valid(reply.text, ORDER), reply.text


def test_a_reply_cut_before_its_json_closes_is_length_and_a_complete_one_stop(lm, compiler):
    model, tokenizer = lm
    grammar = compiler.compile(ORDER)
    full = generate_rows(
        model, tokenizer, [row(tokenizer, PROMPTS[0], 60, grammar.row_processor())]
    )[0]
    assert full.finish_reason == "stop"
    # Its last token is the stop token; one fewer leaves the JSON complete but unstopped.
    closed = generate_rows(
        model,
        tokenizer,
        [row(tokenizer, PROMPTS[0], full.completion_tokens - 1, grammar.row_processor())],
    )[0]
    assert (closed.text, closed.finish_reason) == (full.text, "stop")
    cut = generate_rows(model, tokenizer, [row(tokenizer, PROMPTS[0], 4, grammar.row_processor())])[
        0
    ]
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 4
    assert full.text.startswith(cut.text)
    assert not valid(cut.text, ORDER)


def test_a_stop_string_that_cuts_the_json_is_reported_truncated(lm, compiler):
    model, tokenizer = lm
    grammar = compiler.compile(ORDER)
    reply = generate_rows(
        model,
        tokenizer,
        [row(tokenizer, PROMPTS[0], 60, grammar.row_processor(), stop=['"quantity'])],
    )[0]
    assert reply.text.startswith('{"intent": "') and "quantity" not in reply.text
    assert reply.finish_reason == "length"
    assert not valid(reply.text, ORDER)


def test_any_json_object_grammar(lm, compiler):
    """``compile(None)`` is ``--json`` / ``json_object``: an object; cut short, "length"."""
    model, tokenizer = lm
    grammar = compiler.compile(None)
    assert grammar.schema == {"type": "object"}
    for prompt in PROMPTS:
        reply = generate(
            model,
            tokenizer,
            chat_messages(prompt),
            GenerationSettings(max_new_tokens=25),
            logits_processor=grammar.row_processor(),
        )
        assert reply.text.startswith("{")
        if reply.finish_reason == "stop":
            assert isinstance(json.loads(reply.text), dict)
        else:
            assert reply.completion_tokens == 25


def test_row_processor_protocol_and_error_state(lm, compiler):
    """A token outside the grammar puts the matcher in error: only stop tokens are allowed
    next and the row is never complete (reported "length")."""
    _, tokenizer = lm
    processor = compiler.compile(ORDER).row_processor()
    assert isinstance(processor, GrammarProcessor)
    scores = torch.zeros(compiler.vocab_size)
    masked = processor([], scores.clone())
    allowed = torch.isfinite(masked).nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)
    wrong = tokenizer.convert_tokens_to_ids("x")
    masked = processor([wrong], torch.zeros(compiler.vocab_size))
    assert processor.error
    assert torch.isfinite(masked).nonzero().flatten().tolist() == compiler.stop_ids
    assert not processor.is_complete([wrong, compiler.stop_ids[0]])


def test_head_wider_than_the_tokenizer_masks_the_padding(lm):
    _, tokenizer = lm
    compiler = JsonSchemaCompiler(tokenizer, len(tokenizer) + 32, [tokenizer.eos_token_id])
    processor = compiler.compile(ORDER).row_processor()
    masked = processor([], torch.zeros(len(tokenizer) + 32))
    assert not torch.isfinite(masked[len(tokenizer) :]).any()
    assert torch.isfinite(masked[: len(tokenizer)]).any()


def test_compiled_schemas_are_cached_by_content_and_order(compiler):
    first = compiler.compile(ORDER)
    assert compiler.compile(json.loads(json.dumps(ORDER))) is first
    reordered = dict(ORDER, properties=dict(reversed(list(ORDER["properties"].items()))))
    assert compiler.compile(reordered) is not first


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "strnig"}, "invalid JSON schema at type: 'strnig' is not valid"),
        ({"type": "object", "properties": {"a": {"minLength": -1}}}, "at properties/a/minLength"),
        ({"type": "array", "uniqueItems": True}, 'Unimplemented keys: ["uniqueItems"]'),
        ({"not": {"type": "string"}}, 'Unimplemented keys: ["not"]'),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum (5) is greater than maximum (1)"),
        ({"type": "string", "pattern": "[a-"}, "at pattern: '[a-' is not a 'regex'"),
        ({"type": "string", "pattern": "^(?=a)b$"}, "look-around, including look-ahead and look-behind, is not supported"),
        ({"properties": {"a": {"$ref": "#/defs/x"}}}, "Pointer '/defs/x' does not exist"),
        ({"type": "object", "x": {1, 2}}, "not JSON data"),
    ],
)  # fmt: skip
def test_schemas_the_engine_cannot_enforce_are_refused_by_name(compiler, schema, message):
    with pytest.raises(SchemaError) as err:
        compiler.compile(schema)
    assert message in str(err.value)
    if "not JSON data" not in message:  # the same verdict without a model, before one loads
        with pytest.raises(SchemaError) as early:
            validate_json_schema(schema)
        assert str(early.value) == str(err.value)


def test_read_json_schema_errors_name_the_file(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps(ORDER), encoding="utf-8")
    assert read_json_schema(good) == ORDER
    cases = {
        "missing.json": (None, "no such file"),
        "broken.json": ('{\n  "type": "object",\n}', "broken.json:3: not JSON"),
        "list.json": ("[1]", "a JSON schema is a JSON object, got list"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as err:
            read_json_schema(path)
        assert message in str(err.value) and name in str(err.value)


def test_mask_matches_the_engine_bitmask(lm, compiler):
    """The numpy mask application equals a plain reading of the engine's bitmask."""
    processor = compiler.compile(ORDER).row_processor()
    scores = torch.randn(compiler.vocab_size)
    masked = processor([], scores.clone())
    bits = np.unpackbits(processor._mask.view(np.uint8), bitorder="little")[: compiler.vocab_size]
    expected = torch.where(torch.from_numpy(bits.astype(bool)), scores, float("-inf"))
    assert torch.equal(masked, expected)
