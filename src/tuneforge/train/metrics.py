"""Run metrics: ``metrics.jsonl`` (one JSON object per logged step) and peak memory.

Step lines hold ``step, epoch, loss, lr, tokens, tokens_per_s, grad_norm, peak_memory_bytes,
elapsed_s``; validation lines hold ``step, val_loss``. Tokens are real (non-pad) tokens. DPO and
ORPO runs add ``reward_margin, preference_accuracy, chosen_logps, rejected_logps`` (``val_``
prefixed on validation lines; ``tuneforge.train.objectives``).
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux).

    ``fit`` calls it once the model and optimizer exist, so the peak it logs is the training's
    (what the memory planner predicts), not a transient of loading or quantizing the weights.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM, the peak resident set size
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere the peak keeps counting from process start


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since the last reset: CUDA ``max_memory_allocated``, else the peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class MetricsLog:
    """Append-only ``metrics.jsonl``; each line is flushed and fsynced as it is written."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a killed run may have logged past its checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) <= step
        ]
        from tuneforge.atomic import write_text

        write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a kill: drop it


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
