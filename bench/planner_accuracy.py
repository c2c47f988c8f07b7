"""Planner accuracy: predicted vs measured peak memory of a real training step, on CPU.

For each model (the default SmolLM2-135M and two tiny random Llamas) and method (full, lora,
qlora), a fresh subprocess builds the model, runs real optimizer steps (forward with tuneforge's
supervised loss, backward, AdamW step, zero_grad) on random tokens at the given batch and length,
and reports its resident memory above the process's baseline before the model existed:

- glibc is told to serve every allocation over 64 KiB with mmap (``MALLOC_MMAP_THRESHOLD_``), so
  freed tensors leave the resident set at once and RSS tracks live tensors;
- qlora replaces every decoder ``nn.Linear`` with ``bitsandbytes.nn.Linear4bit`` (NF4,
  ``compress_statistics=True``, i.e. double quantization) and wraps it with peft LoRA; the fp32
  weights are dropped before measuring, and the peak counter (VmHWM) is reset after loading;
- the prediction is ``estimate_memory(..., dtype="float32", device="cpu")``: no CUDA context.

Target: |error| <= 15% for every row.

    .venv/bin/python bench/planner_accuracy.py            # all models, 2 steps each
    .venv/bin/python bench/planner_accuracy.py --quick    # tiny models only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import DEFAULT_HOME, markdown_table, report

TINY_MODELS = {
    # name: (hidden, intermediate, layers, heads, kv heads, vocab, tied)
    "tiny-gqa-tied": (256, 688, 4, 8, 2, 8000, True),
    "tiny-mha-untied": (512, 1376, 6, 8, 8, 16000, False),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build(model_name: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if model_name == "default":
        folder = DEFAULT_HOME / "models" / "SmolLM2-135M-Instruct"
        config = AutoConfig.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="sdpa"
        )
        # from_pretrained maps the safetensors file; pages it reads would stay in RSS as file
        # pages. Copy every tensor to ordinary memory so RSS counts what training holds.
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
        return model, config.to_dict()
    h, i, layers, heads, kv, vocab, tied = TINY_MODELS[model_name]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=i,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config), config.to_dict()


def _quantize_linears(model) -> None:
    """Swap every decoder nn.Linear for an NF4 Linear4bit (double quantization), on CPU."""
    import bitsandbytes as bnb
    import torch

    decoder = model.get_decoder()
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                quantized = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.float32,
                    compress_statistics=True,
                    quant_type="nf4",
                )
                quantized.weight = bnb.nn.Params4bit(
                    child.weight.data.clone(),
                    requires_grad=False,
                    quant_type="nf4",
                    compress_statistics=True,
                )
                setattr(parent, name, quantized.to("cpu"))
                del child


def child(model_name: str, method: str, batch: int, length: int, steps: int) -> dict:
    """Run in a fresh process: build, train ``steps`` steps, return memory in bytes."""
    import gc

    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.train.loss import supervised_loss_sum

    torch.set_num_threads(2)
    torch.ones(8, 8) @ torch.ones(8, 8)  # thread pools and allocator warm before the baseline
    base_kib = _status_kib("VmRSS")
    model, config = _build(model_name)
    model.config.use_cache = False
    if method == "qlora":
        _quantize_linears(model)
    if method != "full":
        for param in model.parameters():
            param.requires_grad_(False)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    model.train()
    with torch.no_grad():  # fault in weights that from_pretrained left memory-mapped
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    loaded_kib = _status_kib("VmRSS")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = config["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, vocab, (batch, length), generator=generator)
        loss = supervised_loss_sum(model, {"input_ids": ids, "labels": ids.clone()})
        (loss / ids[:, 1:].numel()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak_kib = _status_kib("VmHWM")
    return {
        "config": config,
        "weights": (loaded_kib - base_kib) * 1024,
        "resident": (_status_kib("VmRSS") - base_kib) * 1024,  # weights + optimizer states
        "peak": (peak_kib - base_kib) * 1024,
    }


def run_case(model_name: str, method: str, batch: int, length: int, steps: int) -> dict:
    """One case in a fresh subprocess (clean RSS), then the planner's prediction."""
    from tuneforge.plan import estimate_memory
    from tuneforge.plan.config import ModelConfig

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TOKENIZERS_PARALLELISM="false")
    args = [sys.executable, __file__, "--child", model_name, method, str(batch), str(length)]
    out = subprocess.run([*args, str(steps)], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{model_name} {method} failed:\n{out.stderr[-3000:]}")
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    config = ModelConfig.from_dict(measured["config"], model_name)
    plan = estimate_memory(
        config,
        method=method,
        batch_size=batch,
        max_length=length,
        dtype="float32",
        lora_r=16,
        device="cpu",
    )
    static = (
        plan.components["weights"] + plan.components["quantization constants (NF4, double quant)"]
    )
    static += plan.components["LoRA parameters (fp32)"]
    optimizer_states = plan.components["optimizer states (adamw)"]
    return {
        "model": model_name,
        "method": method,
        "tokens": f"{batch} x {length}",
        "pred_weights": static,
        "meas_weights": measured["weights"],
        "pred_resident": static + optimizer_states,
        "meas_resident": measured["resident"],
        "predicted": plan.total,
        "measured": measured["peak"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per case")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, method, batch, length, steps = args.child
        print(json.dumps(child(name, method, int(batch), int(length), int(steps))))
        return
    cases = [(name, 4, 256) for name in TINY_MODELS]
    if not args.quick:
        cases.insert(0, ("default", 2, 512))
    rows = []
    for name, batch, length in cases:
        for method in ("full", "lora", "qlora"):
            result = run_case(name, method, batch, length, args.steps)
            error = 100.0 * (result["predicted"] - result["measured"]) / result["measured"]
            rows.append(
                [
                    result["model"],
                    result["method"],
                    result["tokens"],
                    f"{result['pred_weights'] / 2**20:.0f}",
                    f"{result['meas_weights'] / 2**20:.0f}",
                    f"{result['pred_resident'] / 2**20:.0f}",
                    f"{result['meas_resident'] / 2**20:.0f}",
                    f"{result['predicted'] / 2**20:.0f}",
                    f"{result['measured'] / 2**20:.0f}",
                    f"{error:+.1f}%",
                    "yes" if abs(error) <= 15 else "NO",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    headers = [
        "model",
        "method",
        "batch x length",
        "weights pred (MiB)",
        "weights meas (MiB)",
        "between steps pred (MiB)",
        "between steps meas (MiB)",
        "peak pred (MiB)",
        "peak meas (MiB)",
        "error",
        "within 15%",
    ]
    body = (
        "Peak resident memory of a real training step above the process baseline (CPU, fp32, "
        f"AdamW, LoRA r=16 on every linear, {args.steps} optimizer steps, fresh process per "
        "row) against `estimate_memory(..., dtype='float32', device='cpu')`.\n\n"
        + markdown_table(headers, rows)
        + "\n\n'between steps' is the resident memory after `zero_grad`: weights + optimizer "
        "states. The measured excess there (tens of MiB) is CPU math-library workspace and "
        "allocator slack; the planner counts a 24 MiB floor of it on CPU (below every row's "
        "measured excess), and the rest is most of the error."
    )
    report("planner_accuracy", "Memory planner: predicted vs measured peak", body)


if __name__ == "__main__":
    main()
