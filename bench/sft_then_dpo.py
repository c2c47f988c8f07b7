"""SFT then DPO vs SFT alone on the bundled JSON-orders task: held-out JSON validity and field
accuracy, measured with ``tuneforge eval`` on the test split.

Arms (LoRA r=8 alpha=16 on the default model, fp32, seed 0):

- SFT: ``examples/lora.yaml`` for ``--sft-steps`` steps (batch 8, lr 5e-4, cosine);
- SFT + DPO: that SFT adapter, then ``examples/dpo.yaml`` for ``--dpo-steps`` steps on the
  bundled preference pairs (``demo:preference``; batch 8 pairs, beta 0.1, lr 5e-5), the
  reference being the SFT model (precomputed once);
- SFT, longer (``--control``): SFT for ``--sft-steps + --dpo-steps`` steps, so that DPO is
  compared with as many more steps of plain SFT, not only with fewer steps.

Every command is the CLI a user runs (``tuneforge train --config ...``, ``tuneforge eval``), each
in its own process. The load average is printed with the results.

    .venv/bin/python bench/sft_then_dpo.py --sft-steps 30 --dpo-steps 20 --limit 60 --control
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report
from tuneforge.tasks import json_orders

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "src" / "tuneforge" / "assets" / "json_orders" / "test.jsonl"


def tuneforge(*args: str) -> float:
    """Run ``tuneforge ARGS`` in its own process; return its wall time (s)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tuneforge", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def train(config: str, out: Path, steps: int, args: argparse.Namespace, *extra: str) -> float:
    return tuneforge(
        "train", "--config", config, "--model", args.model, "--out", str(out),
        "--max-steps", str(steps), "--num-threads", str(args.threads),
        "--no-progress", "--force", "--eval-every", "0",
        "--save-every", "0", *extra,
    )  # fmt: skip


def evaluate(adapter: Path, out: Path, args: argparse.Namespace, schema: Path) -> dict:
    tuneforge(
        "eval", "--model", args.model, "--adapter", str(adapter), "--data", str(TEST), "--metric", "json",
        "--schema", str(schema), "--limit", str(args.limit), "--max-new-tokens", "64",
        "--dtype", "float32", "--out", str(out),
    )  # fmt: skip
    return json.loads(out.read_text(encoding="utf-8"))["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=30)
    parser.add_argument("--dpo-steps", type=int, default=30)
    parser.add_argument("--limit", type=int, default=120, help="held-out items scored")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument(
        "--model", default="default", help="model reference (a tiny one: a smoke test)"
    )
    parser.add_argument("--control", action="store_true", help="also SFT for sft+dpo steps")
    parser.add_argument("--workdir", default="/tmp/tuneforge-bench-sft-then-dpo")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # the machine line reports the runs' thread count
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    schema = work / "orders.schema.json"
    schema.write_text(json.dumps(json_orders.SCHEMA), encoding="utf-8")
    load_before = os.getloadavg()

    arms = []  # (name, adapter, train seconds)
    sft = work / "sft"
    seconds = train("examples/lora.yaml", sft, args.sft_steps, args)
    arms.append((f"SFT ({args.sft_steps} steps)", sft / "adapter", seconds))
    dpo = work / "dpo"
    seconds = train(
        "examples/dpo.yaml", dpo, args.dpo_steps, args,
        "--init-adapter", str(sft / "adapter"),
    )  # fmt: skip
    name = f"SFT ({args.sft_steps}) + DPO ({args.dpo_steps} steps)"
    arms.append((name, dpo / "adapter", seconds))
    if args.control:
        longer = work / "sft-longer"
        total = args.sft_steps + args.dpo_steps
        seconds = train("examples/lora.yaml", longer, total, args)
        arms.append((f"SFT ({total} steps)", longer / "adapter", seconds))

    rows = []
    for name, adapter, seconds in arms:
        scores = evaluate(adapter, adapter.parent / "eval.json", args, schema)
        rows.append(
            [
                name,
                f"{scores['valid_json']:.3f}",
                f"{scores['schema_valid']:.3f}",
                f"{scores['field_accuracy']:.3f}",
                f"{seconds:.0f}",
            ]
        )
    load_after = os.getloadavg()
    body = (
        f"Model {args.model} (default: SmolLM2-135M-Instruct), LoRA r=8 alpha=16, fp32, seed 0, "
        f"{args.threads} torch threads. SFT: examples/lora.yaml (JSON-orders train split, batch "
        f"8, lr 5e-4 cosine). DPO: examples/dpo.yaml from the SFT adapter (bundled preference "
        f"pairs, batch 8 pairs, beta 0.1, lr 5e-5 cosine; reference = the SFT model, "
        f"precomputed). Held-out: the first {args.limit} items of the test split, greedy, at most "
        f"64 new tokens, `tuneforge eval --metric json`. Train seconds include loading the model "
        f"(and, for DPO, scoring the reference). Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}.\n\n"
        + markdown_table(["arm", "JSON valid", "schema valid", "field accuracy", "train s"], rows)
    )
    report("sft_then_dpo", "SFT then DPO vs SFT alone (JSON orders, held-out)", body)


if __name__ == "__main__":
    main()
