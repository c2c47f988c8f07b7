"""``--report-to``: a training run sends its metrics lines to TensorBoard and MLflow as it goes
and ends the trackers' runs with the training (``fit`` opens and closes them). Skipped, with the
reason, when a tracker's library is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_cli import train_argv

from tuneforge.cli import main
from tuneforge.train.metrics import read_metrics


def _train(model_dir, data, out, *extra) -> list[str]:
    """The shared ``train_argv`` for a 3-step run (a test's ``extra`` comes after, and wins)."""
    return train_argv(model_dir, data, out, "--max-steps", "3", *extra)


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


def _mlflow_runs(root):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tuneforge")
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_marks_a_diverged_run_failed(tiny64_dir, chat_data, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'tuneforge[mlflow]'")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "collapsed"
    extra = ("--report-to", "mlflow", "--lr", "1e9", "--max-steps", "8")
    assert main(_train(tiny64_dir, chat_data, run_dir, *extra)) == 2
    _, (run,) = _mlflow_runs(tmp_path / "runs")
    assert run.info.status == "FAILED"  # not FINISHED: the training stopped on a collapse


def test_a_resumed_run_continues_its_mlflow_run(tiny_model_dir, chat_data, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'tuneforge[mlflow]'")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "r1"
    args = _train(tiny_model_dir, chat_data, run_dir, "--report-to", "mlflow")
    args[args.index("--max-steps") + 1] = "2"
    assert main(args) == 0
    args[args.index("--max-steps") + 1] = "3"
    assert main([*args, "--resume"]) == 0  # extends the finished run by one step
    client, runs = _mlflow_runs(tmp_path / "runs")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert steps == [1, 2, 3]


def test_the_trackers_status_says_how_the_run_ended():
    from tuneforge.train import TrainingInterrupted
    from tuneforge.train.guards import TrainingDivergedError
    from tuneforge.train.metrics import MetricsLog, run_status

    assert run_status(None) == "FINISHED"
    assert run_status(TrainingInterrupted("stopped", 2, 3, None)) == "KILLED"
    assert run_status(TrainingDivergedError("nan")) == "FAILED"

    class Sink:
        def write(self, record):
            pass

        def close(self, status="FINISHED"):
            closed.append(status)

    closed: list[str] = []
    with pytest.raises(RuntimeError), MetricsLog(Path("unused"), sinks=[Sink()]):
        raise RuntimeError("boom")
    with MetricsLog(Path("unused"), sinks=[Sink()]):
        pass
    assert closed == ["FAILED", "FINISHED"]
