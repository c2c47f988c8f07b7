"""DPO and ORPO runs through the CLI and the one ``fit`` loop: metrics, references, starting from
an SFT adapter, resume, and what is refused before anything loads."""

from __future__ import annotations

import json
import math

import pytest
from train_cli import train_argv

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.train import load_config
from tuneforge.train.metrics import read_metrics

PREFERENCE_METRICS = ("reward_margin", "preference_accuracy", "chosen_logps", "rejected_logps")


def _steps(out) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize(
    ("objective", "method"), [("dpo", "lora"), ("orpo", "lora"), ("dpo", "full")]
)
def test_a_preference_run_logs_its_metrics_and_saves_its_output(
    objective, method, tiny_model_dir, preference_data, tmp_path, capsys
):
    out = tmp_path / "run"
    extra = (
        "--objective", objective, "--method", method, "--max-steps", "4", "--val-fraction",
        "0.1", "--eval-every", "2", "--progress",
    )  # fmt: skip
    assert main(train_argv(tiny_model_dir, preference_data, out, *extra)) == 0
    steps = _steps(out)
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert all(math.isfinite(record[name]) for name in PREFERENCE_METRICS)
        assert 0 <= record["preference_accuracy"] <= 1
        assert record["chosen_logps"] < 0 and record["rejected_logps"] < 0
    if objective == "dpo":  # at step 1 the policy is its reference: loss ln 2, no margin
        assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert steps[0]["reward_margin"] == pytest.approx(0, abs=1e-6)
    validations = [r for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in validations] == [2, 4]
    assert all(f"val_{name}" in validations[0] for name in PREFERENCE_METRICS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == objective
    expected_reference = {"lora": "base", "full": "precomputed"}[method]
    assert summary.get("reference") == (expected_reference if objective == "dpo" else None)
    assert (out / ("adapter" if method == "lora" else "model")).is_dir()
    captured = capsys.readouterr()
    assert "acc=" in captured.err and "margin=" in captured.err  # the progress line
    assert "pairs: 36 train, 4 validation" in captured.out  # the data report
    assert "pairs x 256 tokens (prompt once + chosen + rejected" in captured.out  # the plan
    if method == "full" and objective == "dpo":
        assert "reference: log-probs of 20 pairs precomputed" in captured.out  # 4 x 4 + 4 val


@pytest.mark.parametrize(
    "extra",
    [
        ("--objective", "dpo", "--method", "lora", "--lora-dropout", "0.1"),
        ("--objective", "dpo", "--method", "full"),
        ("--objective", "orpo", "--method", "lora", "--grad-accum", "2"),
    ],
    ids=["dpo-lora-base", "dpo-full-precomputed", "orpo-lora"],
)
def test_resume_mid_run_continues_with_the_losses_of_an_uninterrupted_run(
    extra, tiny_model_dir, preference_data, tmp_path
):
    common = (*extra, "--schedule", "constant", "--warmup-ratio", "0", "--seed", "3")
    whole = tmp_path / "whole"
    assert (
        main(train_argv(tiny_model_dir, preference_data, whole, *common, "--max-steps", "5")) == 0
    )
    cut = tmp_path / "cut"
    first = train_argv(tiny_model_dir, preference_data, cut, *common, "--save-every", "1")
    assert main([*first, "--max-steps", "2"]) == 0
    assert main([*first, "--max-steps", "5", "--resume"]) == 0
    expected, got = _steps(whole), _steps(cut)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5]
    for step in range(5):
        for name in ("loss", *PREFERENCE_METRICS):
            assert got[step][name] == pytest.approx(expected[step][name], abs=1e-6), (step, name)


def test_full_dpo_with_a_frozen_copy_equals_precomputed_log_probs(
    tiny_model_dir, preference_data, tmp_path
):
    runs = {}
    for reference in ("copy", "precomputed"):
        out = tmp_path / reference
        extra = ("--objective", "dpo", "--method", "full", "--reference", reference)
        assert (
            main(train_argv(tiny_model_dir, preference_data, out, *extra, "--max-steps", "3")) == 0
        )
        runs[reference] = _steps(out)
        assert json.loads((out / "summary.json").read_text())["reference"] == reference
    for copied, precomputed in zip(runs["copy"], runs["precomputed"], strict=True):
        assert copied["loss"] == pytest.approx(precomputed["loss"], abs=1e-4)


