"""Serving throughput and latency: concurrency 1, 4, 16; base only vs spread over 4 adapters;
and the same requests one at a time, for the batching speed-up measured side by side.

Runs the real server (uvicorn, loopback, in a thread) on the default model (``--dtype auto``,
as ``tuneforge serve`` loads it) and drives it with the official ``openai`` client, greedy
decoding, fixed ``max_tokens``. The server batches continuously: requests join the running
batch between decode steps. The 4 adapters are LoRA r=8 on all linear layers with peft's
default init (B = 0: they leave the output unchanged, so base and adapter runs decode the same
tokens and only the LoRA compute differs). The two targets of issue 18 are printed under the
table: aggregate throughput at 16 concurrent requests against one at a time (>= 3x), and 4
adapters against the base at 16 concurrent requests (>= 85%).

    .venv/bin/python bench/serve.py            # 32 tokens, 2 × concurrency requests per level
    .venv/bin/python bench/serve.py --quick    # 8 tokens, concurrency requests per level (min 2)

Writes bench/results/serve.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import markdown_table, report

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for learning a language.",
    "Explain what a list is in Python.",
    "Write a haiku about the sea.",
    "Why is the sky blue?",
    "What is 12 times 7?",
    "Name two planets of the solar system.",
    "How do I boil an egg?",
]


def make_adapters(model_dir: Path, out: Path, count: int) -> dict[str, Path]:
    """``count`` LoRA adapters (r=8, all linear layers, B=0) for the model in ``model_dir``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.adapters import save_adapter

    adapters = {}
    for index in range(count):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
        adapters[f"lora{index}"] = save_adapter(get_peft_model(model, config), out / f"lora{index}")
    return adapters


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_load(client, models: list[str], requests: int, concurrency: int, max_tokens: int):
    """Send ``requests`` chat requests, ``concurrency`` at a time; latencies (s), tokens, wall."""

    def one(index: int) -> tuple[float, int]:
        start = time.perf_counter()
        reply = client.chat.completions.create(
            model=models[index % len(models)],
            messages=[{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
            max_tokens=max_tokens,
            temperature=0,
        )
        return time.perf_counter() - start, reply.usage.completion_tokens

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latencies = [latency for latency, _ in results]
    tokens = sum(count for _, count in results)
    return latencies, tokens, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter requests")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per reply")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--requests-per-level", type=float, default=None, help="requests = this × concurrency"
    )
    parser.add_argument(
        "--home", type=Path, default=Path.home() / ".cache" / "tuneforge-test-default"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; on a busy machine 1 avoids threads "
        "waiting for each other at every operator)",
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    max_tokens = args.max_tokens or (8 if args.quick else 32)
    levels = args.concurrency
    per_level = args.requests_per_level or (1 if args.quick else 2)

    import openai

    from tuneforge.adapters import AdapterRegistry
    from tuneforge.models import load_model, resolve_folder
    from tuneforge.serve import Engine, ServeSettings, create_app, serve_in_thread

    load_start = os.getloadavg()[0]
    loaded = load_model("default", home=args.home)
    dtype = str(loaded.model.dtype).removeprefix("torch.")
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(resolve_folder("default", home=args.home), Path(tmp), 4)
        for name, folder in adapters.items():
            registry.load(name, folder)
        settings = ServeSettings(model_name="default", max_batch_size=max(levels), max_queue=256)
        engine = Engine(registry, settings.max_batch_size, settings.max_queue)
        app = create_app(engine, settings)
        rows = []
        rates: dict[tuple[str, int], float] = {}
        with serve_in_thread(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            run_load(client, ["default"], 2, 1, 4)  # warm-up
            for label, models in [("base", ["default"]), ("4 adapters", list(adapters))]:
                sequential = None
                for level in levels:
                    requests = max(round(per_level * level), 2)
                    batches_before, rows_before = engine.batches, engine.batched_rows
                    latencies, tokens, wall = run_load(client, models, requests, level, max_tokens)
                    per_batch = (engine.batched_rows - rows_before) / max(
                        engine.batches - batches_before, 1
                    )
                    throughput = tokens / wall
                    rates[(label, level)] = throughput
                    if level == 1:
                        sequential = throughput
                    rows.append(
                        [
                            label,
                            level,
                            requests,
                            tokens,
                            f"{wall:.1f}",
                            f"{throughput:.2f}",
                            f"{statistics.median(latencies):.2f}",
                            f"{percentile(latencies, 0.95):.2f}",
                            f"{per_batch:.1f}",
                            f"{throughput / sequential:.2f}×" if sequential else "-",
                        ]
                    )
                    print(rows[-1], flush=True)
    headers = [
        "requests on",
        "concurrency",
        "requests",
        "tokens",
        "wall s",
        "tokens/s",
        "p50 s",
        "p95 s",
        "rows per admission",
        "vs one at a time",
    ]
    top = max(levels)
    targets = ""
    if (("base", 1) in rates) and (("base", top) in rates) and (("4 adapters", top) in rates):
        targets = (
            f"\n\nAt {top} concurrent requests: base {rates[('base', top)] / rates[('base', 1)]:.1f}x "
            f"its one-at-a-time throughput (target >= 3x); 4 adapters "
            f"{rates[('4 adapters', top)] / rates[('base', top)]:.0%} of the base's throughput "
            "(target >= 85%)."
        )
    body = (
        f"Default model (SmolLM2-135M-Instruct, {dtype}), greedy, max_tokens={max_tokens}, "
        f"server max_batch_size={max(levels)}. Concurrency 1 is the same load run one request "
        "at a time; the last column is throughput relative to it (same requests-on group). "
        "Rows per admission: requests taken into the running batch at once. "
        "Latency is per request, end to end through HTTP (seconds). System load average "
        f"(1 min) {load_start:.1f} at the start (before the server), "
        f"{os.getloadavg()[0]:.1f} at the end (the server's own load included)"
        + (
            ": other processes shared the cores, so compare rows of one run, not runs.\n\n"
            if load_start >= 1.0
            else ".\n\n"
        )
        + markdown_table(headers, rows)
        + targets
    )
    report("serve", "Serving: throughput and latency under concurrent load", body)


if __name__ == "__main__":
    main()
