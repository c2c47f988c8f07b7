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

    from tuneforge.export.quantization import GGUF_DTYPES

    types = "\n".join(
        f"  {d.name:<5} {d.bits:>4g} bits/weight  {d.summary}" for d in GGUF_DTYPES.values()
    )
    export = subparsers.add_parser(
        "export",
        help="export a model (adapter merged in) as a GGUF file for llama.cpp / Ollama",
        description="Merge the adapter (as tuneforge merge does), write one GGUF file that "
        "llama.cpp and Ollama load (Llama incl. SmolLM and Llama 3.x, Mistral, Qwen2/2.5, Qwen3, "
        "Gemma 2/3), run it under llama.cpp against the merged model on sample prompts when "
        "llama-cpp-python is installed, and write an Ollama Modelfile beside it.",
        formatter_class=HelpFormatter,
        epilog="weight types (--dtype; norms stay f32):\n" + types + "\n\nexamples:\n"
        "  tuneforge export --model default --adapter runs/json/adapter --out json.gguf\n"
        "  tuneforge export --model default --dtype q8_0 --out smollm2-q8_0.gguf\n"
        "  ollama create json -f json.Modelfile && ollama run json\n"
        "  llama-cli -m json.gguf -cnv",
    )
    export.add_argument("--model", default="default", help="the base model reference")
    export.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge first")
    export.add_argument("--format", default="gguf", choices=["gguf"], help="output format")
    export.add_argument(
        "--dtype", default="f16", choices=list(GGUF_DTYPES), help="weight type (see below)"
    )
    export.add_argument("--out", required=True, help="the .gguf file to write")
    export.add_argument(
        "--no-check",
        action="store_true",
        help="do not run the file under llama.cpp to measure it",
    )
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
    from tuneforge.adapters.export import export_gguf

    report = export_gguf(
        args.model, args.adapter, args.out, dtype=args.dtype, check=not args.no_check
    )
    written = report.gguf
    pre = f", pre-tokenizer {written.pre_tokenizer}" if written.pre_tokenizer else ""
    print(
        f"wrote {written.path} ({written.size_bytes / 2**20:.1f} MiB, {written.dtype}, "
        f"{written.architecture}{pre}) in {report.seconds:.1f} s"
    )
    comparison = report.comparison
    if comparison is None:
        print(f"logit difference under llama.cpp: not measured: {report.not_measured}")
    else:
        print(
            f"under llama.cpp on {comparison.prompts} sample prompts: max |logit difference| "
            f"{comparison.max_logit_diff:.3g} (logits up to {comparison.logit_span:.3g}), "
            f"same top-1 token at {comparison.top1_agreement:.1%} of positions, same greedy "
            f"answer {comparison.greedy_matches}/{comparison.prompts}, same tokenization "
            f"{comparison.tokenization_matches}/{comparison.prompts}"
        )
    print(f"Ollama: {report.ollama_command}")
    return 0
