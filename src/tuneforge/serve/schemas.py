"""Request and response bodies in the OpenAI shape, so existing clients work unchanged.

No request field of the generation endpoints is silently dropped. Each OpenAI field is either
honoured (``response_format`` too: JSON by a grammar), accepted and ignored because it cannot
change the reply's meaning (``user``, ``metadata``, ``store`` ...: the ``Ignored`` fields,
listed in docs/serve.md), or refused with a 400 unless it has its neutral value
(``frequency_penalty`` other than 0, ``tools``, ``logprobs`` ...: ``neutral_only``). A field
OpenAI does not define is a 400 naming it (``extra="forbid"``): a vendor extension such as
``guided_json`` would otherwise be dropped. A bad value is answered 400 with an OpenAI-style
error body naming the field. Every text field is checked to be Unicode text (``unicode_text``)
before a tokenizer, a path or a reply sees it. Two extras: ``rag`` in a request asks for
retrieval, ``sources`` in a reply lists what it used.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.generation import ANY_JSON_OBJECT

# OpenAI accepts at most 4 stop sequences.
MAX_STOP_SEQUENCES = 4
# OpenAI's seed is a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)


def unicode_text(value):
    """Refuse a string (or strings, or text parts) holding a lone UTF-16 surrogate.

    JSON may escape half of a surrogate pair (``"\\ud800"``) and Python's reader keeps it:
    that is no Unicode text, and neither a tokenizer nor a UTF-8 reply can encode it.

    Raises:
        ValueError: (pydantic answers it 400, naming the field.)
    """
    items = value if isinstance(value, list) else [value]
    for item in items:
        text = getattr(item, "text", item)
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    "holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), "
                    "which is not text; send valid Unicode"
                ) from None
    return value


def path_text(value: str) -> str:
    """``unicode_text`` for a file path, which cannot hold a NUL byte either."""
    if "\x00" in value:
        raise ValueError("holds a NUL character, which no path can contain")
    return unicode_text(value)


def neutral_only(*neutral: Any, why: str):
    """A field validator refusing every value but ``neutral`` (and None, "left out").

    For OpenAI fields tuneforge does not implement and that would change the reply's meaning
    if honoured: their neutral value is accepted (clients send ``frequency_penalty: 0``),
    anything else is a 400 naming the field and ``why``.
    """

    def check(value):
        if value is None or any(value == allowed for allowed in neutral):
            return value
        allowed = " or ".join(json.dumps(allowed) for allowed in neutral)
        raise ValueError(
            f"is not supported ({why}); leave it out" + (f" or send {allowed}" if allowed else "")
        )

    return check


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _GenerationRequest(BaseModel):
    """A field OpenAI does not define is a 400 naming it, never dropped (module docstring)."""

    model_config = ConfigDict(extra="forbid")


class TextPart(BaseModel):
    """One part of a multi-part message content; only text parts are supported."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat turn. ``name``, ``tool_call_id``, ``refusal`` and ``annotations`` are accepted
    and ignored (the chat template has no place for them; an assistant message a client got
    from a server and sends back carries some); a turn carrying tool calls or audio is
    refused."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    annotations: list | None = None
    tool_calls: list | None = None
    function_call: dict | None = None
    audio: dict | None = None

    _content_is_text = field_validator("content")(unicode_text)
    _no_tool_calls = field_validator("tool_calls")(
        neutral_only([], why="tool calling is not supported")
    )
    _no_function_call = field_validator("function_call", "audio")(
        neutral_only(why="tool calling and audio are not supported")
    )

    def as_template_dict(self) -> dict:
        """``{"role", "content"}`` with text parts joined; ``developer`` is rendered as system."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class RagOptions(BaseModel):
    """``"rag": {"top_k": 5}``: retrieve from the server's store and answer with sources."""

    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(default=5, ge=1, le=50)
    mode: str | None = None

    _mode_is_text = field_validator("mode")(unicode_text)


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` is honoured, ``include_obfuscation`` ignored."""

    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named JSON schema the reply must follow.

    ``strict`` is accepted either way: the reply is always decoded under the schema (as
    OpenAI's ``strict: true``); a schema the engine cannot enforce is a 400, never relaxed.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: ``text`` (free), ``json_object`` (any JSON object) or
    ``json_schema`` (JSON following ``json_schema.schema``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_goes_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError(
                "type 'json_schema' needs a 'json_schema' object: "
                '{"name": "...", "schema": {...}}'
            )
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"'json_schema' goes with type 'json_schema', not {self.type!r}")
        return self

    def constraint(self) -> dict | None:
        """The JSON schema replies must follow (None: free text)."""
        if self.type == "json_object":
            return dict(ANY_JSON_OBJECT)
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.json_schema
        return None


class SamplingFields(_GenerationRequest):
    """Fields shared by chat and text completions.

    Ignored (they cannot change the reply): ``user``, ``metadata``, ``store``,
    ``service_tier``, ``prompt_cache_key``, ``prompt_cache_retention``, ``safety_identifier``.
    """

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(default=1, ge=1, le=1, description="only n=1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # Ignored: bookkeeping and routing at OpenAI, no effect on the reply.
    user: str | None = None
    metadata: dict | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None

    # Validators are keyed by attribute name: each class names its own, or a subclass's
    # would replace its parent's.
    _model_and_stop_are_text = field_validator("model", "stop")(unicode_text)
    _no_penalties = field_validator("frequency_penalty", "presence_penalty")(
        neutral_only(0, why="tuneforge samples without repetition penalties")
    )
    _no_logit_bias = field_validator("logit_bias")(
        neutral_only({}, why="per-token biases are not supported; use response_format for JSON")
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def constraint(self) -> dict | None:
        """The JSON schema ``response_format`` asks replies to follow (None: free text)."""
        return None if self.response_format is None else self.response_format.constraint()


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``.

    Also ignored: ``parallel_tool_calls`` (no tools), ``prediction`` (a latency hint),
    ``reasoning_effort`` and ``verbosity`` (hints for reasoning models).
    """

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    rag: RagOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    web_search_options: dict | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None

    _no_logprobs = field_validator("logprobs")(
        neutral_only(False, why="replies carry no log probabilities")
    )
    _no_top_logprobs = field_validator("top_logprobs")(
        neutral_only(0, why="replies carry no log probabilities")
    )
    _no_tools = field_validator("tools", "functions")(
        neutral_only([], why="tool calling is not supported")
    )
    _no_tool_choice = field_validator("tool_choice", "function_call")(
        neutral_only("none", "auto", why="tool calling is not supported")
    )
    _text_only = field_validator("modalities")(
        neutral_only(["text"], why="only text replies are supported")
    )
    _no_audio_or_search = field_validator("audio", "web_search_options")(
        neutral_only(why="audio and web search are not supported")
    )


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``: a raw prompt, no chat template."""

    prompt: str | list[str]
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None

    _prompt_is_text = field_validator("prompt")(unicode_text)
    _one_candidate = field_validator("best_of")(
        neutral_only(1, why="one candidate is generated per request")
    )
    _no_echo = field_validator("echo")(neutral_only(False, why="the prompt is not echoed"))
    _no_completion_logprobs = field_validator("logprobs")(
        neutral_only(why="replies carry no log probabilities")
    )
    _no_suffix = field_validator("suffix")(
        neutral_only("", why="insertion after a suffix is not supported")
    )

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class LoadAdapterRequest(_Request):
    """``POST /v1/load_lora_adapter`` (the vLLM path and body)."""

    lora_name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$")
    lora_path: str = Field(min_length=1, max_length=4096)

    _lora_path_is_a_path = field_validator("lora_path")(path_text)


class UnloadAdapterRequest(_Request):
    """``POST /v1/unload_lora_adapter``."""

    lora_name: str = Field(min_length=1)

    _lora_name_is_text = field_validator("lora_name")(unicode_text)


class Usage(BaseModel):
    """Token counts (tokens): the prompt after the chat template, and the completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Source(BaseModel):
    """A retrieved passage the answer may cite as ``[index]``."""

    index: int
    source: str
    location: str | None = None
    score: float
    text: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    sources: list[Source] | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
