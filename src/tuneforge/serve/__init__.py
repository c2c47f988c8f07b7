"""Serving: an OpenAI-compatible HTTP server with hot-swappable LoRA adapters and RAG on request.

Layout: ``app`` (routes, auth, lifespan), ``completions`` (chat/text endpoints, SSE streaming),
``schemas`` (OpenAI-shaped bodies), ``errors`` (OpenAI-style error bodies), ``engine`` (bounded
queue + the one worker thread that owns the model), ``decoding`` (batched generation with
per-row adapters, limits, stops and streaming), ``model_host`` (the base and its adapters),
``metrics`` (Prometheus text), ``config`` (ServeSettings).
"""

from tuneforge.serve.app import create_app, serve_in_thread
from tuneforge.serve.config import ServeSettings, default_adapter_roots
from tuneforge.serve.engine import Engine
from tuneforge.serve.model_host import ModelHost, check_adapter_path

__all__ = [
    "Engine",
    "ModelHost",
    "ServeSettings",
    "check_adapter_path",
    "create_app",
    "default_adapter_roots",
    "serve_in_thread",
]
