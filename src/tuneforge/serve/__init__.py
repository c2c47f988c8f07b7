"""Serving: an OpenAI-compatible HTTP server with hot-swappable LoRA adapters and RAG on request.

Layout: ``app`` (routes, auth, lifespan), ``completions`` (chat/text endpoints, SSE streaming),
``schemas`` (OpenAI-shaped bodies), ``errors`` (OpenAI-style error bodies), ``engine`` (bounded
queue + the worker thread that batches requests onto an ``adapters.AdapterRegistry``, which
decodes with ``generation.generate_rows``), ``metrics`` (Prometheus text), ``config``
(ServeSettings, adapter roots), ``guards`` (Host check, body limit, unhandled errors),
``retrieval`` (RAG on request).
"""

from tuneforge.serve.app import create_app, serve_in_thread
from tuneforge.serve.config import ServeSettings, check_adapter_path
from tuneforge.serve.engine import Engine

__all__ = [
    "Engine",
    "ServeSettings",
    "check_adapter_path",
    "create_app",
    "serve_in_thread",
]
