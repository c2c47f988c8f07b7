"""Stopping a run from outside without losing it: SIGINT (Ctrl-C) and SIGTERM (a scheduler,
``kill``, torchrun shutting its workers down) become a request that ``fit`` honours at the next
step boundary, after writing a checkpoint.

Python's default for SIGINT raises ``KeyboardInterrupt`` wherever the process happens to be (in
an optimizer step, halfway through a collective the other ranks then wait on forever), and the
default for SIGTERM ends the process on the spot; either way the steps since the last checkpoint
are lost. While ``StopSignals`` is active the handler only records the signal.

Under torchrun every rank catches the signals (a rank that died on one would leave the others
hanging in a collective); ``fit`` all-reduces the request at each step boundary, so every rank
stops after the same step and they write the checkpoint together.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """A signal stopped the run at a step boundary, after a checkpoint was written.

    Not a ``TuneforgeError``: nothing was wrong with the input. The CLI prints the message and
    exits with ``exit_code``, the shell's convention for death by that signal (130 for SIGINT,
    143 for SIGTERM).

    Attributes:
        signal_number: the signal received.
        step: the last optimizer step completed (and checkpointed).
        checkpoint: the checkpoint folder to resume from.
    """

    def __init__(self, message: str, signal_number: int, step: int, checkpoint: Path) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.step = step
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return 128 + self.signal_number


class StopSignals:
    """While active (``with StopSignals() as signals``), SIGINT and SIGTERM set ``received``
    instead of stopping the process; the previous handlers come back on exit.

    Handlers can only be installed from the main thread: called from another thread this does
    nothing and the process keeps its own handling. A repeated signal is ignored (torchrun
    forwards the terminal's Ctrl-C to workers that already received it); Ctrl-\\ (SIGQUIT) or
    SIGKILL still stop at once, without a checkpoint.

    Attributes:
        received: the first signal number received, or None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *_exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _record(self, number: int, _frame) -> None:
        if self.received is not None:
            return
        self.received = number
        # os.write, not print: a handler may run while the main thread is inside a print.
        os.write(
            2,
            f"\ntuneforge: {signal.Signals(number).name} received: stopping after this step "
            "with a checkpoint (Ctrl-\\ or kill -9 stops at once, without one)\n".encode(),
        )
