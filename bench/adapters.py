"""Adapters on the default model: the cost of an unmerged adapter, hot swap, mixed batches.

Measures, side by side in one run on SmolLM2-135M-Instruct (fp32):

1. per-token generation latency (greedy, fixed length) of the base, the base with an unmerged
   r=16 all-linear LoRA adapter (peft), the same through peft's mixed-batch path, and the
   merged model, on the plain path (``model.generate``): merged should equal the base within
   noise (the zero-latency claim); and the base and the unmerged adapter on tuneforge's fast
   path (``generate_rows``: batched LoRA terms), where the adapter's overhead is measured;
2. adapter load and unload time in the registry for that adapter (target < 0.5 s);
3. throughput of one mixed-adapter batch (rows spread over 4 adapters and the base) against
   the same rows generated one by one, and whether every row got the same tokens.

Run: ``.venv/bin/python bench/adapters.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import BATCH_PROMPTS, DEFAULT_HOME, markdown_table, report

PROMPT = [{"role": "user", "content": "Write a short note about the city of Oslo."}]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_adapter(base_dir: Path, out: Path, seed: int, r: int = 16) -> Path:
    """A random r=16 all-linear LoRA adapter (B non-zero) for the model in ``base_dir``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.adapters import save_adapter

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # small deltas: a plausible trained adapter, not noise
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.01)
    return save_adapter(peft_model, out, AutoTokenizer.from_pretrained(str(base_dir)))


@torch.inference_mode()
def seconds_per_token(model, input_ids, new_tokens: int, **kwargs) -> float:
    """Wall time of generating exactly ``new_tokens`` greedy tokens, divided by their count."""
    start = time.perf_counter()
    model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=0,
        **kwargs,
    )
    return (time.perf_counter() - start) / new_tokens


@torch.inference_mode()
def seconds_per_token_fast(model, tokenizer, input_ids, new_tokens: int, **kwargs) -> float:
    """Wall time per new token of ``generate_rows`` (the fast path) for one greedy row."""
    from tuneforge.generation import GenerationSettings, Row, generate_rows

    row = Row(input_ids[0].tolist(), GenerationSettings(max_new_tokens=new_tokens))
    names = kwargs.get("adapter_names")
    start = time.perf_counter()
    reply = generate_rows(model, tokenizer, [row], names)[0]
    return (time.perf_counter() - start) / reply.completion_tokens


def bench_latency(
    base, peft_model, merged, tokenizer, input_ids, new_tokens, repeats
) -> list[list[object]]:
    plain = seconds_per_token
    fast = partial(seconds_per_token_fast, tokenizer=tokenizer)
    variants = {
        "base": (plain, base, {}),
        "base + unmerged adapter (peft)": (plain, peft_model, {}),
        "base + adapter via adapter_names (peft mixed batch)": (
            plain,
            peft_model,
            {"adapter_names": ["bench"]},
        ),
        "merged model": (plain, merged, {}),
        "fast path: base": (fast, base, {}),
        "fast path: base + unmerged adapter (batched LoRA)": (
            fast,
            peft_model,
            {"adapter_names": ["bench"]},
        ),
    }
    for run, model, kwargs in variants.values():  # warm-up
        run(model, input_ids=input_ids, new_tokens=4, **kwargs)
    times = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all alike
        for name, (run, model, kwargs) in variants.items():
            times[name].append(run(model, input_ids=input_ids, new_tokens=new_tokens, **kwargs))
    base_ms = statistics.median(times["base"]) * 1e3
    rows = []
    for name, values in times.items():
        ms = statistics.median(values) * 1e3
        spread = (max(values) - min(values)) * 1e3
        rows.append([name, f"{ms:.2f}", f"±{spread / 2:.2f}", f"{ms / base_ms:.2f}x"])
    return rows


def bench_swap(registry, adapter_dir: Path, repeats: int) -> list[list[object]]:
    """Median and max wall time, and median CPU time of this process, of load and unload (s)."""
    times = {"load": [], "unload": []}
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        registry.load("swap", adapter_dir)
        times["load"].append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        registry.unload("swap")
        times["unload"].append((time.perf_counter() - wall, time.process_time() - cpu))
    rows = []
    for op, label in (("load", "load (r=16, all linear layers)"), ("unload", "unload")):
        walls, cpus = [w for w, _ in times[op]], [c for _, c in times[op]]
        rows.append(
            [
                label,
                f"{statistics.median(walls):.3f}",
                f"{max(walls):.3f}",
                f"{statistics.median(cpus):.3f}",
            ]
        )
    return rows


