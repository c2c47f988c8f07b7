"""``response_format`` on the real server, driven by the official ``openai`` client: JSON that
follows the schema (chat and completions, streamed and not), truncation reported as
``"length"``, schemas that cannot be compiled refused with a 400 naming the problem, mixed
batches (constrained and free rows, several adapters) giving each row its reply alone, and the
field policy: what would change the reply's meaning is refused, never dropped."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Literal

import openai
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from conftest import BASE_NAME
from json_schemas import ORDER

ORDER_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "order", "schema": ORDER, "strict": True},
}
MESSAGES = [
    [{"role": "user", "content": "Order 2 lamps, ship to Oslo."}],
    [{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": "Hello!"}],
]


def valid(text: str, schema: dict = ORDER) -> bool:
    try:
        return Draft202012Validator(schema).is_valid(json.loads(text))
    except json.JSONDecodeError:
        return False


def chat(client, model=BASE_NAME, messages=MESSAGES[0], max_tokens=60, **kwargs):
    return client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kwargs
    )


def streamed(stream) -> tuple[str, str | None]:
    """(joined text, finish_reason) of a chat or text-completion stream."""
    pieces, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            delta = getattr(choice, "delta", None)
            pieces.append((delta.content if delta else choice.text) or "")
            finish = choice.finish_reason or finish
    return "".join(pieces), finish


def error_of(text: str) -> dict:
    return json.loads(text)["error"]


@pytest.mark.parametrize("model", [BASE_NAME, "a1"])
def test_chat_json_schema_reply_is_schema_valid_streamed_and_not(server, model):
    client = server.client()
    for messages in MESSAGES:
        reply = chat(client, model, messages, response_format=ORDER_FORMAT)
        text = reply.choices[0].message.content
        assert valid(text), text
        assert reply.choices[0].finish_reason == "stop"
        stream = chat(client, model, messages, response_format=ORDER_FORMAT, stream=True)
        assert streamed(stream) == (text, "stop")
    free = chat(client, model, MESSAGES[0]).choices[0].message.content
    assert not valid(free)  # the grammar, not the model, makes the replies valid


def test_openai_client_parse_with_a_pydantic_model(server):
    """The client's own structured-output helper: it sends a strict json_schema built from
    the pydantic model and parses the reply into it."""

    class Order(BaseModel):
        intent: Literal["order", "cancel", "return"]
        quantity: int = Field(ge=1, le=12)
        urgent: bool

    completion = server.client().chat.completions.parse(
        model=BASE_NAME, messages=MESSAGES[0], max_tokens=60, temperature=0, response_format=Order
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Order)
    assert 1 <= parsed.quantity <= 12


def test_completions_json_schema_streamed_and_not(server):
    client = server.client()
    kwargs = {"model": BASE_NAME, "prompt": "Order: ", "max_tokens": 60, "temperature": 0}
    body = {"response_format": ORDER_FORMAT}
    reply = client.completions.create(**kwargs, extra_body=body)
    assert valid(reply.choices[0].text), reply.choices[0].text
    assert reply.choices[0].finish_reason == "stop"
    stream = client.completions.create(**kwargs, extra_body=body, stream=True)
    assert streamed(stream) == (reply.choices[0].text, "stop")


def test_json_object_reply_is_an_object_or_reported_truncated(server):
    client = server.client()
    for messages in MESSAGES:
        reply = chat(
            client, messages=messages, max_tokens=30, response_format={"type": "json_object"}
        )
        text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert text.startswith("{")
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert finish == "length" and reply.usage.completion_tokens == 30


def test_reply_cut_by_max_tokens_is_length_not_valid_json(server):
    client = server.client()
    reply = chat(client, max_tokens=4, response_format=ORDER_FORMAT)
    assert reply.choices[0].finish_reason == "length"
    assert not valid(reply.choices[0].message.content)
    stream = chat(client, max_tokens=4, response_format=ORDER_FORMAT, stream=True)
    assert streamed(stream) == (reply.choices[0].message.content, "length")


def test_response_format_text_is_free_decoding(server):
    client = server.client()
    free = chat(client).choices[0].message.content
    assert chat(client, response_format={"type": "text"}).choices[0].message.content == free


@pytest.mark.parametrize(
    ("response_format", "code", "param", "message"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}},
         "invalid_json_schema", "response_format.json_schema.schema", "'strnig' is not valid"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
         "invalid_json_schema", "response_format.json_schema.schema", 'Unimplemented keys: ["uniqueItems"]'),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 3, "maximum": 1}}},
         "invalid_json_schema", "response_format.json_schema.schema", "minimum (3) is greater than maximum (1)"),
        ({"type": "json_schema", "json_schema": {"name": "x"}},
         "invalid_request", "response_format.json_schema.schema", "Field required"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": ["not", "an", "object"]}},
         "invalid_request", "response_format.json_schema.schema", "valid dictionary"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/none"}}},
         "invalid_json_schema", "response_format.json_schema.schema", "cannot be compiled"),
        ({"type": "json_schema"}, "invalid_request", "response_format", "needs a 'json_schema' object"),
        ({"type": "json_object", "json_schema": {"name": "x", "schema": {}}},
         "invalid_request", "response_format", "goes with type 'json_schema'"),
        ({"type": "xml"}, "invalid_request", "response_format.type", "'text', 'json_object' or 'json_schema'"),
        ({"type": "json_schema", "json_schema": {"name": "has space", "schema": ORDER}},
         "invalid_request", "response_format.json_schema.name", "pattern"),
    ],
)  # fmt: skip
def test_bad_response_format_is_a_400_naming_the_problem(
    server, response_format, code, param, message
):
    for path, body in (
        ("/v1/chat/completions", {"messages": MESSAGES[0]}),
        ("/v1/chat/completions", {"messages": MESSAGES[0], "stream": True}),
        ("/v1/completions", {"prompt": "Order: "}),
        ("/v1/completions", {"prompt": "Order: ", "stream": True}),
    ):
        status, text = server.http(
            "POST", path, {"model": BASE_NAME, "response_format": response_format, **body}
        )
        assert status == 400, text
        error = error_of(text)  # OpenAI's shape: {"error": {message, type, param, code}}
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            code,
            param,
        )
        assert message in error["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        chat(server.client(), response_format=response_format)
    assert raised.value.status_code == 400
    assert (raised.value.code, raised.value.param) == (code, param)


@pytest.mark.parametrize(
    ("path", "extra", "param", "message"),
    [
        ("/v1/chat/completions", {"frequency_penalty": 0.5}, "frequency_penalty", "without repetition penalties"),
        ("/v1/chat/completions", {"presence_penalty": -1}, "presence_penalty", "is not supported"),
        ("/v1/chat/completions", {"logit_bias": {"5": 10}}, "logit_bias", "is not supported"),
        ("/v1/chat/completions", {"logprobs": True}, "logprobs", "no log probabilities"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs", "no log probabilities"),
        ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool calling"),
        ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice", "tool calling"),
        ("/v1/chat/completions", {"n": 2}, "n", "less than or equal to 1"),
        ("/v1/chat/completions", {"modalities": ["text", "audio"]}, "modalities", "only text"),
        ("/v1/chat/completions", {"web_search_options": {}}, "web_search_options", "web search"),
        ("/v1/chat/completions", {"guided_json": ORDER}, "guided_json", "Extra inputs are not permitted"),
        ("/v1/chat/completions", {"top_k": 5}, "top_k", "Extra inputs are not permitted"),
        ("/v1/chat/completions", {"stop": ["}"], "response_format": ORDER_FORMAT}, "stop", "would cut the JSON"),
        ("/v1/chat/completions", {"rag": {"top_k": 2}, "response_format": ORDER_FORMAT}, "rag", "refusal text"),
        ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}, *MESSAGES[0]]},
         "messages.0.tool_calls", "tool calling"),
        ("/v1/completions", {"echo": True}, "echo", "not echoed"),
        ("/v1/completions", {"best_of": 2}, "best_of", "one candidate"),
        ("/v1/completions", {"logprobs": 0}, "logprobs", "no log probabilities"),
        ("/v1/completions", {"suffix": "}"}, "suffix", "insertion"),
        ("/v1/completions", {"min_p": 0.1}, "min_p", "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_fields_that_would_change_the_reply_are_refused(server, path, extra, param, message):
    body = {"model": BASE_NAME, "max_tokens": 2}
    body.update({"messages": MESSAGES[0]} if "chat" in path else {"prompt": "Hi"})
    status, text = server.http("POST", path, {**body, **extra})
    assert status == 400, text
    error = error_of(text)
    assert error["param"] == param
    assert message in error["message"]


def test_neutral_and_ignored_fields_are_accepted_and_change_nothing(server):
    client = server.client()
    plain = chat(client, max_tokens=8)
    noisy = client.chat.completions.create(
        model=BASE_NAME,
        messages=[{**MESSAGES[0][0], "name": "kim"}],
        max_tokens=8,
        temperature=0,
        frequency_penalty=0,
        presence_penalty=0,
        logit_bias={},
        logprobs=False,
        n=1,
        user="user-42",
        metadata={"run": "test"},
        store=False,
        service_tier="auto",
        tool_choice="none",
        parallel_tool_calls=False,
        reasoning_effort="low",
        response_format={"type": "text"},
        extra_body={"safety_identifier": "s", "prompt_cache_key": "k"},
    )
    assert noisy.choices[0].message.content == plain.choices[0].message.content
    # The assistant message as an OpenAI server returns it (refusal, annotations, tool_calls
    # null) goes back into the history unchanged.
    history = [
        *MESSAGES[0],
        {"role": "assistant", "content": "ok", "refusal": None, "annotations": [],
         "audio": None, "function_call": None, "tool_calls": None},
        {"role": "user", "content": "again"},
    ]  # fmt: skip
    assert chat(client, messages=history, max_tokens=2).usage.completion_tokens >= 1
    text = client.completions.create(
        model=BASE_NAME, prompt="Hi", max_tokens=4, temperature=0, echo=False, best_of=1, user="u"
    )
    assert (
        text.choices[0].text
        == client.completions.create(model=BASE_NAME, prompt="Hi", max_tokens=4, temperature=0)
        .choices[0]
        .text
    )


def test_mixed_batch_constrained_and_free_rows_on_two_adapters(tiny_model_dir, adapter_root):
    """One batch: constrained and free rows on the base and two adapters; each row gets the
    reply it gets alone."""
    from tuneforge.adapters import AdapterRegistry
    from tuneforge.generation import GenerationSettings, JsonSchemaCompiler, Row, prompt_ids
    from tuneforge.models import load_model

    loaded = load_model(str(tiny_model_dir))
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    registry.load("a1", adapter_root / "a1")
    registry.load("a2", adapter_root / "a2")
    grammar = JsonSchemaCompiler.for_model(registry.model, registry.tokenizer).compile(ORDER)
    plan = [("a1", True), ("a2", False), (None, True), ("a2", True), ("a1", False)]

    def rows() -> list[Row]:
        ids = prompt_ids(registry.tokenizer, MESSAGES[0])
        settings = GenerationSettings(max_new_tokens=40)
        return [
            Row(
                ids,
                settings,
                adapter,
                logits_processor=grammar.row_processor() if json_row else None,
            )
            for adapter, json_row in plan
        ]

    together = registry.decode(rows())
    alone = [registry.decode([row])[0] for row in rows()]
    assert [(r.text, r.finish_reason) for r in together] == [
        (r.text, r.finish_reason) for r in alone
    ]
    for reply, (_, json_row) in zip(together, plan, strict=True):
        assert valid(reply.text) is json_row
    # The adapters matter: the same grammar gives different JSON on different adapters.
    assert len({together[0].text, together[2].text, together[3].text}) > 1


def test_concurrent_constrained_and_free_requests_each_get_their_alone_reply(server):
    client = server.client()
    requests = [
        {"model": "a1", "response_format": ORDER_FORMAT},
        {"model": BASE_NAME},
        {"model": BASE_NAME, "response_format": ORDER_FORMAT},
        {"model": "a1"},
    ]
    alone = [chat(client, **kwargs).choices[0].message.content for kwargs in requests]
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(chat, client, **kwargs) for kwargs in requests]
        together = [future.result().choices[0].message.content for future in futures]
    assert together == alone
