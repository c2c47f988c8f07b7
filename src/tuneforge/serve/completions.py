"""``POST /v1/chat/completions`` and ``POST /v1/completions``: validate, queue, answer or stream.

Usage counts are tokenizer counts: the prompt after the chat template (chat) or as sent
(completions), and every generated token including the end-of-turn token.

Templating and tokenizing run in a worker thread: a prompt of megabytes takes seconds to
tokenize, and the event loop keeps answering other requests (``/health`` too) meanwhile. A
request whose client goes away stops its row, streamed or not.

``response_format`` (``json_object`` or ``json_schema``) compiles the schema (cached, in a worker
thread; one that cannot be compiled is a 400 naming the problem) and gives the request's row its
own matcher (``tuneforge.generation.constrained``): the reply is JSON following the schema, or,
cut by ``max_tokens`` first, ``finish_reason: "length"``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tuneforge.errors import ConfigError
from tuneforge.generation import (
    GenerationSettings,
    JsonGrammar,
    JsonSchemaCompiler,
    Reply,
    Row,
    SchemaError,
    prompt_ids,
)
from tuneforge.rag.replies import REFUSAL
from tuneforge.serve.engine import (
    Engine,
    QueueFullError,
    ShuttingDownError,
    Ticket,
    UnknownModelError,
)
from tuneforge.serve.errors import ApiError, error_body
from tuneforge.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    SamplingFields,
    Source,
    Usage,
)

# OpenAI's defaults when a request leaves them out.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_COMPLETION_MAX_TOKENS = 16
# The status nginx made the convention for "the client closed the connection first"; it shows
# in /metrics only, as nobody is left to read it.
CLIENT_CLOSED_REQUEST = 499
GENERATION_FAILED = "generation failed; the server's log has the details"
# Guards the one-time creation of the app's JSON-schema compiler (``json_compiler``).
_COMPILER_LOCK = threading.Lock()


@dataclass
class Job:
    """What one endpoint call asks of the engine, and how to shape the answer.

    ``row`` is None when the answer is known without the model (``answer``): a ``rag`` request
    whose question no source is relevant to gets the house refusal, as ``rag ask`` does.
    """

    kind: str  # "chat" or "text"
    model: str
    row: Row | None
    stream: bool
    include_usage: bool
    sources: list[Source] | None = None
    answer: Reply | None = None


async def _replay(reply: Reply) -> AsyncIterator[tuple[str, object]]:
    """The events of a reply known in advance: its text in one piece, then done."""
    yield "text", reply.text
    yield "done", reply


async def _client_gone(request: Request) -> None:
    """Return once the client has closed the connection (call after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _ticket_events(ticket: Ticket) -> AsyncIterator[tuple[str, object]]:
    while True:
        event = await ticket.events.get()
        yield event
        if event[0] != "text":
            return


def resolve_adapter(engine: Engine, base_name: str, model: str) -> str | None:
    """The adapter a request's ``model`` names (None: the base); 404 if it names nothing."""
    if model == base_name:
        return None
    if model in engine.adapters:
        return model
    known = ", ".join([base_name, *engine.adapters])
    raise ApiError(
        404,
        f"the model {model!r} does not exist; available: {known} (GET /v1/models lists them)",
        code="model_not_found",
        param="model",
    )


def sampling_settings(
    body: SamplingFields, prompt_tokens: int, context_length: int, default_max_tokens: int
) -> GenerationSettings:
    """GenerationSettings for a request, refusing prompts that leave no room in the context.

    Raises:
        ApiError: 400 ``context_length_exceeded`` when prompt + max_tokens exceed the context.
    """
    room = context_length - prompt_tokens
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if room < 1 or (max_tokens is not None and max_tokens > room):
        asked = f" + max_tokens {max_tokens}" if max_tokens is not None else ""
        raise ApiError(
            400,
            f"this model's context is {context_length} tokens; the prompt has {prompt_tokens}"
            f"{asked}; shorten the messages or lower max_tokens",
            code="context_length_exceeded",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
        )
    try:
        return GenerationSettings(
            max_new_tokens=max_tokens or min(default_max_tokens, room),
            temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stop_list(),
        )
    except ConfigError as err:
        raise ApiError(400, str(err), code="invalid_request") from err


def json_compiler(state) -> JsonSchemaCompiler:
    """The app's JSON-schema compiler (``app.state.json_compiler``), made on first use."""
    with _COMPILER_LOCK:
        compiler = getattr(state, "json_compiler", None)
        if compiler is None:
            registry = state.engine.registry
            compiler = JsonSchemaCompiler.for_model(registry.model, registry.tokenizer)
            state.json_compiler = compiler
        return compiler


async def response_grammar(state, body: SamplingFields) -> JsonGrammar | None:
    """The grammar the request's ``response_format`` asks for (None: free text).

    Compiled in a worker thread (the first one converts the tokenizer, about 1 s), then cached.

    Raises:
        ApiError: 400 ``invalid_json_schema`` naming the problem when the schema cannot be
            compiled; 400 ``invalid_request`` when ``stop`` or ``rag`` come with it.
    """
    schema = body.constraint()
    if schema is None:
        return None
    if body.stop_list():
        raise ApiError(
            400,
            "stop cannot be combined with a JSON response_format: a stop string would cut the "
            "JSON; the reply ends when the JSON is complete",
            code="invalid_request",
            param="stop",
        )
    if getattr(body, "rag", None) is not None:
        raise ApiError(
            400,
            "rag cannot be combined with a JSON response_format: with no relevant source the "
            "answer is the refusal text, which is not JSON",
            code="invalid_request",
            param="rag",
        )
    compiler = await asyncio.to_thread(json_compiler, state)
    try:
        return await asyncio.to_thread(compiler.compile, schema)
    except SchemaError as err:
        raise ApiError(
            400,
            f"response_format.json_schema.schema: {err}",
            code="invalid_json_schema",
            param="response_format.json_schema.schema",
        ) from None


def _row(ids: list[int], settings: GenerationSettings, adapter, grammar: JsonGrammar | None):
    """The request's row; with a grammar, the row gets its own matcher."""
    processor = None if grammar is None else grammar.row_processor()
    return Row(prompt_ids=ids, settings=settings, adapter=adapter, logits_processor=processor)


def _submit(engine: Engine, job: Job):
    try:
        return engine.submit(job.row, stream=job.stream)
    except UnknownModelError:
        raise ApiError(
            404, f"the model {job.model!r} is being unloaded", "model_not_found"
        ) from None
    except QueueFullError:
        raise ApiError(
            429,
            "the server is busy (request queue full); retry shortly",
            code="queue_full",
            headers={"Retry-After": "1"},
        ) from None
    except ShuttingDownError:
        raise ApiError(503, "the server is shutting down", code="shutting_down") from None


def _usage(reply: Reply) -> Usage:
    return Usage(
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        total_tokens=reply.prompt_tokens + reply.completion_tokens,
    )


def _final_body(job: Job, request_id: str, created: int, reply: Reply) -> dict:
    if job.kind == "chat":
        return ChatCompletion(
            id=request_id,
            created=created,
            model=job.model,
            choices=[
                ChatChoice(
                    message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason
                )
            ],
            usage=_usage(reply),
            sources=job.sources,
        ).model_dump(exclude_none=False)
    return Completion(
        id=request_id,
        created=created,
        model=job.model,
        choices=[CompletionChoice(text=reply.text, finish_reason=reply.finish_reason)],
        usage=_usage(reply),
    ).model_dump()


def _chunk(job: Job, request_id: str, created: int, text: str | None, finish: str | None) -> dict:
    """One streamed chunk in the OpenAI format (``chat.completion.chunk`` or text_completion)."""
    if job.kind == "chat":
        delta = {} if text is None else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {
        "id": request_id,
        "object": obj,
        "created": created,
        "model": job.model,
        "choices": [choice],
    }


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def run_job(request: Request, job: Job):
    """Queue the job (or take its known answer); answer its JSON body, or a
    ``text/event-stream`` ending in ``[DONE]``."""
    state = request.app.state
    ticket = None if job.answer is not None else _submit(state.engine, job)
    submitted = ticket.submitted if ticket is not None else time.perf_counter()
    request_id = ("chatcmpl-" if job.kind == "chat" else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())

    def finished(reply: Reply) -> None:
        state.metrics.record_reply(
            job.model, reply.prompt_tokens, reply.completion_tokens,
            time.perf_counter() - submitted,
        )  # fmt: skip

    def stop_row() -> None:
        # No-op once finished; stops the row if the client went away or the handler is cancelled.
        if job.row is not None:
            job.row.cancelled.set()

    if not job.stream:
        if ticket is None:
            reply = job.answer
        else:
            reply = await _reply_unless_client_leaves(request, ticket, stop_row)
        finished(reply)
        return _final_body(job, request_id, created, reply)

    async def events() -> AsyncIterator[str]:
        source = _replay(job.answer) if ticket is None else _ticket_events(ticket)
        try:
            if job.kind == "chat":
                first = _chunk(job, request_id, created, "", None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                yield _sse(first)
            async for kind, value in source:
                if kind == "text":
                    yield _sse(_chunk(job, request_id, created, value, None))
                    continue
                if kind == "error":  # logged by the engine
                    state.metrics.record_unhandled_error()
                    yield _sse(error_body(500, GENERATION_FAILED, "server_error"))
                    break
                finished(value)
                last = _chunk(job, request_id, created, None, value.finish_reason)
                if job.sources is not None:
                    last["sources"] = [source.model_dump() for source in job.sources]
                yield _sse(last)
                if job.include_usage:
                    usage = _chunk(job, request_id, created, None, None)
                    usage["choices"], usage["usage"] = [], _usage(value).model_dump()
                    yield _sse(usage)
                break
            yield _sse("[DONE]")
        finally:
            stop_row()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _reply_unless_client_leaves(
    request: Request, ticket: Ticket, stop_row: Callable[[], None]
) -> Reply:
    """The ticket's reply; if the client closes the connection first, its row is stopped.

    Raises:
        ApiError: 499 when the client went away (nobody reads it; /metrics counts it), 500
            when the worker failed (logged there, counted here, its text not sent).
    """
    result = asyncio.ensure_future(ticket.result())
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        stop_row()  # no-op once finished; stops the row if the client left or we are cancelled
        if not result.done():
            result.cancel()
    if result not in done:
        raise ApiError(
            CLIENT_CLOSED_REQUEST, "the client closed the connection", code="client_closed"
        )
    error = result.exception()
    if error is not None:
        request.app.state.metrics.record_unhandled_error()
        raise ApiError(500, GENERATION_FAILED, code="server_error") from error
    return result.result()


def build_router() -> APIRouter:
    """The two generation endpoints (authentication is added by the app)."""
    router = APIRouter()

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        state = request.app.state
        adapter = resolve_adapter(state.engine, state.settings.model_name, body.model)
        grammar = await response_grammar(state, body)
        messages = [message.as_template_dict() for message in body.messages]
        sources = None
        if body.rag is not None:
            if state.retriever is None:
                raise ApiError(
                    400,
                    "this server has no retrieval store; start it with --store DIR to use 'rag'",
                    code="rag_unavailable",
                    param="rag",
                )
            trained = state.engine.registry.trained_prompt(adapter)
            messages, sources = await state.retriever(messages, body.rag, trained)
            if messages is None:  # no source is relevant: the refusal, without the model
                return await run_job(
                    request,
                    Job(
                        kind="chat",
                        model=body.model,
                        row=None,
                        stream=body.stream,
                        include_usage=bool(
                            body.stream_options and body.stream_options.include_usage
                        ),
                        sources=sources,
                        answer=Reply(
                            text=REFUSAL,
                            prompt_tokens=0,
                            completion_tokens=0,
                            seconds=0.0,
                            finish_reason="stop",
                        ),
                    ),
                )
        ids = await asyncio.to_thread(prompt_ids, state.engine.registry.tokenizer, messages)
        settings = sampling_settings(
            body, len(ids), state.context_length, state.settings.default_max_tokens
        )
        job = Job(
            kind="chat",
            model=body.model,
            row=_row(ids, settings, adapter, grammar),
            stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            sources=sources,
        )
        return await run_job(request, job)

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request):
        state = request.app.state
        adapter = resolve_adapter(state.engine, state.settings.model_name, body.model)
        grammar = await response_grammar(state, body)
        tokenizer = state.engine.registry.tokenizer
        ids = (await asyncio.to_thread(tokenizer, body.prompt_text()))["input_ids"]
        if not ids:
            raise ApiError(400, "prompt: empty prompt", code="invalid_request", param="prompt")
        settings = sampling_settings(
            body, len(ids), state.context_length, DEFAULT_COMPLETION_MAX_TOKENS
        )
        job = Job(
            kind="text",
            model=body.model,
            row=_row(ids, settings, adapter, grammar),
            stream=body.stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )
        return await run_job(request, job)

    return router
