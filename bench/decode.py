"""Decoding speed: tuneforge's fast path, its plain path and llama.cpp, side by side in one run.

Same model (the bundled SmolLM2-135M-Instruct; llama.cpp runs it as the f16 GGUF file that
``tuneforge export`` writes), same prompt, greedy, same threads. Rounds are interleaved (every
engine once per round) so that load from other processes hits all alike; each engine's best
round is reported. Measured:

1. single-stream decode: tokens/s after the first token (``(n - 1) / (t(n) - t(1))``: two runs
   per round, one token and ``--new-tokens``), wall clock and per CPU-second of this process
   (on a busy machine the CPU-second column is the steadier one);
2. aggregate decode of 16 rows in one batch (``generate_rows``) against the same engine's
   single stream, and the first answer after loading (packing the weights included);
3. 16 rows over 4 LoRA adapters in one batch against 16 base rows;
4. the answering workloads of ``tuneforge compare --budget quick`` (its questions one at a time,
   as ``evaluate`` asks them) and of ``make demo`` step 3 (held-out JSON prompts in batches of 24,
   base and adapter), before (plain path, fp32: the old default) and after (``auto``).

    .venv/bin/python bench/decode.py              # 2 threads, 128 new tokens, 3 rounds
    .venv/bin/python bench/decode.py --quick      # 32 new tokens, 2 rounds, small workloads
    .venv/bin/python bench/decode.py --profile    # also torch.profiler tables, batch 1 and 16
    .venv/bin/python bench/decode.py --only adapters   # one section, printed, not saved

Writes bench/results/decode.md (and decode_profile.md with ``--profile``, with the fast
path's 16 rows on the base vs on 4 adapters when the adapter sections run); a run of some
sections (``--only``) prints them and leaves the saved results of the last full run alone.
The llama.cpp row needs llama-cpp-python (``make llama-cpp-wheel`` builds it once); without it
the row is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import BATCH_PROMPTS, DEFAULT_HOME, machine_info, markdown_table, report

SECTIONS = ("single", "batch", "first", "adapters", "workloads")
"""The measurements, in the order of the module doc (``--only`` picks some)."""
PROMPT = "Write a long story about a robot who learns to paint. Describe every day of its life."


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# -- engines ---------------------------------------------------------------------------------


class TuneforgeEngine:
    """One of tuneforge's paths (``fast``: ``generate_rows``; ``compiled``: the same with its
    single-row decode steps compiled, ``--compile``; ``plain``: ``model.generate``)."""

    def __init__(self, loaded, path: str) -> None:
        self.model, self.tokenizer, self.path = loaded.model, loaded.tokenizer, path
        self.dtype = str(loaded.model.dtype).removeprefix("torch.")
        self.name = f"tuneforge {path} path, {self.dtype}"

    def rows(self, prompts: list[str], new_tokens: int, adapters=None):
        from tuneforge.generation import GenerationSettings, Row, chat_messages, prompt_ids

        settings = GenerationSettings(max_new_tokens=new_tokens)
        return [
            Row(prompt_ids(self.tokenizer, chat_messages(p)), settings, adapter)
            for p, adapter in zip(prompts, adapters or [None] * len(prompts), strict=True)
        ]

    def decode(self, rows, adapter_names=None) -> int:
        """Decode ``rows``; the number of new tokens."""
        from tuneforge.generation import generate_rows
        from tuneforge.generation.compiled_step import compile_decode_steps
        from tuneforge.generation.decoding import generate_rows_plain

        run = generate_rows_plain if self.path == "plain" else generate_rows
        compile_decode_steps(self.path == "compiled")
        try:
            replies = run(self.model, self.tokenizer, rows, adapter_names)
        finally:
            compile_decode_steps(False)
        return sum(reply.completion_tokens for reply in replies)

    def single(self, new_tokens: int) -> int:
        return self.decode(self.rows([PROMPT], new_tokens))


class LlamaCppEngine:
    """llama.cpp (llama-cpp-python) on the f16 GGUF export, its own chat template."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False
        )
        self.name, self.dtype = "llama.cpp (llama-cpp-python)", "f16"

    def single(self, new_tokens: int) -> int:
        out = self.llm.create_chat_completion(
            [{"role": "user", "content": PROMPT}], max_tokens=new_tokens, temperature=0
        )
        return out["usage"]["completion_tokens"]


