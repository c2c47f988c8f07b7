"""``tuneforge merge`` and ``tuneforge export``."""

from __future__ import annotations

import argparse

from tuneforge.cli.options import HelpFormatter


def register(subparsers) -> None:
    merge = subparsers.add_parser(
        "merge",
        help="merge a LoRA adapter into its base: a plain transformers model folder",
        description="W <- W + (lora_alpha/r)·B·A for every adapted layer, saved as safetensors "
        "with the tokenizer and chat template; loads with AutoModelForCausalLM.from_pretrained "
        "alone. A QLoRA adapter is merged onto the dequantized 4-bit base.",
        formatter_class=HelpFormatter,
        epilog="example:\n  tuneforge merge --model default --adapter runs/json/adapter "
        "--out models/json-merged",
    )
    merge.add_argument("--model", default="default", help="the base model reference")
    merge.add_argument("--adapter", required=True, help="the LoRA adapter folder (PEFT format)")
    merge.add_argument("--out", required=True, help="the merged model folder to write")
    merge.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the saved weights (the merge is computed in fp32)",
    )
    merge.set_defaults(func=run_merge)

    export = subparsers.add_parser(
        "export",
        help="export a model (adapter merged in) as a GGUF file for llama.cpp / Ollama",
        formatter_class=HelpFormatter,
        epilog="example:\n  tuneforge export --model default --adapter runs/json/adapter "
        "--format gguf --out json.gguf\n  ollama create json -f Modelfile   "
        "# with 'FROM ./json.gguf'",
    )
    export.add_argument("--model", default="default", help="the base model reference")
    export.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge first")
    export.add_argument("--format", default="gguf", choices=["gguf"], help="output format")
    export.add_argument("--dtype", default="f16", choices=["f16", "f32"], help="weight dtype")
    export.add_argument("--out", required=True, help="the .gguf file to write")
    export.set_defaults(func=run_export)


def run_merge(args: argparse.Namespace) -> int:
    from tuneforge.adapters.merge import merge_adapter

    report = merge_adapter(args.model, args.adapter, args.out, dtype=args.dtype)
    base = "the dequantized 4-bit base (QLoRA)" if report.quantized_base else "the base"
    print(f"merged {report.layers} layers onto {base} -> {report.out_dir}")
    print(
        f"max |logit difference| vs the unmerged adapter on sample prompts: "
        f"{report.max_logit_diff:.3g} · {report.seconds:.1f} s"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    import time

    from tuneforge.adapters.export import export_gguf

    start = time.perf_counter()
    path = export_gguf(args.model, args.adapter, args.out, dtype=args.dtype)
    size_mib = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mib:.1f} MiB, {args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0
