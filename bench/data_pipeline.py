"""Data pipeline throughput: read, validate, render, tokenize, mask and pack N short chats.

    .venv/bin/python bench/data_pipeline.py            # 100,000 examples (target < 60 s)
    .venv/bin/python bench/data_pipeline.py --examples 5000   # quick mode

Uses the bundled default model's tokenizer (SmolLM2, ChatML template) when it is converted,
else the tiny test tokenizer. Writes bench/results/data_pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from common import DEFAULT_HOME, markdown_table, peak_rss_bytes, report


def synthetic_chats(count: int, seed: int = 0) -> list[dict]:
    """Short chats: 70% system + user + assistant, 30% two user/assistant exchanges."""
    from tuneforge.tasks.json_orders import SYSTEM_PROMPT, answer_text, make_example

    rng = random.Random(seed)
    records = []
    for index in range(count):
        message, answer = make_example(rng)
        turns = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{message} (ref {index})"},
            {"role": "assistant", "content": answer_text(answer)},
        ]
        if rng.random() < 0.3:
            follow, answer2 = make_example(rng)
            turns += [
                {"role": "user", "content": follow},
                {"role": "assistant", "content": answer_text(answer2)},
            ]
        records.append({"messages": turns})
    return records


def load_tokenizer():
    from tuneforge.models.bundled import default_model_dir

    folder = default_model_dir(DEFAULT_HOME)
    if not (folder / "tokenizer.json").exists():
        folder = default_model_dir(Path.home() / ".cache" / "tuneforge")
    if (folder / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder), "SmolLM2-135M-Instruct"
    from tiny import build_tokenizer

    return build_tokenizer(), "tiny test tokenizer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="chats to process")
    parser.add_argument("--max-length", type=int, default=1024, help="packed row length (tokens)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per batch")
    args = parser.parse_args(argv)

    from tuneforge.data import DataConfig, ensure_pad_token, make_batches, prepare_data
    from tuneforge.data.prepare import DataReport, load_examples

    tokenizer, tokenizer_name = load_tokenizer()
    pad = ensure_pad_token(tokenizer)
    rss_start = peak_rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chats.jsonl"
        path.write_text(
            "".join(json.dumps(r) + "\n" for r in synthetic_chats(args.examples)), encoding="utf-8"
        )
        config = DataConfig(path=str(path), max_length=args.max_length)
        start = time.perf_counter()
        load_examples(config, DataReport())
        read_seconds = time.perf_counter() - start

        cpu_start, start = time.process_time(), time.perf_counter()
        prepared = prepare_data(config, tokenizer)
        prepare_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batches = make_batches(
        prepared.train,
        batch_size=args.batch_size,
        max_length=args.max_length,
        packing=True,
        pad_token_id=pad,
    )
    pack_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # all threads of this process
    peak = peak_rss_bytes()
    load = os.getloadavg()[0]

    data = prepared.report
    rows = sum(b["input_ids"].shape[0] for b in batches)
    real = sum(b.real_tokens for b in batches)
    total = prepare_seconds + pack_seconds
    table = markdown_table(
        ["stage", "seconds", "notes"],
        [
            ["read + validate + dedupe", f"{read_seconds:.2f}", f"{data.rows_read} rows"],
            [
                "prepare_data (read, render, tokenize, mask)",
                f"{prepare_seconds:.2f}",
                f"{data.tokens} tokens, {100 * data.supervised_share:.1f}% with loss",
            ],
            [
                f"make_batches (pack into rows of {args.max_length})",
                f"{pack_seconds:.2f}",
                f"{rows} rows, efficiency {100 * real / (rows * args.max_length):.1f}%",
            ],
            [
                "**total (prepare + pack)**",
                f"**{total:.2f}**",
                f"{args.examples / total:,.0f} examples/s, target < 60 s for 100,000",
            ],
        ],
    )
    body = (
        f"{args.examples:,} short chats (70% one exchange with a system prompt, 30% two "
        f"exchanges), tokenizer: {tokenizer_name}.\n\n{table}\n\n"
        f"CPU time (prepare + pack, all threads): {cpu_seconds:.1f} s; load average "
        f"during the run: {load:.1f} on {os.cpu_count()} cores (other work on the machine "
        "stretches wall time).\n\n"
        f"Peak RSS: {peak / 2**30:.2f} GiB (at start {rss_start / 2**30:.2f} GiB: "
        f"the tokenizer, torch and transformers)."
    )
    report("data_pipeline", "Data pipeline: tokenize, mask and pack short chats", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
