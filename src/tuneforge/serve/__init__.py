"""Serving: an OpenAI-compatible HTTP server with hot-swappable LoRA adapters and RAG on request.

Layout: ``app`` (routes, auth, lifespan), ``completions`` (chat/text endpoints, SSE streaming),
``schemas`` (OpenAI-shaped bodies), ``errors`` (OpenAI-style error bodies), ``engine`` (bounded
queue + the worker thread that batches requests onto an ``adapters.AdapterRegistry``, which
decodes with ``generation.generate_rows``), ``metrics`` (Prometheus text), ``config``
(ServeSettings, adapter roots), ``guards`` (Host check, body limit, unhandled errors),
``retrieval`` (RAG on request), ``launch`` (model + adapters + store -> app: the start-up of
``tuneforge serve`` and ``tuneforge ui``).
"""

from tuneforge.serve.app import create_app, serve_in_thread
from tuneforge.serve.config import ServeSettings, check_adapter_path
from tuneforge.serve.engine import Engine
from tuneforge.serve.launch import Server, build_server

__all__ = [
    "Engine",
    "ServeSettings",
    "Server",
    "build_server",
    "check_adapter_path",
    "create_app",
    "serve_in_thread",
]
