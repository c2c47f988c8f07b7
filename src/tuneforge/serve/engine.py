"""The engine: one worker thread drains a bounded queue of requests in batches.

HTTP handlers never touch the model. They ``submit`` a row and await its events; the worker takes
up to ``max_batch_size`` waiting rows, splits them into groups that can share a ``generate``
call (``generation.group_rows``) and decodes each group with ``AdapterRegistry.decode``.

A full queue refuses at once (``QueueFullError`` -> HTTP 429) instead of letting clients hang.
Adapters are the registry's: ``submit`` reserves a row's adapter (so an unload waits for it, and
an adapter being unloaded is refused), a finished row releases it; loads and unloads run in a
helper thread and take the registry's model lock, so the model never changes under a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.adapters import AdapterRegistry
from tuneforge.errors import AdapterError
from tuneforge.generation import Reply, Row, group_rows

log = logging.getLogger("tuneforge.serve")

_POLL_SECONDS = 0.02  # how often an idle worker looks for shutdown
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
    """Queue and worker thread in front of an ``AdapterRegistry``.

    Args:
        registry: the model and its adapters.
        max_batch_size: most rows decoded together (rows).
        max_queue: most requests waiting (requests); beyond it ``submit`` raises QueueFullError.
    """

    def __init__(
        self, registry: AdapterRegistry, max_batch_size: int = 8, max_queue: int = 64
    ) -> None:
        self.registry = registry
        self.max_batch_size = max_batch_size
        self._queue: queue.Queue[Ticket] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.batched_rows = 0
        self.generated_tokens = 0  # completion tokens decoded, for every row (tokens)
        self.cancelled_rows = 0  # rows whose client went away before their reply was sent

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
        return self.registry.names()

    @property
    def context_length(self) -> int:
        """The model's context window (tokens), from its config (2048 when it has none)."""
        config = getattr(self.registry.model, "config", None)
        return int(getattr(config, "max_position_embeddings", 2048))

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
        try:
            self.registry.reserve([row.adapter])
        except AdapterError:
            raise UnknownModelError(row.adapter) from None
        if self._stopping.is_set():
            self.registry.release([row.adapter])
            raise ShuttingDownError()
        ticket = Ticket(row=row, loop=asyncio.get_running_loop())
        if stream:
            row.on_text = lambda text: ticket.send("text", text)
        try:
            self._queue.put_nowait(ticket)
        except queue.Full:
            self.registry.release([row.adapter])
            raise QueueFullError() from None
        return ticket

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, folder: Path) -> None:
        """Load an adapter (after the batch decoding now, if any); it is usable on return.

        Raises:
            AdapterError: the name is taken, or the folder is not an adapter for this base.
        """
        await asyncio.to_thread(self.registry.load, name, folder)

    async def unload_adapter(self, name: str) -> None:
        """Refuse new requests for ``name``, wait for its requests in flight, then unload it.

        Raises:
            UnknownModelError: no adapter of that name is loaded (or it is being unloaded).
        """
        try:
            await asyncio.to_thread(self.registry.unload, name)
        except AdapterError:
            raise UnknownModelError(name) from None

    # ---- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stopping.is_set():
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

    def _run_batch(self, batch: list[Ticket]) -> None:
        waiting = batch
        batch = []
        for ticket in waiting:
            if ticket.row.cancelled.is_set():  # its client went away while it waited: skip it
                self.cancelled_rows += 1
                self.registry.release([ticket.row.adapter])
            else:
                batch.append(ticket)
        if not batch:
            return
        self.batches += 1
        self.batched_rows += len(batch)
        rows = [ticket.row for ticket in batch]
        for group in group_rows(rows):
            tickets = [batch[index] for index in group]
            members = [ticket.row for ticket in tickets]
            try:
                replies = self.registry.decode(members)
            except Exception as err:
                # Reported to each client as a 500 and logged; the worker keeps serving.
                log.exception("generation failed for a batch of %d rows", len(tickets))
                for ticket in tickets:
                    ticket.send("error", err)
            else:
                for ticket, reply in zip(tickets, replies, strict=True):
                    self.generated_tokens += reply.completion_tokens
                    # Checked before "done" is sent: a handler sets ``cancelled`` after it too.
                    if ticket.row.cancelled.is_set():
                        self.cancelled_rows += 1
                    ticket.send("done", reply)
            finally:
                self.registry.release([row.adapter for row in members])
