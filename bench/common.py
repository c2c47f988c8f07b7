"""Shared by the bench scripts: machine info, peak memory, the result table, the default model's
home and the batch prompts.

Every bench prints a markdown table headed by the machine it ran on and writes the same text to
``bench/results/<name>.md``. Targets are ratios measured side by side in one run, never absolute
timings asserted in tests.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

DEFAULT_HOME = Path.home() / ".cache" / "tuneforge-test-default"
"""The tuneforge home the benches (and the slow tests) convert the default model into."""

BATCH_PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for writing clear code.",
    "Return the order as JSON: 2 lamps, ship to Oslo.",
    "Explain LoRA in one sentence.",
    "What is 12 times 7?",
    "Name a colour of the sky.",
    "Translate 'good morning' to French.",
    "Write a haiku about rain.",
    "Why do cats purr?",
    "List three uses of a paperclip.",
    "What is the boiling point of water?",
    "Describe a sunset in two sentences.",
    "How many legs does a spider have?",
    "Give a synonym for happy.",
    "What does a compiler do?",
    "Suggest a name for a pet fish.",
]
"""Short, varied requests for batched decoding (the benches take the first N)."""


def machine_info() -> str:
    """One markdown line: CPU model, cores, RAM, torch version, device."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, torch {torch.__version__}, "
        f"{device}, threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, body: str) -> str:
    """Print ``body`` under a title and machine line, and save it to bench/results/<name>.md."""
    text = f"## {title}\n\n{machine_info()}\n\n{body}\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
    return text
