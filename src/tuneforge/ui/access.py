"""Who may use the UI: the server's API key, and requests that come from the UI's own pages.

- **The key.** When the server has an API key, every UI page, asset and API call needs it: as
  ``Authorization: Bearer KEY`` (scripts, and the UI's own ``fetch`` calls), or in the cookie
  ``tuneforge_ui_key`` that a browser sends with page loads. A page asked for without it is
  answered 401 with a small form that stores the key in that cookie (``SameSite=Strict``: other
  sites' pages never send it) and reloads; an API call without it is answered 401 in the
  server's JSON error shape.
- **Writes come from the UI.** A request that changes something (starts a training run, a
  comparison, an upload) must carry the header ``X-Tuneforge-UI: 1`` and no foreign
  ``Origin``. A page on another site cannot send a custom header without the browser asking
  this server first (CORS preflight), which it never allows, so a page the user visits cannot
  start processes on a loopback UI that has no key (cross-site request forgery).
"""

from __future__ import annotations

import secrets
from urllib.parse import unquote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse

from tuneforge.serve.errors import ApiError

COOKIE = "tuneforge_ui_key"
WRITE_HEADER = "X-Tuneforge-UI"


class LoginRequired(Exception):
    """A page was asked for without the API key: answered with ``login_page`` (401)."""


def _sent_keys(request: Request) -> list[bytes]:
    """The keys a request carries: the Bearer token and the cookie, as bytes (latin-1, the
    bytes sent; ``compare_digest`` refuses non-ASCII str)."""
    keys = []
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        keys.append(token.strip().encode("latin-1"))
    cookie = request.cookies.get(COOKIE)
    if cookie:
        keys.append(unquote(cookie).encode("latin-1", errors="replace"))
    return keys


def has_key(request: Request) -> bool:
    """Whether the request may use the UI: the server has no key, or the request carries it."""
    key = request.app.state.settings.api_key
    if key is None:
        return True
    expected = key.encode("ascii")
    return any(secrets.compare_digest(sent, expected) for sent in _sent_keys(request))


def require_key_for_page(request: Request) -> None:
    """Dependency of pages and assets: ``LoginRequired`` (401, the key form) without the key."""
    if not has_key(request):
        raise LoginRequired


def require_key_for_api(request: Request) -> None:
    """Dependency of UI API calls: 401 ``invalid_api_key`` without the key; writes (any method
    but GET/HEAD) must also come from the UI (``X-Tuneforge-UI: 1``, no foreign Origin)."""
    if not has_key(request):
        raise ApiError(
            401,
            "missing or wrong API key; send 'Authorization: Bearer <key>' with the key the "
            "server was started with (--api-key), or open /ui in a browser and enter it",
            code="invalid_api_key",
        )
    if request.method in ("GET", "HEAD"):
        return
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, f"requests from {origin[:100]!r} may not change anything here")
    if request.headers.get(WRITE_HEADER.lower()) != "1":
        raise ApiError(
            403,
            f"a UI request that changes something needs the header '{WRITE_HEADER}: 1' (the "
            "UI's pages send it; it keeps other sites' pages from starting runs here)",
        )


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tuneforge: API key needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 15px system-ui, sans-serif; display: grid; place-items: center; height: 90vh;
       margin: 0; background: #f6f7f9; color: #1d2330; }
form { background: #fff; padding: 24px 28px; border-radius: 10px; border: 1px solid #d8dce3;
       display: grid; gap: 10px; min-width: 320px; }
input, button { font: inherit; padding: 7px 10px; }
button { background: #2f5bea; color: #fff; border: 0; border-radius: 6px; cursor: pointer; }
.wrong { color: #b3261e; min-height: 1.2em; }
</style></head>
<body><form id="login">
<h1 style="margin:0;font-size:20px">tuneforge</h1>
<label for="key">This server needs its API key (<code>--api-key</code>).</label>
<input id="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Open</button>
<div class="wrong" id="wrong"></div>
</form>
<script>
const cookie = "__COOKIE__";
if (document.cookie.split("; ").some(c => c.startsWith(cookie + "="))) {
  document.getElementById("wrong").textContent = "That key was not accepted; try again.";
}
document.getElementById("login").addEventListener("submit", event => {
  event.preventDefault();
  const key = encodeURIComponent(document.getElementById("key").value);
  document.cookie = `${cookie}=${key}; path=/; SameSite=Strict`;
  location.reload();
});
</script></body></html>
""".replace("__COOKIE__", COOKIE)


def login_page(_request: Request, _error: LoginRequired) -> HTMLResponse:
    """The 401 answer to a page asked for without the key: a form that stores it."""
    return HTMLResponse(LOGIN_PAGE, status_code=401, headers={"Cache-Control": "no-store"})
