"""The playground's API: which model, adapters and RAG stores it can use.

The playground asks its questions through the server's own OpenAI-compatible routes
(``POST /v1/chat/completions`` with ``"stream": true`` and, for RAG, ``"rag": {...}``; adapters
from the runs folder are loaded with ``POST /v1/load_lora_adapter``), so what it shows is what
any client of the server gets. This module only lists the choices and switches the server's
RAG store when the UI was given several (``tuneforge ui --store A --store B``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tuneforge.serve.errors import ApiError
from tuneforge.ui.runs import run_entry, run_names
from tuneforge.ui.settings import UiState


def playground_choices(request: Request) -> dict[str, Any]:
    """The base model, the adapters loaded and loadable, the stores and the active one."""
    app_state = request.app.state
    state: UiState = app_state.ui
    loaded = app_state.engine.registry.folders()
    loaded_folders = {folder.resolve() for folder in loaded.values()}
    roots = app_state.settings.adapter_roots
    loadable = []
    for name in run_names(state):
        adapter = run_entry(state, name)["adapter"]
        if adapter is None or name in loaded or name == app_state.settings.model_name:
            continue
        resolved = (state.runs / name / "adapter").resolve()
        if resolved in loaded_folders or not any(resolved.is_relative_to(r) for r in roots):
            continue
        loadable.append({"name": name, "path": str(resolved)})
    return {
        "base": app_state.settings.model_name,
        "adapters": sorted(loaded),
        "run_adapters": loadable,
        "stores": sorted(state.store_folders()),
        "active_store": state.active_store,
        "rag": app_state.retriever is not None,
    }


def use_store(request: Request, name: str) -> None:
    """Make ``name`` the store the server's ``rag`` requests search (opened once, then kept).

    Raises:
        ApiError: 404 for a store the UI was not given.
    """
    from tuneforge.serve.retrieval import build_retriever

    state: UiState = request.app.state.ui
    folders = state.store_folders()
    if name not in folders:
        raise ApiError(404, f"no store {name!r}; the UI was given {sorted(folders)}", "no_store")
    with state.lock:
        if name not in state.retrievers:
            state.retrievers[name] = build_retriever(folders[name])
        request.app.state.retriever = state.retrievers[name]
        state.active_store = name


def build_router() -> APIRouter:
    """The routes under ``/ui/api`` for the playground (auth is added by the caller)."""
    router = APIRouter()

    @router.get("/playground")
    async def choices(request: Request) -> dict:
        return playground_choices(request)

    @router.post("/playground/store")
    def store(body: dict, request: Request) -> dict:
        use_store(request, str(body.get("name") or ""))
        return playground_choices(request)

    return router
