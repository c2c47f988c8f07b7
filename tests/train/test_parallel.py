"""Two real processes on CPU (gloo) under torchrun, against one process with the same global batch.

Per strategy (ddp, fsdp) and method (lora, full): the loss at every step, the validation loss
and the saved adapter/model match a single-process run whose grad_accum is world_size times
larger. A checkpoint written by two FSDP processes resumes in one process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.train.loop import rank_share
from tuneforge.train.metrics import read_metrics
from tuneforge.train.parallel import Parallel, resolve_strategy

LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-5
ADAPTER = "adapter/adapter_model.safetensors"
SAVED = {"lora": ADAPTER, "qlora": ADAPTER, "full": "model/model.safetensors"}


def _args(model_dir, data, out, method: str, *extra) -> list[str]:
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--method", method, "--batch-size", "4", "--max-length", "128", "--lr", "1e-2",
        "--schedule", "constant", "--warmup-ratio", "0", "--val-fraction", "0.1",
        "--dtype", "float32", "--no-progress", "--num-threads", "1", *extra,
    ]  # fmt: skip


def _torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes), "-m", "tuneforge", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _losses(run: Path) -> tuple[list[float], list[float]]:
    rows = read_metrics(run / "metrics.jsonl")
    return [r["loss"] for r in rows if "loss" in r], [
        r["val_loss"] for r in rows if "val_loss" in r
    ]


def _max_difference(a: Path, b: Path) -> float:
    left, right = load_file(str(a)), load_file(str(b))
    assert set(left) == set(right)
    return max(float((left[k] - right[k]).abs().max()) for k in left)


@pytest.fixture(scope="module")
def models(tiny_model_dir, tiny64_dir) -> dict[str, Path]:
    """The model per method (bitsandbytes quantizes in blocks of 64 inputs)."""
    return {"lora": tiny_model_dir, "full": tiny_model_dir, "qlora": tiny64_dir}


@pytest.fixture(scope="module")
def single_runs(models, chat_data, tmp_path_factory) -> dict[str, Path]:
    """One-process reference runs (one per method) with grad_accum 4, one epoch."""
    runs = {}
    for method, model_dir in models.items():
        out = tmp_path_factory.mktemp("single") / method
        assert main(_args(model_dir, chat_data, out, method, "--grad-accum", "4")) == 0
        runs[method] = out
    return runs


@pytest.mark.parametrize(
    ("strategy", "method"),
    [("ddp", "lora"), ("ddp", "full"), ("ddp", "qlora"), ("fsdp", "lora"), ("fsdp", "full")],
)
def test_two_processes_match_one_process(
    strategy, method, single_runs, models, chat_data, tmp_path
):
    out = tmp_path / f"{strategy}-{method}"
    args = _args(models[method], chat_data, out, method, "--grad-accum", "2")
    done = _torchrun([*args, "--strategy", strategy])
    assert f"strategy {strategy}: 2 processes" in done.stdout
    assert f"\n2 x cpu ({strategy}) | attention sdpa |" in done.stdout  # the plan of this run
    assert done.stdout.count("done: ") == 1  # only rank 0 reports

    reference = single_runs[method]
    train_ref, val_ref = _losses(reference)
    train_got, val_got = _losses(out)
    # 57 training examples = 15 micro-batches of 4: 4 steps, the last one uneven across ranks.
    assert len(train_got) == len(train_ref) == 4
    assert max(abs(a - b) for a, b in zip(train_got, train_ref, strict=True)) <= LOSS_TOLERANCE
    assert max(abs(a - b) for a, b in zip(val_got, val_ref, strict=True)) <= LOSS_TOLERANCE
    assert train_got[-1] < train_got[0]
    difference = _max_difference(reference / SAVED[method], out / SAVED[method])
    assert difference <= WEIGHT_TOLERANCE


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dpo_on_two_processes_matches_one_process(
    strategy, tiny_model_dir, preference_data, tmp_path
):
    """The reference forward (adapter disabled) runs inside the wrapped module: the losses and
    the preference metrics equal a one-process run with twice the accumulation."""
    common = ("--objective", "dpo", "--max-steps", "3", "--lr", "1e-3")
    single = tmp_path / "single"
    args = _args(tiny_model_dir, preference_data, single, "lora", *common, "--grad-accum", "2")
    assert main(args) == 0
    out = tmp_path / strategy
    args = _args(tiny_model_dir, preference_data, out, "lora", *common, "--strategy", strategy)
    _torchrun(args)
    rows = {
        run: [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
        for run in (single, out)
    }
    assert len(rows[out]) == len(rows[single]) == 3
    for got, want in zip(rows[out], rows[single], strict=True):
        for name in ("loss", "reward_margin", "preference_accuracy", "chosen_logps"):
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=LOSS_TOLERANCE), name
    assert _max_difference(single / ADAPTER, out / ADAPTER) <= WEIGHT_TOLERANCE


def test_fsdp_checkpoint_resumes_in_one_process(tiny_model_dir, chat_data, tmp_path):
    common = ("--max-steps", "4", "--save-every", "1")
    reference = tmp_path / "reference"
    args = _args(tiny_model_dir, chat_data, reference, "lora", *common, "--grad-accum", "2")
    assert main(args) == 0
    # FSDP on 2 processes stops after 2 steps; one process continues to 4 from its checkpoint.
    resumed = tmp_path / "resumed"
    args = _args(tiny_model_dir, chat_data, resumed, "lora", "--max-steps", "2", "--save-every")
    _torchrun([*args, "1", "--strategy", "fsdp"])
    assert (resumed / "checkpoints" / "step-2" / "rng-rank1.pt").exists()
    again = _args(tiny_model_dir, chat_data, resumed, "lora", *common, "--grad-accum", "2")
    assert main([*again, "--resume"]) == 0
    assert _losses(resumed)[0] == pytest.approx(_losses(reference)[0], abs=LOSS_TOLERANCE)
    assert _max_difference(reference / SAVED["lora"], resumed / SAVED["lora"]) <= WEIGHT_TOLERANCE


def test_strategy_needs_a_launcher_and_fsdp_refuses_qlora(
    tiny_model_dir, chat_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main(_args(tiny_model_dir, chat_data, tmp_path / "r", "lora", "--strategy", "fsdp"))
    assert code == 2
    assert "torchrun --nproc-per-node N" in capsys.readouterr().err
    assert resolve_strategy("auto", "lora", 1) == "none"
    assert resolve_strategy("auto", "lora", 2) == "ddp"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="use strategy ddp for qlora"):
        resolve_strategy("fsdp", "qlora", 2)
    with pytest.raises(ConfigError, match="'none' \\(one process\\) but there are 2 processes"):
        resolve_strategy("none", "lora", 2)


def test_rank_share_pads_uneven_steps_with_zero_weight():
    group = [{"input_ids": torch.full((1, 2), i)} for i in range(3)]
    first = rank_share(group, Parallel("ddp", rank=0, world_size=2))
    second = rank_share(group, Parallel("ddp", rank=1, world_size=2))
    assert [(int(b["input_ids"][0, 0]), w) for b, w in first] == [(0, 1.0), (2, 1.0)]
    assert [(int(b["input_ids"][0, 0]), w) for b, w in second] == [(1, 1.0), (0, 0.0)]


def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step(
    tiny_model_dir, chat_data, tmp_path
):
    """torchrun passes SIGTERM on to its workers: they agree on one step boundary, write one
    checkpoint together (rank 1 adds its RNG state), exit 143, and one process resumes it."""
    import signal
    import time

    from tuneforge.train.checkpoint import latest_checkpoint

    out = tmp_path / "run"
    args = _args(tiny_model_dir, chat_data, out, "lora", "--max-steps", "500", "--strategy", "ddp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "tuneforge", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "metrics.jsonl").exists() or len(_losses(out)[0]) < 2:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no step was logged"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    last = len(_losses(out)[0])
    assert last < 500
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == f"step-{last}", err[-3000:]
    assert (checkpoint / "rng.pt").exists() and (checkpoint / "rng-rank1.pt").exists()
    assert err.count(f"SIGTERM: stopped after step {last} of 500") == 1  # rank 0 reports
    # One process, the same micro-batches per step (grad_accum 1 x 2 processes = 2 x 1).
    again = _args(tiny_model_dir, chat_data, out, "lora", "--grad-accum", "2")
    assert main([*again, "--max-steps", str(last + 1), "--resume"]) == 0
    assert len(_losses(out)[0]) == last + 1