def bench_batch(registry, names, new_tokens) -> tuple[list[list[object]], str]:
    from tuneforge.generation import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens)
    choices = [None, *names]
    rows = [
        ([{"role": "user", "content": p}], choices[i % len(choices)])
        for i, p in enumerate(BATCH_PROMPTS[:8])
    ]
    registry.generate_batch(rows[:2], GenerationSettings(max_new_tokens=2))  # warm-up
    start = time.perf_counter()
    alone = [registry.generate(messages, adapter, settings) for messages, adapter in rows]
    alone_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = registry.generate_batch(rows, settings)
    batch_s = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in alone)
    same = sum(
        (a.text, a.completion_tokens) == (b.text, b.completion_tokens)
        for a, b in zip(alone, batch, strict=True)
    )
    table = [
        ["one by one", len(rows), tokens, f"{alone_s:.2f}", f"{tokens / alone_s:.1f}"],
        ["one mixed batch", len(rows), tokens, f"{batch_s:.2f}", f"{tokens / batch_s:.1f}"],
    ]
    note = (
        f"{len(rows)} rows over the base and {len(names)} adapters; rows with the same tokens "
        f"in the batch as alone: {same}/{len(rows)}; speed-up {alone_s / batch_s:.2f}x"
    )
    return table, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: on a shared 2-core machine, 2 threads that wait for "
        "each other at every op were measured 10x slower)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    new_tokens, repeats = (8, 2) if args.quick else (32, 5)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.adapters import AdapterRegistry, merge_adapter
    from tuneforge.generation import prompt_ids
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model

    base_dir = ensure_default_model(args.home, progress=False)
    log("making adapters and the merged model")
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-adapters-") as scratch:
        scratch = Path(scratch)
        adapter_dirs = [make_adapter(base_dir, scratch / f"a{i}", seed=i) for i in range(4)]
        merge_adapter(str(base_dir), adapter_dirs[0], scratch / "merged", progress=False)

        loaded = load_model(str(base_dir), dtype="float32", device="cpu", progress=False)
        tokenizer = loaded.tokenizer
        input_ids = torch.tensor([prompt_ids(tokenizer, PROMPT)])
        base = loaded.model
        peft_base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(peft_base.eval(), str(adapter_dirs[0]), "bench")
        merged = AutoModelForCausalLM.from_pretrained(str(scratch / "merged")).eval()
        log("latency")
        latency = bench_latency(
            base, peft_model.eval(), merged, tokenizer, input_ids, new_tokens, repeats
        )
        del peft_model, peft_base, merged

        log("hot swap")
        registry = AdapterRegistry(base, tokenizer)
        start = time.perf_counter()
        registry.load("a1", adapter_dirs[1])
        first_load = time.perf_counter() - start
        swap = bench_swap(registry, adapter_dirs[0], repeats)
        for i in (2, 3):
            registry.load(f"a{i}", adapter_dirs[i])
        log("mixed batch")
        batch, batch_note = bench_batch(registry, ["a1", "a2", "a3"], new_tokens)

    body = "\n\n".join(
        [
            f"### Per-token generation latency (greedy, {input_ids.shape[1]} prompt tokens, "
            f"{new_tokens} new tokens, median of {repeats}, batch 1; fp32 weights; the fast "
            "path's rows stop at EOS, the plain path's run the full length)",
            markdown_table(["model", "ms/token", "spread", "vs base"], latency),
            "### Adapter hot swap in the registry (target < 0.5 s)",
            markdown_table(["operation", "median wall s", "max wall s", "median CPU s"], swap)
            + f"\n\nFirst load onto the bare base (wraps it in peft): {first_load:.3f} s. "
            "Loads are timed with another adapter already loaded.",
            f"### Mixed-adapter batch vs one by one ({new_tokens} new tokens per row, greedy)",
            markdown_table(["mode", "rows", "new tokens", "seconds", "tokens/s"], batch),
            batch_note,
        ]
    )
    report("adapters", "Adapters: unmerged vs merged latency, hot swap, mixed batches", body)


if __name__ == "__main__":
    main()
