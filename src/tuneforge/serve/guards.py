"""ASGI middleware around the app: checks made before any route runs, and the last line of
defence after one failed. Each answers in the OpenAI error shape (``errors.error_body``).

- ``HostCheck``: 400 ``host_not_allowed`` unless the Host header names this server
  (``HostRule``). A web page whose domain an attacker re-points at 127.0.0.1 (DNS rebinding)
  reaches a loopback server from the user's browser, but its requests carry the attacker's
  name in Host, so they stop here.
- ``BodyLimit``: 413 ``request_too_large`` for a body over the limit: at once when
  Content-Length says so (the body is never read), else as soon as the bytes received pass it.
- ``UnhandledErrors``: an exception no handler answered becomes a 500 that says nothing about
  it (its text may name server files); it is logged with its traceback and counted.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from tuneforge.serve.errors import error_body

log = logging.getLogger("tuneforge.serve")

# The names a loopback server is reached by; 127.0.0.1 and ::1 are what localhost resolves to.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Bind addresses meaning "every interface".
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
# A DNS name (letters, digits, hyphens, dots) or a dotted IPv4 address.
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def host_name(header: str | None) -> str | None:
    """The host of a Host header value, lower case, without port; None when it is malformed.

    ``Example.COM:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``; ``localhost.`` ->
    ``localhost`` (the same name with the root dot).
    """
    if header is None:
        return None
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal: [address]:port
        name, bracket, port = header[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
        return name
    name, colon, port = header.partition(":")
    if colon and not port.isdigit():
        return None
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostRule:
    """Which Host headers a server answers.

    Attributes:
        names: host names and addresses (lower case, no port) it answers to.
        any_ip_address: also any IP literal (a rebinding page cannot send one: its Host is the
            attacker's domain name); true for servers bound beyond loopback, which clients may
            reach by an address the server does not know (NAT, several interfaces).
        any_host: answer every Host (``--allowed-host '*'``).
    """

    names: frozenset[str]
    any_ip_address: bool = False
    any_host: bool = False

    @classmethod
    def for_bind(cls, bind_host: str, allowed_hosts: Iterable[str] = ()) -> HostRule:
        """The rule for a server bound to ``bind_host``, plus the ``--allowed-host`` names.

        Loopback binds answer ``localhost``, ``127.0.0.1``, ``::1`` and the bind address; other
        binds also answer the machine's host name, the bind address and any IP literal.
        ``"*"`` among ``allowed_hosts`` answers everything.
        """
        extra = {name.strip().lower().removesuffix(".") for name in allowed_hosts}
        if "*" in extra:
            return cls(frozenset(), any_host=True)
        bind = bind_host.strip().lower().strip("[]")
        names = set(LOOPBACK_NAMES) | extra
        if bind not in WILDCARD_BINDS:
            names.add(bind)
        if is_loopback(bind):
            return cls(frozenset(names))
        names.add(socket.gethostname().lower())  # no DNS lookup: start-up never waits on one
        return cls(frozenset(names), any_ip_address=True)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header value (None: no header) is answered."""
        if self.any_host:
            return True
        name = host_name(header)
        if name is None:
            return False
        return name in self.names or (self.any_ip_address and _is_ip_address(name))


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class HostCheck:
    """ASGI middleware: 400 ``host_not_allowed`` for a Host header ``rule`` does not allow."""

    def __init__(self, app, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.rule.allows(_header(scope, b"host")):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        shown = "no Host header" if host is None else f"the Host header {host[:100]!r}"
        message = (
            f"{shown} does not name this server; it answers only to the names it is bound to "
            "(a guard against DNS rebinding). Use the address you started it on, or start it "
            "with --allowed-host NAME for each name clients reach it by"
        )
        response = JSONResponse(error_body(400, message, "host_not_allowed"), status_code=400)
        await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 ``request_too_large`` for a request body over ``max_bytes``.

    The body is read here (it is small: at most ``max_bytes``) and handed on whole; the
    app's later ``receive`` calls reach the server's, so disconnects are still seen.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)  # never read: it may be gigabytes
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-upload: nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        message = (
            f"the request body is larger than this server's limit of {self.max_bytes} bytes; "
            "send a shorter prompt, or start the server with a larger --max-body-bytes"
        )
        # "Connection: close": the rest of the body is never read, so the connection cannot
        # carry another request.
        response = JSONResponse(
            error_body(413, message, "request_too_large"),
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class UnhandledErrors:
    """ASGI middleware: an exception no handler answered becomes a logged, counted 500.

    Args:
        on_error: called once per such exception (the metrics counter).
    """

    def __init__(self, app, on_error: Callable[[], None]) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            # The outermost handler: the failure is logged with its traceback and counted, not
            # hidden; the client gets the OpenAI shape without the exception's text.
            log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            self.on_error()
            if started:
                raise  # mid-response: all that is left is to close the connection (uvicorn)
            message = "internal server error; the server's log has the details"
            response = JSONResponse(error_body(500, message, "server_error"), status_code=500)
            await response(scope, receive, send)
