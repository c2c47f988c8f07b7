"""Whole runs through the CLI: outputs, run-directory safety, failed starts, collapse.

Stopped runs (signals, SIGKILL) and their resume: test_interruptions.py; what --resume accepts:
test_resume.py."""

from __future__ import annotations

import json

import pytest
from train_cli import train_argv

from tuneforge.cli import main
from tuneforge.train.metrics import read_metrics


def test_lora_run_writes_every_output_and_refuses_overwrite(
    tiny_model_dir, chat_data, tmp_path, capsys
):
    out = tmp_path / "run"
    extra = ("--method", "lora", "--max-steps", "3", "--val-fraction", "0.1", "--packing")
    assert main(train_argv(tiny_model_dir, chat_data, out, *extra)) == 0
    printed = capsys.readouterr().out
    assert "trainable of" in printed
    assert "optimizer states" in printed and "activations" in printed
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    resolved = (out / "config.yaml").read_text()
    assert "method: lora" in resolved and "q_proj" in resolved and "packing: true" in resolved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["tokens_per_s"] > 0
    logged = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert any("val_loss" in r for r in logged)

    assert main(train_argv(tiny_model_dir, chat_data, out, *extra)) == 2
    assert "not empty; pass --force" in capsys.readouterr().err
    assert main(train_argv(tiny_model_dir, chat_data, out, *extra, "--force")) == 0


def test_the_printed_plan_is_the_plan_of_the_run(tiny_model_dir, chat_data, tmp_path, capsys):
    """The table a run prints equals ``tuneforge plan`` on its config.yaml with its device and
    measured supervised fraction: bf16 on CPU at 128 tokens picks eager attention, packing
    drops the padding mask, grad_accum and rank are the run's."""
    from tuneforge.data import DataConfig, prepare_data
    from tuneforge.models.loading import load_tokenizer

    out = tmp_path / "run"
    extra = ("--max-steps", "1", "--dtype", "bfloat16", "--packing", "--grad-accum", "2",
             "--lora-r", "4", "--optimizer", "adamw_8bit")  # fmt: skip
    assert main(train_argv(tiny_model_dir, chat_data, out, *extra)) == 0
    printed = capsys.readouterr().out
    tokenizer = load_tokenizer(tiny_model_dir)
    data = DataConfig(path=str(chat_data), max_length=128)
    fraction = prepare_data(data, tokenizer).report.supervised_share
    assert 0 < fraction < 1
    args = ["plan", "--config", str(out / "config.yaml"), "--device", "cpu"]
    assert main([*args, "--supervised-fraction", repr(fraction)]) == 0
    planned = capsys.readouterr().out.strip()
    assert planned in printed
    for words in ("lora r=4 | batch 4 x 128 tokens (no padding mask) x grad_accum 2",
                  "| bfloat16 | adamw_8bit", "1 x cpu (none) | attention eager",
                  f"loss on {100 * fraction:.2f}% of tokens", "predicted peak"):  # fmt: skip
        assert words in planned, words


def test_auto_dtype_trains_in_bf16_where_the_cpu_computes_it(
    tiny_model_dir, chat_data, tmp_path, capsys
):
    """``dtype: auto`` is the rule decoding uses: bf16 on a CPU with AVX512-BF16 / AMX (1.6-1.8x
    the fp32 tokens/s of compare's RAFT run here), fp32 elsewhere; the printed plan agrees."""
    import torch

    from tuneforge.models.device import native_bf16

    expected = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"
    out = tmp_path / "run"
    assert (
        main(train_argv(tiny_model_dir, chat_data, out, "--max-steps", "1", "--dtype", "auto")) == 0
    )
    assert f"| {expected} | adamw" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["compute_dtype"] == expected
    assert "dtype: auto" in (out / "config.yaml").read_text()  # resumes as auto, not pinned


@pytest.mark.parametrize(("dtype", "multiple"), [("bfloat16", 64), ("float32", 1)])
def test_bf16_runs_on_cpu_round_batch_widths_up_to_64(
    tiny_model_dir, chat_data, tmp_path, monkeypatch, dtype, multiple
):
    """oneDNN makes a kernel per new bf16 shape (bench/results/train_shapes.md): unpacked bf16
    batches on CPU are padded to a multiple of 64 tokens; fp32 batches stay as wide as their
    longest row."""
    import tuneforge.data

    asked, make = [], tuneforge.data.make_batches

    def spied(*args, **kwargs):
        asked.append(kwargs.get("width_multiple", 1))
        return make(*args, **kwargs)

    monkeypatch.setattr(tuneforge.data, "make_batches", spied)
    argv = train_argv(tiny_model_dir, chat_data, tmp_path / "run", "--max-steps", "1")
    assert main([*argv, "--dtype", dtype]) == 0
    assert asked and set(asked) == {multiple}


def test_skip_invalid_is_the_option_the_reader_names(tiny_model_dir, chat_data, tmp_path, capsys):
    import re

    data = tmp_path / "with_a_bad_line.jsonl"
    data.write_text(chat_data.read_text() + "{not json\n", encoding="utf-8")
    common = ("--max-steps", "1", "--format", "messages", "--truncation", "drop")
    assert main(train_argv(tiny_model_dir, data, tmp_path / "a", *common)) == 2
    error = capsys.readouterr().err
    assert f"{data}:65: invalid JSON" in error
    suggested = re.search(r"pass (--[a-z-]+) to skip it", error).group(1)
    assert suggested == "--skip-invalid"
    assert main(train_argv(tiny_model_dir, data, tmp_path / "b", *common, suggested)) == 0
    assert "invalid skipped: 1" in capsys.readouterr().out
    written = (tmp_path / "b" / "config.yaml").read_text()
    assert "skip_invalid: true" in written and "truncation: drop" in written


