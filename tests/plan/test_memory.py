"""The memory plan: published claims, sharding, quantization constants, the table and the CLI."""

from __future__ import annotations

import pytest
import torch

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.models.device import native_bf16
from tuneforge.plan import estimate_memory, gib, load_model_config, parse_memory
from tuneforge.plan.memory import _nf4_bytes

GB48, GB80 = parse_memory("48GB"), parse_memory("80GB")


def test_65b_qlora_fits_one_48gb_gpu():
    # QLoRA (Dettmers et al. 2023): a 65B model fine-tunes on a single 48 GB GPU.
    plan = estimate_memory(
        load_model_config("llama-65b"),
        method="qlora",
        batch_size=1,
        max_length=512,
        lora_r=16,  # the paper's rank on every linear
        gradient_checkpointing=True,
    )
    assert plan.fits(GB48)
    assert round(gib(plan.total), 1) == 37.0  # docs/plan.md
    # 4-bit weights dominate: ~0.5 byte per parameter plus 0.127 bits of constants.
    assert 30 < gib(plan.components["weights"]) < 33
    assert 0.9 < gib(plan.components["quantization constants (NF4, double quant)"]) < 1.0


def test_7b_full_adamw_mixed_precision_does_not_fit_one_80gb_gpu():
    config = load_model_config("llama-7b")
    plan = estimate_memory(config, method="full", batch_size=1, max_length=512)
    assert not plan.fits(GB80)
    # 16 bytes per parameter (fp32 weights, gradients, two Adam moments) alone exceed 80 GiB.
    static = sum(plan.components[k] for k in ("weights", "optimizer states (adamw)"))
    assert static + plan.components["gradients (fp32)"] == 16 * 6_738_415_616
    # ...and 8 GPUs with FSDP bring it well under.
    sharded = estimate_memory(
        config, method="full", batch_size=1, max_length=512, gpus=8, strategy="fsdp"
    )
    assert sharded.fits(GB80) and sharded.total < plan.total / 4


