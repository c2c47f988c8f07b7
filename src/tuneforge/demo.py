"""``make demo``: the main jobs end to end on the bundled defaults, offline.

1. generate with the bundled SmolLM2-135M-Instruct;
2. fine-tune it with LoRA on the bundled strict-JSON task (``examples/demo.yaml``);
3. base vs tuned on the held-out set: a few answers side by side and the schema-valid rate;
4. RAG over the bundled fictional knowledge base: one answer with its numbered sources;
5. the comparison report: the arms (base, base+RAG, fine-tuned, fine-tuned+RAG, RAFT+RAG: a
   LoRA trained on the prompts retrieval builds; on the JSON task also fine-tuned+DPO,
   base+constrained and fine-tuned+constrained) on three tasks (facts, a strict JSON form, and
   the combined task: facts answered in a JSON shape with their source), every rate with its
   95% interval; the classic table and the recommendation are printed.

Run ``python -m tuneforge.demo --help`` for options (a longer budget, skipping steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tuneforge.errors import TuneforgeError

DEMO_CONFIG = "demo.yaml"
EVAL_BATCH = 24


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 76 - len(text)), flush=True)


def _demo_config_path() -> Path:
    """``examples/demo.yaml`` of the source checkout the demo runs from."""
    from tuneforge.errors import ConfigError

    path = Path(__file__).resolve().parents[2] / "examples" / DEMO_CONFIG
    if not path.exists():
        raise ConfigError(f"{path}: missing; run the demo from a tuneforge source checkout")
    return path


def step_generate(device: str) -> None:
    from tuneforge.generation import GenerationSettings, chat_messages, generate
    from tuneforge.models import load_model

    _banner("1. generate with the bundled default model")
    start = time.perf_counter()
    loaded = load_model("default", device=device)
    print(f"loaded SmolLM2-135M-Instruct in {time.perf_counter() - start:.1f} s")
    question = "What is the capital of France?"
    print(f"you> {question}\nassistant> ", end="", flush=True)
    generate(
        loaded.model,
        loaded.tokenizer,
        chat_messages(question),
        GenerationSettings(max_new_tokens=32),
        on_text=lambda text: print(text, end="", flush=True),
    )
    print()


def step_train(out: Path, device: str, max_steps: int | None):
    from tuneforge.tasks import json_orders
    from tuneforge.train import load_config, train

    _banner("2. fine-tune with LoRA on the strict-JSON task")
    overrides = {
        "out": str(out / "json-lora"),
        "data": str(json_orders.asset_path("train")),
        "force": True,
        "device": device,
    }
    if max_steps:
        overrides["max_steps"] = max_steps
    config = load_config(_demo_config_path(), overrides)
    start = time.perf_counter()
    result = train(config)
    print(f"trained in {time.perf_counter() - start:.0f} s -> {result.output_dir}")
    return result.output_dir


def step_json_eval(adapter_dir: Path, device: str, limit: int | None) -> dict[str, float]:
    from tuneforge.adapters.registry import AdapterRegistry
    from tuneforge.generation import GenerationSettings
    from tuneforge.models import load_model
    from tuneforge.tasks import json_orders

    _banner("3. base vs tuned on the held-out JSON set")
    records = json_orders.load_records("test")[:limit]
    loaded = load_model("default", device=device)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    registry.load("json", adapter_dir)
    settings = GenerationSettings(max_new_tokens=64)
    rates: dict[str, float] = {}
    samples: dict[str, list[str]] = {}
    for arm, adapter in (("base", None), ("tuned", "json")):
        valid, texts = 0, []
        start = time.perf_counter()
        for first in range(0, len(records), EVAL_BATCH):
            chunk = records[first : first + EVAL_BATCH]
            rows = [
                (
                    [
                        {"role": "system", "content": r["system"]},
                        {"role": "user", "content": r["prompt"]},
                    ],
                    adapter,
                )
                for r in chunk
            ]
            for reply in registry.generate_batch(rows, settings):
                texts.append(reply.text)
                valid += json_orders.check(reply.text)[0]
        rates[arm] = valid / len(records)
        samples[arm] = texts[:3]
        print(
            f"{arm:>5}: schema-valid {valid}/{len(records)} = {rates[arm]:.1%} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    for index in range(min(3, len(records))):
        print(f"\nprompt: {records[index]['prompt']}")
        print(f"  base : {samples['base'][index].strip()[:160]!r}")
        print(f"  tuned: {samples['tuned'][index].strip()[:160]!r}")
    return rates


def step_rag(out: Path, device: str, asked: int = 4) -> None:
    """Ingest the bundled documents, then ask the first ``asked`` answerable questions: each
    answer with its sources, the expected answer, and whether the answer holds it."""
    from tuneforge.evaluate.metrics import contains_answer
    from tuneforge.models import load_model
    from tuneforge.rag import RagStore, answer
    from tuneforge.tasks.knowledge_base import corpus_dir, questions

    _banner("4. RAG over the bundled knowledge base")
    store = RagStore(out / "kb-store")
    report = store.ingest([corpus_dir()])
    print(f"ingest: {report.summary()}")
    for line in report.warnings:
        print(f"warning: {line}")
    loaded = load_model("default", device=device)
    items = [q for q in questions() if q.answerable][:asked]
    right = 0
    for item in items:
        result = answer(item.question, store, loaded.model, loaded.tokenizer, top_k=3)
        holds = contains_answer(result.text, item.answer)
        right += holds
        print(f"\nquestion: {item.question}\nanswer  : {result.text}")
        for number, hit in enumerate(result.hits, start=1):
            print(f"  [{number}] {Path(hit.source).name} ({hit.location})")
        print(f"expected: {item.answer} (from {item.source}): {'yes' if holds else 'NO'}")
    print(
        f"\n{right}/{len(items)} answers hold the expected one (the bare default model; "
        "step 5 measures it on more questions, with intervals)"
    )


def step_compare(out: Path, device: str, budget: str) -> None:
    from tuneforge.evaluate import compare, write_report
    from tuneforge.evaluate.recommendation import recommendation
    from tuneforge.evaluate.report import classic_table

    _banner(
        f"5. compare base / RAG / fine-tuned / both / RAFT+RAG / DPO / constrained decoding "
        f"({budget} budget)"
    )
    comparison = compare(out / "compare", budget=budget, device=device)
    md_path, html_path = write_report(comparison, out / "compare")
    arms = comparison.arm_names
    # the rate without its interval and the row without its metric here; report.md has both
    rows = [
        (row.label.split(" (")[0][:39], [cell.split(" [")[0] for cell in row.cells])
        for row in classic_table(comparison)
    ]
    widths = [
        2 + max(len(arm), *(len(cells[i]) for _, cells in rows)) for i, arm in enumerate(arms)
    ]
    print(f"\n{'':<40}" + "".join(f"{arm:>{w}}" for arm, w in zip(arms, widths, strict=True)))
    for label, cells in rows:
        print(f"{label:<40}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(f"\n{recommendation(comparison)}")
    print(f"report: {md_path} and {html_path} (every rate with its 95% interval)")


def main(argv: list[str] | None = None) -> int:
    from tuneforge.cli import silence_benign_warnings

    silence_benign_warnings()
    parser = argparse.ArgumentParser(
        prog="python -m tuneforge.demo",
        description="Run tuneforge's main jobs end to end on the bundled defaults.",
        epilog="example:\n  python -m tuneforge.demo --out demo-out --budget quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-steps", type=int, default=None, help="override demo.yaml steps")
    parser.add_argument("--eval-limit", type=int, default=None, help="held-out rows to score")
    parser.add_argument("--budget", default="quick", choices=["quick", "full"])
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["generate", "train", "rag", "compare"],
        help="skip a step",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if "generate" not in args.skip:
            step_generate(args.device)
        if "train" not in args.skip:
            adapter = step_train(args.out, args.device, args.max_steps)
            step_json_eval(adapter, args.device, args.eval_limit)
        if "rag" not in args.skip:
            step_rag(args.out, args.device)
        if "compare" not in args.skip:
            step_compare(args.out, args.device, args.budget)
    except TuneforgeError as err:
        print(f"tuneforge demo: error: {err}", file=sys.stderr)
        return 2
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs under {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
