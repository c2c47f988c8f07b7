"""The engine: one worker thread decodes a bounded queue of requests, continuously batched.

HTTP handlers never touch the model. They ``submit`` a row and await its events. The worker
keeps one running batch (``AdapterRegistry.new_decoder``): between two decode steps, waiting
rows join it (up to ``max_batch_size`` rows decoding at once) and finished rows leave it, their
replies sent at once; a request never waits for a batch that started before it to end. Rows the
fast path cannot decode (a model family it does not cover, a DoRA adapter) are decoded the old
way: split into groups that can share a ``generate`` call (``generation.group_rows``), each
decoded to the end by ``AdapterRegistry.decode`` between two steps.

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
from tuneforge.generation import BatchDecoder, Reply, Row, group_rows

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
        self.batches = 0  # admissions: times waiting rows were taken in (with at least one row)
        self.batched_rows = 0  # rows taken in
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
        decoder = self.registry.new_decoder()
        running: dict[int, Ticket] = {}  # id(row) -> ticket, for rows in ``decoder``
        while True:
            if running:
                waiting = self._take(self.max_batch_size - len(running), wait=False)
            else:
                waiting = self._take(self.max_batch_size, wait=True)
                if waiting is None:
                    return
            admitted = self._admit(waiting or [])
            if admitted and decoder is None:
                self._run_batch(admitted)
            elif admitted:
                decoder = self._join(decoder, admitted, running)
            if running:
                decoder = self._step(decoder, running)

    def _take(self, room: int, wait: bool) -> list[Ticket] | None:
        """Up to ``room`` waiting tickets. With ``wait``, block for the first one (polling for
        shutdown: None once stopping with nothing queued), then gather the burst that came with
        it for ``BATCH_WINDOW_SECONDS``."""
        batch: list[Ticket] = []
        if wait:
            while not batch:
                try:
                    batch.append(self._queue.get(timeout=_POLL_SECONDS))
                except queue.Empty:
                    if self._stopping.is_set():
                        return None
        window_end = time.perf_counter() + (BATCH_WINDOW_SECONDS if wait else 0.0)
        while len(batch) < room:
            try:
                pause = max(window_end - time.perf_counter(), 0.0)
                batch.append(self._queue.get(timeout=pause) if pause else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _admit(self, waiting: list[Ticket]) -> list[Ticket]:
        """Drop the tickets whose client went away while they waited; count the rest."""
        admitted = []
        for ticket in waiting:
            if ticket.row.cancelled.is_set():
                self.cancelled_rows += 1
                self.registry.release([ticket.row.adapter])
            else:
                admitted.append(ticket)
        if admitted:
            self.batches += 1
            self.batched_rows += len(admitted)
        return admitted

    def _join(
        self, decoder: BatchDecoder, tickets: list[Ticket], running: dict[int, Ticket]
    ) -> BatchDecoder:
        """Add ``tickets`` to the running batch; rows it cannot take are decoded to the end now."""
        for ticket in tickets:
            running[id(ticket.row)] = ticket
        try:
            finished, refused = self.registry.join(decoder, [ticket.row for ticket in tickets])
        except Exception as err:
            return self._fail(err, running)
        if refused:
            self._run_batch([running.pop(id(row)) for row in refused])
        self._finish(finished, running)
        return decoder

    def _step(self, decoder: BatchDecoder, running: dict[int, Ticket]) -> BatchDecoder:
        try:
            finished = self.registry.step(decoder)
        except Exception as err:
            return self._fail(err, running)
        self._finish(finished, running)
        return decoder

    def _finish(self, finished: list, running: dict[int, Ticket]) -> None:
        """Send each finished row's reply and release its adapter."""
        for row, reply in finished:
            ticket = running.pop(id(row))
            self.generated_tokens += reply.completion_tokens
            # Checked before "done" is sent: a handler sets ``cancelled`` after it too.
            if row.cancelled.is_set():
                self.cancelled_rows += 1
            ticket.send("done", reply)
            self.registry.release([row.adapter])

    def _fail(self, err: Exception, running: dict[int, Ticket]) -> BatchDecoder | None:
        """A decode failed: every running row gets the error (a 500), the batch starts anew."""
        # Reported to each client as a 500 and logged; the worker keeps serving.
        log.exception("generation failed for a batch of %d rows", len(running))
        for ticket in running.values():
            ticket.send("error", err)
            self.registry.release([ticket.row.adapter])
        running.clear()
        return self.registry.new_decoder()

    def _run_batch(self, batch: list[Ticket]) -> None:
        """Decode ``batch`` to the end on the plain path, one ``group_rows`` group at a time."""
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
