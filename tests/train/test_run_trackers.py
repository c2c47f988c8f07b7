"""``--report-to``: a training run sends its metrics lines to TensorBoard and MLflow as it goes
and ends the trackers' runs with the training (``fit`` opens and closes them). Skipped, with the
reason, when a tracker's library is not installed."""

from __future__ import annotations

import pytest

from tuneforge.cli import main
from tuneforge.train.metrics import read_metrics


def _train(model_dir, data, out, *extra) -> list[str]:
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--method", "lora", "--batch-size", "4", "--max-length", "128", "--max-steps", "3",
        "--no-progress", "--num-threads", "1", *extra,
    ]  # fmt: skip


def test_a_run_reports_its_losses_to_tensorboard_and_mlflow(
    tiny_model_dir, chat_data, tmp_path, monkeypatch
):
    pytest.importorskip(
        "tensorboard", reason="tensorboard not installed: pip install 'tuneforge[tensorboard]'"
    )
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'tuneforge[mlflow]'")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "runs" / "r1"
    assert (
        main(_train(tiny_model_dir, chat_data, run_dir, "--report-to", "tensorboard,mlflow")) == 0
    )
    losses = [
        (r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r
    ]
    assert [step for step, _ in losses] == [1, 2, 3]

    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("loss")] == [
        (step, pytest.approx(loss, rel=1e-6)) for step, loss in losses
    ]
    assert "grad_norm" in events.Tags()["scalars"]

    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"  # closed by fit
    assert run.data.params["method"] == "lora"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [
        (step, pytest.approx(loss, rel=1e-6)) for step, loss in losses
    ]


def test_a_dpo_run_reports_its_preference_metrics(tiny_model_dir, preference_data, tmp_path):
    pytest.importorskip(
        "tensorboard", reason="tensorboard not installed: pip install 'tuneforge[tensorboard]'"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "dpo"
    args = ("--objective", "dpo", "--report-to", "tensorboard")
    assert main(_train(tiny_model_dir, preference_data, run_dir, *args)) == 0
    margins = [r["reward_margin"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [s.value for s in events.Scalars("reward_margin")] == pytest.approx(margins, rel=1e-6)
    assert "preference_accuracy" in events.Tags()["scalars"]
