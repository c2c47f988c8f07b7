"""``--resume`` continues the run that was started, or says why it cannot.

A change that breaks exactness (data path or content, batch, accumulation, seed, lr, model,
method, LoRA shape, data options) is refused naming the field, before anything is written; a
finished run says it is finished; raising ``max_steps`` extends a run with the schedule rebuilt
for the new total (no lr 0.0 step).
"""

from __future__ import annotations

import shutil

import pytest
from train_cli import train_argv

from tuneforge.cli import main
from tuneforge.train.metrics import read_metrics


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stopped_run(tiny_model_dir, chat_data, tmp_path_factory):
    """A run of 4 planned steps stopped after 2 (its checkpoint at step 2 and no summary)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert (
        main(train_argv(tiny_model_dir, chat_data, out, "--max-steps", "2", "--save-every", "1"))
        == 0
    )
    (out / "summary.json").unlink()  # as a run killed after its step-2 checkpoint leaves it
    shutil.rmtree(out / "adapter")
    return out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--data", "OTHER"), "'data.path'"),
        (("--batch-size", "2"), "'batch_size' is 4 in"),
        (("--grad-accum", "2"), "'grad_accum'"),
        (("--lr", "1e-2"), "'lr' is 0.001 in"),
        (("--seed", "1"), "'seed'"),
        (("--max-length", "64"), "'data.max_length'"),
        (("--lora-r", "4"), "'lora_r'"),
        (("--method", "full"), "'method'"),
        (("--packing",), "'packing'"),
    ],
)
def test_resume_refuses_a_changed_setting_naming_it(
    change, named, stopped_run, tiny_model_dir, chat_data, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    before = _files(run)
    other = tmp_path / "other.jsonl"
    other.write_bytes(chat_data.read_bytes())
    change = tuple(str(other) if value == "OTHER" else value for value in change)
    args = train_argv(
        tiny_model_dir, chat_data, run, "--max-steps", "4", "--save-every", "1", *change
    )
    assert main([*args, "--resume"]) == 2
    error = capsys.readouterr().err
    assert named in error and str(run / "config.yaml") in error
    assert "--resume" in error  # how to resume it as it was
    assert _files(run) == before  # nothing written


def test_resume_refuses_data_whose_content_changed(
    stopped_run, tiny_model_dir, chat_data, tmp_path, capsys
):
    data = tmp_path / "train.jsonl"
    data.write_bytes(chat_data.read_bytes())
    run = tmp_path / "run"
    assert main(train_argv(tiny_model_dir, data, run, "--max-steps", "2", "--save-every", "1")) == 0
    (run / "summary.json").unlink()
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[1:]) + "\n")  # same path, one example fewer
    assert main([*train_argv(tiny_model_dir, data, run, "--max-steps", "4"), "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"{data}: the data changed since the run started" in error
    assert "sha256" in error


def test_a_finished_run_says_so_instead_of_restarting(tiny_model_dir, chat_data, tmp_path, capsys):
    run = tmp_path / "run"
    args = train_argv(tiny_model_dir, chat_data, run, "--max-steps", "3", "--save-every", "2")
    assert main(args) == 0
    adapter = _files(run / "adapter")
    assert main([*args, "--resume"]) == 2
    error = capsys.readouterr().err
    assert f"{run} is finished (3 steps" in error
    assert "--max-steps above 3" in error
    assert _files(run / "adapter") == adapter


def test_extending_max_steps_continues_with_the_schedule_of_the_new_total(
    tiny_model_dir, chat_data, tmp_path
):
    """Steps 5-8 of a 4-step run extended to 8 get the lrs of an 8-step run (cosine, no
    warmup): as if the run had been planned for 8 steps, and no step at lr 0.0."""
    common = ("--schedule", "cosine", "--warmup-ratio", "0", "--save-every", "0")
    extended, planned = tmp_path / "extended", tmp_path / "planned"
    assert main(train_argv(tiny_model_dir, chat_data, extended, "--max-steps", "4", *common)) == 0
    args = train_argv(tiny_model_dir, chat_data, extended, "--max-steps", "8", *common)
    assert main([*args, "--resume"]) == 0
    assert main(train_argv(tiny_model_dir, chat_data, planned, "--max-steps", "8", *common)) == 0

    def lrs(run):
        return {r["step"]: r["lr"] for r in read_metrics(run / "metrics.jsonl") if "lr" in r}

    got, expected = lrs(extended), lrs(planned)
    assert sorted(got) == list(range(1, 9))
    assert all(got[step] > 0 for step in got)
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-12), step
    assert "max_steps: 8" in (extended / "config.yaml").read_text()