def llama_cpp_engine(home: Path, threads: int) -> tuple[LlamaCppEngine | None, str]:
    """The llama.cpp engine on a cached f16 export, or None and the reason it is skipped."""
    from tuneforge.export.llama_cpp_check import llama_cpp_missing

    missing = llama_cpp_missing()
    if missing:
        return None, f"llama.cpp row skipped: {missing} (make llama-cpp-wheel builds it once)"
    gguf = home / "bench" / "default-f16.gguf"
    if not gguf.exists():
        from tuneforge.adapters.export import export_gguf

        log(f"exporting the default model to {gguf} (once)")
        export_gguf("default", None, gguf, dtype="f16", home=home, check=False, progress=False)
    return LlamaCppEngine(gguf, threads), ""


# -- measurements ----------------------------------------------------------------------------


def single_stream(engines, new_tokens: int, rounds: int) -> dict[str, dict]:
    """Per engine, its best round: decode tokens/s (wall and per CPU-second), and the
    seconds of its warm-up answer (packing, compiling, llama.cpp's first prompt)."""
    best: dict[str, dict] = {}
    for engine in engines:
        with Clock() as warm:
            engine.single(2)
        best[engine.name] = {"wall": 0.0, "cpu": 0.0, "warm-up": warm.wall}
        log(f"warm-up: {engine.name}: {warm.wall:.1f} s")
    for round_ in range(rounds):
        for engine in engines:
            with Clock() as one:
                engine.single(1)
            with Clock() as many:
                count = engine.single(new_tokens)
            if count < 2 or many.wall <= one.wall or many.cpu <= one.cpu:
                # the one-token run took as long as the long one: other processes stalled it
                log(f"round {round_ + 1}: {engine.name}: not measurable, skipped")
                continue
            wall = (count - 1) / (many.wall - one.wall)
            cpu = (count - 1) / (many.cpu - one.cpu)
            log(f"round {round_ + 1}: {engine.name}: {wall:.1f} tok/s, {cpu:.1f} tok/CPU-s")
            held = best[engine.name]
            held["wall"], held["cpu"] = max(held["wall"], wall), max(held["cpu"], cpu)
    return best


def batch_throughput(engine: TuneforgeEngine, new_tokens: int, rounds: int) -> float:
    """Best aggregate tokens/s of 16 rows in one batch (prefill included)."""
    best = 0.0
    for _ in range(rounds):
        rows = engine.rows(BATCH_PROMPTS, new_tokens)
        with Clock() as clock:
            count = engine.decode(rows)
        best = max(best, count / clock.wall)
    return best


def first_answer(model_dir: Path, dtype: str, new_tokens: int) -> tuple[float, float]:
    """(seconds to load, seconds of the first answer) on a fresh load: warm-up costs."""
    from tuneforge.models import load_model

    with Clock() as load:
        loaded = load_model(str(model_dir), dtype=dtype, device="cpu", progress=False)
    engine = TuneforgeEngine(loaded, "fast")
    with Clock() as first:
        engine.single(new_tokens)
    return load.wall, first.wall


