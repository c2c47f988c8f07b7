"""The UI's routes, added to the server app at ``/ui``: pages, their assets and their API.

``mount_ui(app, settings)`` adds them to an app built by ``tuneforge.serve.create_app`` (the
commands ``tuneforge ui`` and ``tuneforge serve`` do; the server never imports the UI, which
sits above it like the CLI). The routes sit behind the same middleware as the rest of the
server (Host check, body limit, error guard) and behind its API key (``tuneforge.ui.access``). Every asset is a file of this package (``ui/static``):
plain HTML, CSS and JavaScript modules, nothing fetched from elsewhere, no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse

from tuneforge.serve.errors import ApiError
from tuneforge.serve.guards import is_loopback
from tuneforge.ui import compare_api, data_api, playground_api, train_api
from tuneforge.ui.access import (
    LoginRequired,
    login_page,
    require_key_for_api,
    require_key_for_page,
)
from tuneforge.ui.settings import UiSettings, UiState

STATIC = Path(__file__).parent / "static"
PAGES = ("data", "train", "playground", "compare")
# The pages run only this package's files; the compare report (its own route) is a frame.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'"
)
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


def _page_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_key_for_page)])
    assets = {path.name: path for path in STATIC.iterdir() if path.suffix in _TYPES}

    def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
        )

    @router.get("/ui")
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/train", status_code=307)

    @router.get("/ui/{page}")
    async def page(page: str) -> FileResponse:
        if page not in PAGES:
            raise ApiError(404, f"no page /ui/{page}; the pages are {', '.join(PAGES)}")
        return index()

    @router.get("/ui/static/{name}")
    async def asset(name: str) -> FileResponse:
        path = assets.get(name)  # only files of the package, by exact name
        if path is None:
            raise ApiError(404, f"no UI asset {name!r}")
        return FileResponse(path, media_type=_TYPES[path.suffix])

    return router


def mount_ui(app: FastAPI, settings: UiSettings, retriever=None) -> bool:
    """Add the UI at ``/ui`` to the server ``app`` (built by ``create_app``), if the server
    binds loopback: the UI reads data files and starts processes, so it is never offered
    beyond this machine.

    Args:
        app: the server app.
        settings: the runs folder, RAG stores and model the UI works with.
        retriever: the server's retriever, which searches ``settings.stores[0]`` (None: the
            first store opens when the playground picks it).

    Returns:
        whether the UI was mounted (False for a server bound beyond loopback).
    """
    if not is_loopback(app.state.settings.host):
        return False
    state = UiState(settings)
    stores = list(state.store_folders())
    if retriever is not None and stores:
        state.retrievers[stores[0]] = retriever
        state.active_store = stores[0]
    app.state.ui = state
    app.add_exception_handler(LoginRequired, login_page)
    app.include_router(_page_router())
    api = APIRouter(prefix="/ui/api", dependencies=[Depends(require_key_for_api)])
    for module in (data_api, train_api, playground_api, compare_api):
        api.include_router(module.build_router())

    @api.get("/info")
    async def info(request: Request) -> dict:
        return {
            "model": state.settings.model,
            "served_as": request.app.state.settings.model_name,
            "runs": str(state.runs),
            "stores": stores,
            "auth": request.app.state.settings.api_key is not None,
        }

    app.include_router(api)
    return True