def test_an_old_flat_config_yaml_still_resumes(tiny_model_dir, chat_data, tmp_path):
    """Run folders written before ``data:`` nested hold flat keys; --resume must read them."""
    import yaml

    out = tmp_path / "run"
    extra = ("--max-steps", "2", "--save-every", "1", "--val-fraction", "0.1")
    assert main(train_argv(tiny_model_dir, chat_data, out, *extra)) == 0
    nested = yaml.safe_load((out / "config.yaml").read_text())
    data = nested.pop("data")
    old = {**nested, "data": data.pop("path"), "max_length": data.pop("max_length"),
           "train_on_inputs": data.pop("train_on_inputs"),
           "val_fraction": data.pop("val_fraction")}  # fmt: skip
    old["max_steps"] = 3
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["val_fraction"] == 0.1


def test_demo_data_names_resolve_on_the_command_line(tiny_model_dir, tmp_path):
    import yaml

    out = tmp_path / "demo"
    assert (
        main(
            train_argv(tiny_model_dir, "demo:test", out, "--max-steps", "1", "--max-length", "1024")
        )
        == 0
    )
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["data"]["path"].endswith("json_orders/test.jsonl")


def test_full_run_saves_a_loadable_model(tiny_model_dir, chat_data, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    assert (
        main(train_argv(tiny_model_dir, chat_data, out, "--method", "full", "--max-steps", "2"))
        == 0
    )
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "model" / "tokenizer.json").exists()
    AutoModelForCausalLM.from_pretrained(out / "model")


def test_resume_without_checkpoint_is_refused(tiny_model_dir, chat_data, tmp_path, capsys):
    assert main(train_argv(tiny_model_dir, chat_data, tmp_path / "none", "--resume")) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_a_failed_start_leaves_nothing_and_the_retry_needs_no_force(
    tiny_model_dir, chat_data, tmp_path, capsys
):
    out = tmp_path / "run"
    missing = tmp_path / "missing.jsonl"
    assert main(train_argv(tiny_model_dir, missing, out, "--max-steps", "1")) == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    no_model = tmp_path / "no-model"
    no_model.mkdir()
    assert main(train_argv(no_model, chat_data, out, "--max-steps", "1")) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())

    assert main(train_argv(tiny_model_dir, chat_data, out, "--max-steps", "1")) == 0  # no --force
    finished = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # --force with a bad input does not wipe the run it would have replaced
    assert main(train_argv(tiny_model_dir, missing, out, "--max-steps", "1", "--force")) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == finished


def test_collapse_without_nan_stops_the_run(tiny64_dir, chat_data, tmp_path, capsys):
    """lr 1e9 flattens the tiny model's output in one step: the loss sits at ln(400) with a zero
    gradient. That is not 'completed': the run stops, saves no adapter and says what to change."""
    import math

    from tuneforge.train.checkpoint import latest_checkpoint

    out = tmp_path / "run"
    extra = ("--lr", "1e9", "--max-steps", "8", "--save-every", "1")
    assert main(train_argv(tiny64_dir, chat_data, out, *extra)) == 2
    error = capsys.readouterr().err
    assert "collapsed" in error and f"ln(400) = {math.log(400):.4f}" in error
    assert "Lower 'lr'" in error
    assert not (out / "adapter").exists() and not (out / "summary.json").exists()
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    # logged: step 1 and the flat steps 2, 3; step 4, the third flat one, stopped the run
    assert len(losses) == 3 and all(abs(x - math.log(400)) < 1e-3 for x in losses[1:])
    # Step 2 ran on the weights of step 1, already collapsed: no checkpoint of them is left.
    assert latest_checkpoint(out) is None


def test_the_collapse_guard_lets_a_healthy_run_start_at_the_uniform_loss(
    tiny_model_dir, chat_data, tmp_path
):
    """The tiny model starts with near-uniform logits: its loss is within the guard's tolerance
    of ln(400), but its gradient is real, so the run trains on to the end."""
    from tuneforge.train.guards import CollapseWatch

    out = tmp_path / "run"
    assert main(train_argv(tiny_model_dir, chat_data, out, "--max-steps", "4")) == 0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    watch = CollapseWatch(vocab_size=400)
    assert abs(rows[0]["loss"] - watch.uniform_loss) <= watch.LOSS_TOLERANCE * watch.uniform_loss
    assert all(r["grad_norm"] > 1e-3 for r in rows)
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == "completed"


@pytest.mark.slow
def test_lr_1e9_on_the_default_model_stops_as_a_collapse(
    default_model_dir, chat_data, tmp_path, capsys
):
    """The report's reproduction: the default model at lr 1e9 sits at ln(49152) = 10.8027 with
    a zero gradient from step 2 on; it used to end 'completed' with a useless adapter."""
    out = tmp_path / "run"
    args = ["train", "--model", str(default_model_dir), "--data", str(chat_data), "--out",
            str(out), "--batch-size", "2", "--max-length", "64", "--lr", "1e9", "--max-steps",
            "8", "--no-progress", "--num-threads", "2"]  # fmt: skip
    assert main(args) == 2
    assert "ln(49152) = 10.8027" in capsys.readouterr().err
    assert not (out / "adapter").exists()