def make_adapters(model_dir: Path, out: Path, count: int) -> list[Path]:
    """``count`` LoRA adapters (r=8, all linear layers, small random B) for the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.adapters import save_adapter

    folders = []
    for index in range(count):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        torch.manual_seed(index)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.01)
        folders.append(save_adapter(peft_model, out / f"lora{index}"))
    return folders


def load_with_adapters(model_dir: Path, dtype: str, adapter_dirs: list[Path]):
    """A peft model holding ``adapter_dirs`` as ``lora0``, ``lora1``, ... and its tokenizer."""
    from peft import PeftModel

    from tuneforge.models import load_model

    loaded = load_model(str(model_dir), dtype=dtype, device="cpu", progress=False)
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dirs[0]), "lora0")
    for index, folder in enumerate(adapter_dirs[1:], start=1):
        model.load_adapter(str(folder), f"lora{index}")
    loaded.model = model.eval()
    return loaded


def mixed_adapters(loaded, new_tokens: int, rounds: int) -> list[list[object]]:
    """Aggregate tokens/s of 16 base rows and of 16 rows spread over 4 adapters, one batch,
    on the fast path (batched LoRA) and the plain path (peft's pass per adapter)."""
    rates: dict[tuple[str, str], float] = {}
    adapters = [f"lora{i % 4}" for i in range(len(BATCH_PROMPTS))]
    for _ in range(rounds):
        for path in ("fast", "plain"):
            engine = TuneforgeEngine(loaded, path)
            for label, names in (("base", ["__base__"] * len(adapters)), ("mixed", adapters)):
                rows = engine.rows(BATCH_PROMPTS, new_tokens)
                with Clock() as clock:
                    count = engine.decode(rows, names)
                rates[(path, label)] = max(rates.get((path, label), 0.0), count / clock.wall)
    return [
        [
            f"{path} path",
            f"{rates[(path, 'base')]:.1f}",
            f"{rates[(path, 'mixed')]:.1f}",
            f"{rates[(path, 'mixed')] / rates[(path, 'base')]:.0%}",
        ]
        for path in ("fast", "plain")
    ]


def compare_workload(limit: int | None) -> list[tuple[list[dict], int]]:
    """The questions ``tuneforge compare --budget quick`` asks the base model, without retrieval:
    (messages, max_new_tokens) for knowledge, general and JSON questions."""
    from tuneforge.evaluate.compare import BUDGETS, general_asset
    from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT, load_eval_data
    from tuneforge.generation import chat_messages
    from tuneforge.tasks import json_orders
    from tuneforge.tasks.knowledge_base import questions

    budget = BUDGETS["quick"]
    kb = questions()[: budget.kb_answerable + budget.kb_unanswerable]
    general = load_eval_data(general_asset("questions.jsonl"))[: budget.general_questions]
    orders = json_orders.load_records("test")[: budget.json_prompts]
    work = [(chat_messages(q.question, QA_SYSTEM_PROMPT), budget.max_new_tokens) for q in kb]
    work += [(chat_messages(g["prompt"], QA_SYSTEM_PROMPT), budget.max_new_tokens) for g in general]
    work += [(chat_messages(r["prompt"], r["system"]), budget.json_max_new_tokens) for r in orders]
    return work[:limit]


def run_compare_workload(engine: TuneforgeEngine, work, batch_size: int = 1) -> float:
    """Seconds to answer ``work`` ``batch_size`` questions at a time (``evaluate`` answered one
    at a time before it batched, 16 at a time now: ``EVAL_BATCH_SIZE``)."""
    from tuneforge.generation import GenerationSettings, Row, prompt_ids

    with Clock() as clock:
        for first in range(0, len(work), batch_size):
            rows = [
                Row(prompt_ids(engine.tokenizer, messages), GenerationSettings(new_tokens))
                for messages, new_tokens in work[first : first + batch_size]
            ]
            engine.decode(rows)
    return clock.wall


def run_demo_workload(engine: TuneforgeEngine, limit: int | None) -> float:
    """Seconds of ``make demo`` step 3: held-out JSON prompts in batches of 24, base rows then
    adapter rows (``lora0``), 64 new tokens."""
    from tuneforge.generation import GenerationSettings, Row, prompt_ids
    from tuneforge.tasks import json_orders

    records = json_orders.load_records("test")[:limit]
    settings = GenerationSettings(max_new_tokens=64)
    with Clock() as clock:
        for adapter in ("__base__", "lora0"):
            for first in range(0, len(records), 24):
                chunk = records[first : first + 24]
                rows = [
                    Row(
                        prompt_ids(
                            engine.tokenizer,
                            [
                                {"role": "system", "content": r["system"]},
                                {"role": "user", "content": r["prompt"]},
                            ],
                        ),
                        settings,
                    )
                    for r in chunk
                ]
                engine.decode(rows, [adapter] * len(rows))
    return clock.wall


def workloads(model_dir: Path, adapter_dirs, with_adapters, auto: str, limit) -> list[str]:
    """The answering workloads section: before (plain path, fp32) and after (fast path)."""
    log("workloads")
    before = load_with_adapters(model_dir, "float32", adapter_dirs)
    work = compare_workload(limit)
    plain_engine = TuneforgeEngine(before, "plain")
    fast_engine = TuneforgeEngine(with_adapters, "fast")
    compare_before = run_compare_workload(plain_engine, work)
    from tuneforge.evaluate.runner import EVAL_BATCH_SIZE

    compare_after = run_compare_workload(fast_engine, work, EVAL_BATCH_SIZE)
    demo_before = run_demo_workload(plain_engine, limit)
    demo_after = run_demo_workload(fast_engine, limit)
    return [
        "### Answering workloads: before (plain path, float32, the old default) and after "
        f"(fast path, auto = {auto})",
        markdown_table(
            ["workload", "before s", "after s", "speed-up"],
            [
                [
                    f"compare --budget quick: {len(work)} questions (before one at a time, "
                    f"after in batches of {EVAL_BATCH_SIZE})",
                    f"{compare_before:.1f}",
                    f"{compare_after:.1f}",
                    f"{compare_before / compare_after:.1f}x",
                ],
                [
                    "make demo step 3: held-out JSON prompts, batches of 24, base + adapter",
                    f"{demo_before:.1f}",
                    f"{demo_after:.1f}",
                    f"{demo_before / demo_after:.1f}x",
                ],
            ],
        ),
    ]


# -- report ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, small workloads")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine")
    parser.add_argument("--new-tokens", type=int, default=None, help="single-stream length")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--profile", action="store_true", help="torch.profiler tables too")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run these sections only (printed, not saved; batch needs single, run with it)",
    )
    args = parser.parse_args()
    wanted = set(args.only or SECTIONS)
    if "batch" in wanted:
        wanted.add("single")
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    rounds = args.rounds or (2 if args.quick else 3)
    batch_tokens = 16 if args.quick else 64
    workload_limit = 6 if args.quick else None
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    # a fresh inductor cache: the compiled row's warm-up is what a first run pays
    inductor_cache = tempfile.mkdtemp(prefix="tuneforge-bench-inductor-")
    atexit.register(shutil.rmtree, inductor_cache, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache

    from tuneforge.models import load_model, resolve_dtype
    from tuneforge.models.bundled import ensure_default_model

    model_dir = ensure_default_model(args.home, progress=False)
    auto = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    log(f"auto dtype here: {auto}")
    loaded = {
        dtype: load_model(str(model_dir), dtype=dtype, device="cpu", progress=False)
        for dtype in ("float32", "bfloat16")
    }
    engines = [
        TuneforgeEngine(loaded[dtype], path)
        for path in ("plain", "fast")
        for dtype in ("float32", "bfloat16")
    ]
    # batches decode eagerly on every path: the compiled step is a single-stream row only
    compiled = TuneforgeEngine(loaded[auto], "compiled")
    sections = []
    if "single" in wanted:
        llama, skipped = llama_cpp_engine(args.home, args.threads)
        if llama is None:
            print(skipped, flush=True)
        log("single stream")
        streams = ([llama] if llama else []) + engines + [compiled]
        single = single_stream(streams, new_tokens, rounds)
        reference = single.get(llama.name) if llama else None
        rows = []
        for engine in streams:
            rate = single[engine.name]
            versus = (
                f"{rate['wall'] / reference['wall']:.2f}x / {rate['cpu'] / reference['cpu']:.2f}x"
                if reference
                else "-"
            )
            rows.append(
                [
                    engine.name,
                    engine.dtype,
                    f"{rate['wall']:.1f}",
                    f"{rate['cpu']:.1f}",
                    versus,
                    f"{rate['warm-up']:.1f}",
                ]
            )
        sections += [
            f"### Single-stream decode (greedy, up to {new_tokens} new tokens, {args.threads} "
            f"threads, best of {rounds} interleaved rounds)",
            markdown_table(
                [
                    "engine",
                    "dtype",
                    "tokens/s",
                    "tokens per CPU-s",
                    "vs llama.cpp (wall / CPU)",
                    "warm-up s",
                ],
                rows,
            )
            + ("" if llama else f"\n\n{skipped}")
            + "\n\nwarm-up: the first 2-token answer after loading (packing the weights; for "
            "the compiled row, compiling its decode step with inductor's cache on disk in a "
            "fresh folder, so the cost a first run pays).",
        ]

    if "batch" in wanted:
        log("batch of 16")
        batch_rows = []
        for engine in engines:
            rate = batch_throughput(engine, batch_tokens, rounds)
            alone = single[engine.name]["wall"]
            batch_rows.append([engine.name, f"{rate:.1f}", f"{alone:.1f}", f"{rate / alone:.1f}x"])
        sections += [
            f"### 16 rows in one batch ({batch_tokens} new tokens each, prefill included)",
            markdown_table(
                ["engine", "aggregate tokens/s", "single stream tokens/s", "ratio"], batch_rows
            ),
        ]

    if "first" in wanted:
        log("first answer after loading")
        warm = []
        for dtype in ("float32", "bfloat16"):
            load_s, first_s = first_answer(model_dir, dtype, 16)
            warm.append([dtype, f"{load_s:.2f}", f"{first_s:.2f}"])
        sections += [
            "### First answer after loading (fast path; 16 new tokens; weights packed on first "
            "use)",
            markdown_table(["dtype", "load s", "first answer s"], warm),
        ]

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-decode-") as scratch:
        if wanted & {"adapters", "workloads"}:
            log("adapters")
            adapter_dirs = make_adapters(model_dir, Path(scratch), 4)
            with_adapters = load_with_adapters(model_dir, auto, adapter_dirs)
        if "adapters" in wanted:
            mixed = mixed_adapters(with_adapters, batch_tokens, rounds)
            sections += [
                f"### 16 rows over 4 LoRA adapters (r=8, all linear layers) vs 16 base rows, "
                f"one batch, {auto}, {batch_tokens} new tokens each",
                markdown_table(["path", "base tokens/s", "4 adapters tokens/s", "ratio"], mixed),
            ]
        if "workloads" in wanted:
            sections += workloads(model_dir, adapter_dirs, with_adapters, auto, workload_limit)
    load_end = os.getloadavg()
    header = (
        f"Default model (SmolLM2-135M-Instruct); llama.cpp runs its f16 GGUF export. Load "
        f"average (1/5/15 min) {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f} at "
        f"the start, {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} at the end"
        + (
            ": other processes shared the cores, so compare rows of one run (ratios), not runs."
            if load_start[0] >= 1.0
            else "."
        )
    )
    title, body = (
        "Decoding speed: fast path, plain path, llama.cpp",
        "\n\n".join([header, *sections]),
    )
    if args.only:
        print(
            f"## {title} (sections {', '.join(args.only)}; not saved)\n\n{machine_info()}\n\n{body}"
        )
    else:
        report("decode", title, body)
    if args.profile:
        from decode_profile import profile_report

        profile_report(
            {"float32": loaded["float32"], auto: loaded[auto]},
            with_adapters=with_adapters if wanted & {"adapters", "workloads"} else None,
        )


if __name__ == "__main__":
    main()
