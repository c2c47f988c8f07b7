"""The FastAPI app: OpenAI-compatible routes, adapter hot swap, health, metrics, auth.

``create_app(engine, settings)`` builds it around an ``Engine`` (a queue and a worker over the
model's ``AdapterRegistry``); the CLI runs it with uvicorn, tests run the same app on a loopback
port. The engine's worker starts with the app and, on shutdown (uvicorn handles SIGTERM: it stops
accepting connections and waits for open requests), finishes what is queued before it stops.

Every request passes, outermost first: the request counter (metrics), the unhandled-error
guard, the Host check, the body limit (``serve.guards``); then the route, behind the API key.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from tuneforge.errors import AdapterError
from tuneforge.serve.completions import build_router
from tuneforge.serve.config import (
    AdapterPathError,
    ServeSettings,
    check_adapter_path,
)
from tuneforge.serve.engine import Engine, UnknownModelError
from tuneforge.serve.errors import ApiError, install_error_handlers
from tuneforge.serve.guards import BodyLimit, HostCheck, HostRule, UnhandledErrors
from tuneforge.serve.metrics import Metrics, RequestCounter
from tuneforge.serve.schemas import (
    LoadAdapterRequest,
    ModelCard,
    ModelList,
    RagOptions,
    Source,
    UnloadAdapterRequest,
)

# (messages, options) -> (messages with retrieved sources, the sources); see serve.retrieval.
Retriever = Callable[[list[dict], RagOptions], Awaitable[tuple[list[dict], list[Source]]]]

# Every path the app serves: the request counter labels others as "other" (bounded series).
PATHS = {
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
}


def _require_api_key(request: Request) -> None:
    """401 unless the request carries ``Authorization: Bearer <key>`` (when a key is set)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # Compared as bytes: header values arrive decoded as latin-1 (so this gives back the bytes
    # sent), and compare_digest refuses non-ASCII str. The key is ASCII (ServeSettings).
    sent = token.strip().encode("latin-1")
    if scheme.lower() != "bearer" or not secrets.compare_digest(sent, key.encode("ascii")):
        raise ApiError(
            401,
            "missing or wrong API key; send the header 'Authorization: Bearer <key>' with the key "
            "the server was started with (--api-key)",
            code="invalid_api_key",
        )


def _admin_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models(request: Request) -> ModelList:
        state = request.app.state
        base = state.settings.model_name
        cards = [ModelCard(id=base, created=state.started, root=base)]
        cards += [
            ModelCard(id=name, created=state.started, root=str(folder), parent=base)
            for name, folder in state.engine.registry.folders().items()
        ]
        return ModelList(data=cards)

    @router.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadAdapterRequest, request: Request) -> dict:
        state = request.app.state
        if not state.settings.adapter_roots:
            raise ApiError(
                403,
                "loading adapters over HTTP is off on this server; the operator turns it on by "
                "starting it with --adapter-root DIR (adapters inside DIR may then be loaded)",
                code="adapter_loading_disabled",
                param="lora_path",
            )
        if body.lora_name == state.settings.model_name or body.lora_name in state.engine.adapters:
            raise ApiError(
                400,
                f"lora_name {body.lora_name!r} is already in use; unload it first or pick another",
                code="adapter_exists",
                param="lora_name",
            )
        try:
            folder = check_adapter_path(body.lora_path, state.settings.adapter_roots)
            await state.engine.load_adapter(body.lora_name, folder)
        except AdapterPathError as err:
            raise ApiError(
                403, str(err), code="adapter_path_not_allowed", param="lora_path"
            ) from err
        except AdapterError as err:
            raise ApiError(400, str(err), code="invalid_adapter", param="lora_path") from err
        return {"status": "ok", "lora_name": body.lora_name, "lora_path": str(folder)}

    @router.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadAdapterRequest, request: Request) -> dict:
        try:
            await request.app.state.engine.unload_adapter(body.lora_name)
        except UnknownModelError:
            raise ApiError(
                404,
                f"no adapter named {body.lora_name!r} is loaded (GET /v1/models lists them)",
                code="model_not_found",
                param="lora_name",
            ) from None
        return {"status": "ok", "lora_name": body.lora_name}

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        state = request.app.state
        engine: Engine = state.engine
        text = state.metrics.render(engine)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return router


def create_app(
    engine: Engine, settings: ServeSettings, retriever: Retriever | None = None
) -> FastAPI:
    """The server app around ``engine``.

    Args:
        engine: queues and decodes requests; started and stopped with the app (lifespan).
        settings: names, limits, API key, adapter roots, Host names, body limit.
        retriever: enables ``"rag"`` in chat requests (built from ``--store``); None refuses it.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()  # finishes queued requests first

    # No /docs or /openapi.json: every path but /health sits behind the API key.
    app = FastAPI(
        title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.retriever = retriever
    app.state.started = int(time.time())
    app.state.context_length = settings.context_length or engine.context_length
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queue_depth": engine.queue_depth, "adapters": engine.adapters}

    protected = [Depends(_require_api_key)]
    app.include_router(_admin_router(), dependencies=protected)
    app.include_router(build_router(), dependencies=protected)
    # Added innermost first: the counter, outermost, sees every answer, the guards' included.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostCheck, rule=HostRule.for_bind(settings.host, settings.allowed_hosts))
    app.add_middleware(UnhandledErrors, on_error=app.state.metrics.record_unhandled_error)
    app.add_middleware(RequestCounter, metrics=app.state.metrics, known_paths=PATHS)
    return app


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, port: int = 0, timeout: float = 60):
    """Run ``app`` with uvicorn in a background thread on its ``settings.host``; yield its base
    URL, stop on exit.

    For tests, benchmarks and notebooks; ``tuneforge serve`` runs uvicorn in the main thread
    (which also handles SIGTERM). ``port=0`` picks a free port.

    Raises:
        RuntimeError: the server did not start within ``timeout`` seconds.
    """
    import socket
    import threading

    import uvicorn

    host = app.state.settings.host
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="tuneforge-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
