"""Progress of long work: a live bar on a terminal, a plain line now and then in a log.

tqdm redraws its bar with ``\\r`` many times a second; in a log file or a CI console that is a
flood of half-lines. ``Progress`` draws tqdm's bar only when its stream is a terminal, and
otherwise writes one complete line every ``interval_s`` seconds (the first and the last update
always get one), e.g. ``train: 20/60 steps (33%) · loss=0.0845 · 3.1 steps/s · 12 s, ~25 s left``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

LOG_INTERVAL_S = 30.0


class Progress:
    """Count units of work done.

    Args:
        desc: what is counted, shown first (``train``, ``evaluating``).
        total: how many units there are (None: unknown).
        unit: the units' name (``step``, ``item``, ``chunk``).
        initial: units already done (a resumed run).
        enabled: False shows nothing.
        stream: where to write (default ``sys.stderr``).
        interval_s: seconds between lines when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        *,
        initial: int = 0,
        enabled: bool = True,
        stream=None,
        interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.done = initial
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self._initial = initial
        self._start = time.perf_counter()
        self._last_line: float | None = None
        self._last_line_done = initial
        self._postfix: dict[str, object] = {}
        self._bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                desc=desc, total=total, initial=initial, unit=unit, file=self.stream,
                dynamic_ncols=True,
            )  # fmt: skip

    def update(self, n: int = 1, postfix: Mapping[str, object] | None = None) -> None:
        """``n`` more units are done; ``postfix`` replaces the figures shown after the count."""
        self.done += n
        if postfix is not None:
            self._postfix = dict(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self._last_line is None or finished or now - self._last_line >= self.interval_s:
            self._write(now)

    def set_postfix(self, postfix: Mapping[str, object]) -> None:
        """Replace the figures shown after the count, without counting anything."""
        self._postfix = dict(postfix)
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def _write(self, now: float | None = None) -> None:
        self._last_line = time.perf_counter() if now is None else now
        self._last_line_done = self.done
        print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The progress as one line of text."""
        elapsed = (now if now is not None else time.perf_counter()) - self._start
        parts = [f"{self.desc}: {self.done:,}" + (f"/{self.total:,}" if self.total else "")]
        parts[0] += f" {self.unit}s"
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts += [f"{key}={value}" for key, value in self._postfix.items()]
        counted = self.done - self._initial
        rate = counted / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:.3g} {self.unit}s/s")
        timing = f"{elapsed:.0f} s"
        if self.total and counted > 0 and self.done < self.total:
            timing += f", ~{(self.total - self.done) / rate:.0f} s left"
        parts.append(timing)
        return " · ".join(parts)

    def close(self) -> None:
        """Finish the bar (a terminal) or write the last line if one is due."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.done != self._last_line_done:
            self._write()  # the final count, unless the last line already showed it

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
