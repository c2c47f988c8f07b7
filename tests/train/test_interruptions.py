"""Runs stopped from outside, as users and schedulers stop them: real signals to a real process.

SIGINT (Ctrl-C) and SIGTERM (a scheduler, ``kill``) write a checkpoint at the next step boundary
and exit 130 / 143; SIGKILL at random steps (several seeds) loses at most the steps since the last
checkpoint. Every resume ends on exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.cli import main
from tuneforge.train.checkpoint import latest_checkpoint
from tuneforge.train.metrics import read_metrics

STEPS = 40
ADAPTER = Path("adapter") / "adapter_model.safetensors"


def _args(model_dir, data, out, *extra) -> list[str]:
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--method", "lora", "--max-steps", str(STEPS), "--batch-size", "4", "--max-length", "128",
        "--lr", "1e-3", "--lora-dropout", "0.1", "--seed", "3", "--no-progress",
        "--num-threads", "1", *extra,
    ]  # fmt: skip


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    code = "import sys; from tuneforge.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _losses(out: Path) -> dict[int, float]:
    if not (out / "metrics.jsonl").exists():
        return {}
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 180
    while not ready():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.002)


def _in_process(args: list[str]) -> int:
    threads = torch.get_num_threads()  # the run sets one thread, like the subprocesses
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def _assert_same_weights(run: Path, reference: Path) -> None:
    got, expected = load_file(str(run / ADAPTER)), load_file(str(reference / ADAPTER))
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@pytest.fixture(scope="module")
def reference(tiny_model_dir, chat_data, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _in_process(_args(tiny_model_dir, chat_data, out)) == 0
    return out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_writes_a_checkpoint_exits_and_the_resume_is_exact(
    signum, code, reference, tiny_model_dir, chat_data, tmp_path
):
    """With the default save settings (no step cadence, a 10-minute clock) a signal at step 3+
    still leaves a checkpoint of the last finished step, and the CLI exits 128 + signal."""
    victim = tmp_path / "victim"
    proc = _cli(_args(tiny_model_dir, chat_data, victim))
    _wait_for(proc, lambda: max(_losses(victim), default=0) >= 3, "step 3")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    last = max(_losses(victim))
    assert last < STEPS  # it stopped mid-run
    checkpoint = latest_checkpoint(victim)
    assert checkpoint is not None and checkpoint.name == f"step-{last}", err[-2000:]
    name = signal.Signals(signum).name
    assert f"{name}: stopped after step {last}" in err and str(checkpoint) in err
    assert "--resume" in err and "Traceback" not in err
    assert not (victim / "summary.json").exists()

    assert _in_process([*_args(tiny_model_dir, chat_data, victim), "--resume"]) == 0
    expected, got = _losses(reference), _losses(victim)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert all(got[step] == expected[step] for step in range(last + 1, STEPS + 1))
    _assert_same_weights(victim, reference)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_step_then_resume_ends_on_the_same_weights(
    seed, reference, tiny_model_dir, chat_data, tmp_path
):
    """Fault injection: SIGKILL lands at a random step (possibly while a checkpoint is being
    written); the newest complete checkpoint resumes to the reference's exact weights."""
    kill_after = random.Random(seed).randint(3, STEPS - 3)
    victim = tmp_path / "victim"
    proc = _cli(_args(tiny_model_dir, chat_data, victim, "--save-every", "2"))
    _wait_for(
        proc,
        lambda: (
            latest_checkpoint(victim) is not None and max(_losses(victim), default=0) >= kill_after
        ),
        f"step {kill_after}",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(_losses(victim)) < STEPS  # it really died mid-run
    resumed_from = int(latest_checkpoint(victim).name.removeprefix("step-"))

    assert (
        _in_process([*_args(tiny_model_dir, chat_data, victim, "--save-every", "2"), "--resume"])
        == 0
    )
    expected, got = _losses(reference), _losses(victim)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert all(got[step] == expected[step] for step in range(resumed_from + 1, STEPS + 1))
    _assert_same_weights(victim, reference)