def test_dpo_starts_from_an_sft_adapter_which_is_also_its_reference(
    tiny_model_dir, chat_data, preference_data, tmp_path, capsys
):
    sft = tmp_path / "sft"
    assert main(train_argv(tiny_model_dir, chat_data, sft, "--max-steps", "6", "--lr", "5e-3")) == 0
    fresh, started = tmp_path / "fresh", tmp_path / "started"
    dpo = ("--objective", "dpo", "--max-steps", "1")
    assert main(train_argv(tiny_model_dir, preference_data, fresh, *dpo)) == 0
    assert (
        main(
            train_argv(
                tiny_model_dir,
                preference_data,
                started,
                *dpo,
                "--init-adapter",
                str(sft / "adapter"),
            )
        )
        == 0
    )
    (step,) = _steps(started)
    # The reference is base + the SFT adapter (precomputed), the policy starts there: ln 2.
    assert step["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert json.loads((started / "summary.json").read_text())["reference"] == "precomputed"
    # ...and the SFT adapter changed what the policy scores (it was loaded).
    assert step["chosen_logps"] != pytest.approx(_steps(fresh)[0]["chosen_logps"], abs=1e-3)
    # A starting adapter of another shape is refused before the model loads.
    capsys.readouterr()
    other = tmp_path / "other"
    args = train_argv(tiny_model_dir, preference_data, other, *dpo, "--lora-r", "4")
    assert main([*args, "--init-adapter", str(sft / "adapter")]) == 2
    error = capsys.readouterr().err
    assert "was trained with another LoRA shape than this run's (lora_r 4)" in error
    assert "pass --lora-r 8" in error and not other.exists()


def test_bad_pairs_fail_at_their_line_before_the_model_loads(
    tiny_model_dir, preference_data, tmp_path, capsys, monkeypatch
):
    import tuneforge.train.methods as methods

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(methods, "prepare_model", no_model)
    bad = tmp_path / "bad.jsonl"
    lines = preference_data.read_text().splitlines()
    record = json.loads(lines[2])
    record["rejected"] = record["chosen"]
    bad.write_text("\n".join([*lines[:2], json.dumps(record), *lines[3:]]) + "\n")
    out = tmp_path / "run"
    assert main(train_argv(tiny_model_dir, bad, out, "--objective", "dpo")) == 2
    assert f"{bad}:3: 'chosen' and 'rejected' are identical" in capsys.readouterr().err
    # Pairs given to supervised training, and chats to preference training, likewise.
    assert main(train_argv(tiny_model_dir, preference_data, out, "--objective", "sft")) == 2
    assert f"{preference_data}:1: a preference record" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"objective": "dpo", "packing": True}, "'packing' is on, but objective dpo"),
        ({"objective": "dpo", "method": "full", "reference": "base"}, "needs method lora"),
        ({"objective": "dpo", "reference": "copy"}, "'copy' (a frozen copy of the whole model)"),
        ({"objective": "orpo", "reference": "precomputed"}, "only objective dpo has a reference"),
        ({"method": "full", "init_adapter": "a/"}, "'init_adapter' is a LoRA adapter"),
        ({"objective": "dpo", "format": "messages"}, "but data.format is 'messages'"),
        ({"format": "preference"}, "use objective dpo or orpo"),
        ({"objective": "dpo", "beta": 0}, "'beta' must be a number > 0"),
        ({"objective": "kto"}, "'objective' must be one of sft, dpo, orpo"),
        ({"objective": "dpo", "store": "kb"}, "which objective dpo cannot train on"),
        (
            {"objective": "dpo", "method": "full", "reference": "copy", "strategy": "fsdp"},
            "which strategy fsdp does not shard",
        ),
    ],
)
def test_objective_settings_that_do_not_fit_are_refused_naming_the_field(values, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"data": "pairs.jsonl", **values})
    assert message in str(caught.value)


def test_other_tools_names_for_preference_settings_point_to_ours(tmp_path):
    for key, ours in (("stage", "objective"), ("rl", "objective"), ("pref_beta", "beta")):
        path = tmp_path / "other.yaml"
        path.write_text(f"data: a.jsonl\n{key}: dpo\n")
        with pytest.raises(ConfigError, match=f"did you mean '{ours}'"):
            load_config(path)
