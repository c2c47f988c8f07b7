"""Prometheus text-format metrics, written by hand (a few lines; no client library needed).

Exposed at ``GET /metrics``: requests by path and status, prompt and completion tokens,
request latency as a histogram (seconds), unhandled errors, queue depth, loaded adapters,
batches run, tokens generated, requests cancelled because their client went away.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.serve.engine import Engine

# Latency histogram upper bounds (seconds); CPU replies take seconds, GPU ones milliseconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _labels(**labels: str) -> str:
    """``{key="value",...}`` with backslash, newline and quote escaped as the format requires."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


class Metrics:
    """Counters updated by the request handlers; ``render`` gives the text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (path, status)
        self.tokens: Counter[tuple[str, str]] = Counter()  # (model, "prompt"/"completion")
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.unhandled_errors = 0

    def record_unhandled_error(self) -> None:
        """Count one failure the server did not expect (answered 500, or a stream cut short)."""
        with self._lock:
            self.unhandled_errors += 1

    def record_request(self, path: str, status: int) -> None:
        """Count one answered request (any status)."""
        with self._lock:
            self.requests[(path, str(status))] += 1

    def record_reply(self, model: str, prompt_tokens: int, completion_tokens: int, seconds: float):
        """Count a finished generation: tokens and end-to-end latency (seconds)."""
        with self._lock:
            self.tokens[(model, "prompt")] += prompt_tokens
            self.tokens[(model, "completion")] += completion_tokens
            self.latency_sum += seconds
            self.latency_count += 1
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.latency_buckets[index] += 1

    def render(self, engine: Engine) -> str:
        """The Prometheus text exposition (version 0.0.4), with ``engine``'s gauges and counters."""
        lines = [
            "# HELP tuneforge_requests_total HTTP requests answered, by path and status.",
            "# TYPE tuneforge_requests_total counter",
        ]
        with self._lock:
            for (path, status), count in sorted(self.requests.items()):
                labels = _labels(path=path, status=status)
                lines.append(f"tuneforge_requests_total{labels} {count}")
            lines += [
                "# HELP tuneforge_tokens_total Tokens processed, by model and kind (prompt, completion).",
                "# TYPE tuneforge_tokens_total counter",
            ]
            for (model, kind), count in sorted(self.tokens.items()):
                lines.append(f"tuneforge_tokens_total{_labels(model=model, kind=kind)} {count}")
            lines += [
                "# HELP tuneforge_request_latency_seconds Time from submit to the last token.",
                "# TYPE tuneforge_request_latency_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=True):
                lines.append(f'tuneforge_request_latency_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'tuneforge_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"tuneforge_request_latency_seconds_sum {self.latency_sum:.6f}",
                f"tuneforge_request_latency_seconds_count {self.latency_count}",
                "# HELP tuneforge_unhandled_errors_total Failures the server did not expect "
                "(answered 500 or ending a stream early; logged with a traceback).",
                "# TYPE tuneforge_unhandled_errors_total counter",
                f"tuneforge_unhandled_errors_total {self.unhandled_errors}",
            ]
        adapters = engine.adapters
        lines += [
            "# HELP tuneforge_queue_depth Requests waiting for the model.",
            "# TYPE tuneforge_queue_depth gauge",
            f"tuneforge_queue_depth {engine.queue_depth}",
            "# HELP tuneforge_loaded_adapters Adapters loaded on the base model.",
            "# TYPE tuneforge_loaded_adapters gauge",
            f"tuneforge_loaded_adapters {len(adapters)}",
            "# HELP tuneforge_adapter_loaded 1 for each loaded adapter.",
            "# TYPE tuneforge_adapter_loaded gauge",
            *(f"tuneforge_adapter_loaded{_labels(adapter=name)} 1" for name in adapters),
            "# HELP tuneforge_batches_total Batches decoded by the worker.",
            "# TYPE tuneforge_batches_total counter",
            f"tuneforge_batches_total {engine.batches}",
            "# HELP tuneforge_batched_rows_total Requests decoded, summed over batches.",
            "# TYPE tuneforge_batched_rows_total counter",
            f"tuneforge_batched_rows_total {engine.batched_rows}",
            "# HELP tuneforge_generated_tokens_total Tokens decoded, for every request "
            "(cancelled ones too).",
            "# TYPE tuneforge_generated_tokens_total counter",
            f"tuneforge_generated_tokens_total {engine.generated_tokens}",
            "# HELP tuneforge_cancelled_requests_total Requests whose client went away before "
            "the reply; decoding them stopped early.",
            "# TYPE tuneforge_cancelled_requests_total counter",
            f"tuneforge_cancelled_requests_total {engine.cancelled_rows}",
        ]
        return "\n".join(lines) + "\n"


class RequestCounter:
    """ASGI middleware counting every HTTP answer by path and status into ``metrics``.

    Only known paths get their own label, so a scan of random URLs cannot grow the series.
    """

    def __init__(self, app, metrics: Metrics, known_paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.known_paths else "other"

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.record_request(path, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
