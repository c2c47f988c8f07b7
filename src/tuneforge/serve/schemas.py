"""Request and response bodies in the OpenAI shape, so existing clients work unchanged.

Unknown request fields are ignored (clients send ``user``, ``frequency_penalty`` ...); known ones
are validated, and a bad value is answered 400 with an OpenAI-style error body naming the field.
Every text field is checked to be Unicode text (``unicode_text``) before a tokenizer, a path
or a reply sees it. Two extras: ``rag`` in a request asks for retrieval, ``sources`` in a reply
lists what it used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(BaseModel):
    """One part of a multi-part message content; only text parts are supported."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    _content_is_text = field_validator("content")(unicode_text)

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
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingFields(_Request):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(default=1, ge=1, le=1, description="only n=1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None

    # Validators are keyed by attribute name: each class names its own, or a subclass's
    # would replace its parent's.
    _model_and_stop_are_text = field_validator("model", "stop")(unicode_text)

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


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    rag: RagOptions | None = None


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``: a raw prompt, no chat template."""

    prompt: str | list[str]

    _prompt_is_text = field_validator("prompt")(unicode_text)

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
