"""The engine: one worker thread owns the model and drains a bounded queue in batches.

HTTP handlers never touch the model. They ``submit`` a row and await its events; the worker takes
up to ``max_batch_size`` waiting rows, splits them into groups that can share a ``generate``
call (``decoding.group_rows``) and decodes each group as one batch. Adapter loads and unloads
run on the same thread between batches, so the model never changes under a running batch.

A full queue refuses at once (``QueueFullError`` -> HTTP 429) instead of letting clients hang.
Unloading an adapter first stops new requests for it, then waits until every request already
submitted for it has finished, then detaches it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.generation import Reply
from tuneforge.serve.decoding import Row, group_rows
from tuneforge.serve.model_host import ModelHost

log = logging.getLogger("tuneforge.serve")

_POLL_SECONDS = 0.02  # how often an idle worker looks for adapter loads/unloads and shutdown
# After the first request of a batch arrives, how long to wait for others sent at the same
# moment (seconds): tiny next to a decode, and it lets a burst of clients share one batch.
BATCH_WINDOW_SECONDS = 0.01


class QueueFullError(Exception):
    """The request queue is full; the client should retry later (HTTP 429)."""


class ShuttingDownError(Exception):
    """The server is stopping and takes no new requests (HTTP 503)."""


class UnknownModelError(Exception):
    """The request names neither the base model nor a loaded adapter (HTTP 404)."""


@dataclass
class Ticket:
    """A submitted request: its row and the channel its events come back on.

    Events, in order: ``("text", str)`` pieces while streaming, then ``("done", Reply)`` or
    ``("error", Exception)``.
    """

    row: Row
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)

    def send(self, kind: str, value: object) -> None:
        """Hand an event to the request's event loop (safe from the worker thread)."""
        # The loop is closed only when the server stopped without waiting for this request.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    async def result(self) -> Reply:
        """Wait for the reply, skipping streamed text (for non-streaming requests)."""
        while True:
            kind, value = await self.events.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value


class Engine:
    """Queue, worker thread and adapter bookkeeping around a ``ModelHost``.

    Args:
        host: the model and its adapters; only the worker thread uses it once started.
        max_batch_size: most rows decoded together (rows).
        max_queue: most requests waiting (requests); beyond it ``submit`` raises QueueFullError.
    """

    def __init__(self, host: ModelHost, max_batch_size: int = 8, max_queue: int = 64) -> None:
        self.host = host
        self.max_batch_size = max_batch_size
        self._queue: queue.Queue[Ticket] = queue.Queue(maxsize=max_queue)
        self._controls: queue.Queue[tuple[Callable[[], object], concurrent.futures.Future]] = (
            queue.Queue()
        )
        self._adapters = list(host.names())  # what requests may name (read on the event loop)
        self._draining: set[str] = set()
        self._inflight: collections.Counter[str | None] = collections.Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.batched_rows = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="tuneforge-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Refuse new requests, finish the queued ones, then stop the worker (seconds)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ---- requests --------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        """Adapters requests may use now (loaded and not being unloaded)."""
        return [name for name in self._adapters if name not in self._draining]

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the worker (requests)."""
        return self._queue.qsize()

    def submit(self, row: Row, stream: bool = False) -> Ticket:
        """Queue ``row``; call on the event loop. With ``stream``, text pieces come as events.

        Raises:
            UnknownModelError: ``row.adapter`` is not loaded (or is being unloaded).
            ShuttingDownError: the server is stopping.
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        if row.adapter is not None and row.adapter not in self.adapters:
            raise UnknownModelError(row.adapter)
        if self._stopping.is_set():
            raise ShuttingDownError()
        ticket = Ticket(row=row, loop=asyncio.get_running_loop())
        if stream:
            row.on_text = lambda text: ticket.send("text", text)
        with self._lock:
            self._inflight[row.adapter] += 1
        try:
            self._queue.put_nowait(ticket)
        except queue.Full:
            self._finished(row.adapter)
            raise QueueFullError() from None
        return ticket

    def _finished(self, adapter: str | None) -> None:
        with self._lock:
            self._inflight[adapter] -= 1

    def inflight(self, adapter: str | None) -> int:
        """Requests submitted for ``adapter`` (None: the base) that have not finished."""
        with self._lock:
            return self._inflight[adapter]

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, folder: Path) -> None:
        """Load an adapter on the worker thread between batches; it is usable on return."""
        await self._control(lambda: self.host.load(name, folder))
        self._adapters.append(name)

    async def unload_adapter(self, name: str, poll_seconds: float = 0.01) -> None:
        """Stop new requests for ``name``, wait for its requests in flight, then unload it.

        Raises:
            UnknownModelError: no adapter of that name is loaded.
        """
        if name not in self.adapters:
            raise UnknownModelError(name)
        self._draining.add(name)
        try:
            while self.inflight(name) > 0:
                await asyncio.sleep(poll_seconds)
            await self._control(lambda: self.host.unload(name))
            self._adapters.remove(name)
        finally:
            self._draining.discard(name)

    async def _control(self, action: Callable[[], object]) -> object:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._controls.put((action, future))
        return await asyncio.wrap_future(future)

    # ---- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            self._run_controls()
            try:
                first = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stopping.is_set():
                    self._run_controls()
                    return
                continue
            batch = [first]
            window_end = time.perf_counter() + BATCH_WINDOW_SECONDS
            while len(batch) < self.max_batch_size:
                try:
                    wait = max(window_end - time.perf_counter(), 0.0)
                    batch.append(
                        self._queue.get(timeout=wait) if wait else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            self._run_batch(batch)

    def _run_controls(self) -> None:
        while True:
            try:
                action, future = self._controls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(action())
            except Exception as err:  # handed to the awaiting handler, which reports it
                future.set_exception(err)

    def _run_batch(self, batch: list[Ticket]) -> None:
        self.batches += 1
        self.batched_rows += len(batch)
        rows = [ticket.row for ticket in batch]
        for group in group_rows(rows):
            tickets = [batch[index] for index in group]
            try:
                replies = self.host.generate([ticket.row for ticket in tickets])
            except Exception as err:
                # Reported to each client as a 500 and logged; the worker keeps serving.
                log.exception("generation failed for a batch of %d rows", len(tickets))
                for ticket in tickets:
                    ticket.send("error", err)
            else:
                for ticket, reply in zip(tickets, replies, strict=True):
                    ticket.send("done", reply)
            finally:
                for ticket in tickets:
                    self._finished(ticket.row.adapter)