def test_ddp_replicates_and_fsdp_shards():
    config = load_model_config("llama-13b")
    kwargs = dict(method="lora", batch_size=2, max_length=256)
    single = estimate_memory(config, **kwargs)
    ddp = estimate_memory(config, gpus=4, strategy="ddp", **kwargs)
    fsdp = estimate_memory(config, gpus=4, strategy="fsdp", **kwargs)
    assert ddp.components["weights"] == single.components["weights"]
    assert ddp.components["activations"] == single.components["activations"]
    assert fsdp.components["weights"] == -(-single.components["weights"] // 4)
    assert fsdp.total < single.total < ddp.total


def test_gradient_checkpointing_and_8bit_optimizer_save_memory():
    config = load_model_config("llama-7b")
    kwargs = dict(method="lora", batch_size=4, max_length=1024)
    plain = estimate_memory(config, **kwargs)
    checkpointed = estimate_memory(config, gradient_checkpointing=True, **kwargs)
    assert checkpointed.components["activations"] < plain.components["activations"] / 5
    eight_bit = estimate_memory(config, optimizer="paged_adamw_8bit", **kwargs)
    assert (
        eight_bit.components["optimizer states (paged_adamw_8bit)"]
        < 0.26 * (plain.components["optimizer states (adamw)"])
    )


def test_nf4_constants_equal_bitsandbytes():
    import bitsandbytes as bnb
    import torch

    weight = torch.randn(96, 200)  # 19,200 weights: 300 blocks of 64, 2 second-level blocks
    param = bnb.nn.Params4bit(
        weight, requires_grad=False, quant_type="nf4", compress_statistics=True
    )
    param = param.to("cpu")
    state = param.quant_state
    constants = (
        state.absmax.numel() * state.absmax.element_size()
        + state.state2.absmax.numel() * 4
        + state.state2.code.numel() * 4
        + state.code.numel() * 4
        + 4  # offset
    )
    assert _nf4_bytes(weight.numel()) == (param.numel(), constants)


def test_parse_memory_and_errors():
    assert parse_memory("80GB") == parse_memory("80 GiB") == 80 * 2**30
    assert parse_memory("24576MB") == 24 * 2**30
    with pytest.raises(ConfigError, match="like 80GB"):
        parse_memory("lots")
    config = load_model_config("llama-7b")
    with pytest.raises(ConfigError, match="'none' \\(one process\\) but there are 2 processes"):
        estimate_memory(config, method="full", batch_size=1, max_length=8, gpus=2, strategy="none")
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, adamw_8bit"):
        estimate_memory(config, method="lora", batch_size=1, max_length=8, optimizer="adamw8bit")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        estimate_memory(config, method="full", batch_size=0, max_length=8)


def test_table_sums_to_the_peak():
    plan = estimate_memory(
        load_model_config("llama-7b"), method="lora", batch_size=2, max_length=64
    )
    table = plan.table(GB80)
    assert "predicted peak" in table and "FITS" in table
    assert plan.total == sum(plan.components.values())
    assert plan.components["freed during backward (overlap)"] <= 0


def test_cli_plan_prints_the_breakdown(capsys):
    code = main(
        [
            "plan",
            "--model",
            "llama-7b",
            "--method",
            "full",
            "--batch-size",
            "1",
            "--max-length",
            "512",
            "--gpu-memory",
            "80GB",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "DOES NOT FIT: short by" in out and "optimizer states (adamw)" in out


def test_cli_plan_reports_a_bad_model_on_one_line(capsys):
    code = main(["plan", "--model", "nope.json", "--method", "lora", "--batch-size", "1",
                 "--max-length", "8"])  # fmt: skip
    assert code == 2
    assert "nope.json: no such config file" in capsys.readouterr().err


def test_auto_strategy_and_dtype_follow_the_training_rules():
    config = load_model_config("llama-7b")
    kwargs = dict(method="lora", batch_size=1, max_length=64)
    assert estimate_memory(config, gpus=2, **kwargs).settings["strategy"] == "ddp"
    assert estimate_memory(config, **kwargs).settings["strategy"] == "none"
    assert estimate_memory(config, dtype="auto", **kwargs).settings["dtype"] == "bfloat16"
    on_cpu = estimate_memory(config, dtype="auto", device="cpu", **kwargs)
    assert on_cpu.settings["dtype"] == "float32"


def test_cli_plan_speaks_the_tuning_vocabulary(capsys):
    from tuneforge.tuning_vocabulary import LORA_R

    args = ["plan", "--model", "llama-7b", "--batch-size", "1", "--max-length", "64"]
    assert main([*args, "--optimizer", "adamw_8bit", "--dtype", "auto", "--strategy", "none"]) == 0
    out = capsys.readouterr().out
    assert f"lora r={LORA_R} | batch 1 x 64 tokens" in out  # method and rank: train's defaults
    assert "| bfloat16 | adamw_8bit" in out and "1 x cuda (none)" in out
    assert "optimizer states (adamw_8bit)" in out and "FITS" not in out
    assert main([*args, "--device", "cpu", "--gpus", "2", "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    cpu_dtype = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"  # as train's run
    assert f"| {cpu_dtype} |" in out and "2 x cpu (ddp)" in out and "FITS: headroom" in out
    with pytest.raises(SystemExit):
        main([*args, "--optimizer", "adamw8bit"])
    assert "invalid choice: 'adamw8bit'" in capsys.readouterr().err


def test_cli_plan_reads_a_training_config(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: llama-7b\ndata: {path: unused.jsonl, max_length: 128}\nmethod: qlora\n"
        "batch_size: 2\nlora_r: 4\npacking: true\n"
    )
    assert main(["plan", "--config", str(path), "--lora-r", "16"]) == 0
    out = capsys.readouterr().out
    assert "qlora r=16 | batch 2 x 128 tokens (no padding mask)" in out
