"""``report_to``: metrics lines also go to TensorBoard and MLflow (their own libraries, optional
extras); ``metrics.jsonl`` is written either way. Skipped, with the reason, when a library is
not installed."""

from __future__ import annotations

import json

import pytest

from tuneforge.errors import ConfigError
from tuneforge.train.config import REPORT_TARGETS, TrainConfig, load_config
from tuneforge.train.metrics import SINKS, MetricsLog, read_metrics

LINES = [
    {"step": 1, "epoch": 0, "loss": 2.5, "lr": 1e-4, "tokens_per_s": 900.0},
    {"step": 2, "epoch": 0, "loss": 2.0, "lr": 2e-4, "tokens_per_s": 950.0},
    {"step": 2, "val_loss": 2.2},
]


def test_every_report_target_has_a_sink():
    assert set(SINKS) == set(REPORT_TARGETS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("tensorboard", ["tensorboard"]), ("mlflow,tensorboard", ["mlflow", "tensorboard"]), ("", [])],
)
def test_report_to_is_read_from_the_command_line_form(value, expected):
    assert load_config(None, {"report_to": value}).report_to == expected


def test_an_unknown_tracker_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'report_to' must be a list of tensorboard, mlflow"):
        load_config(None, {"report_to": "wandb"})


def test_tensorboard_receives_every_metrics_line(tmp_path):
    pytest.importorskip(
        "tensorboard", reason="tensorboard not installed: pip install 'tuneforge[tensorboard]'"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(out=str(tmp_path / "run"), report_to=["tensorboard"])
    log = MetricsLog.for_run(tmp_path / "run", config)
    for line in LINES:
        log.write(line)
    log.close()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == LINES  # still the record
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    loss = [(s.step, s.value) for s in events.Scalars("loss")]
    assert loss == [(1, 2.5), (2, 2.0)]
    assert [(s.step, s.value) for s in events.Scalars("val_loss")] == [(2, pytest.approx(2.2))]
    assert [s.value for s in events.Scalars("tokens_per_s")] == [900.0, 950.0]


def test_mlflow_local_file_store_gets_params_and_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'tuneforge[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = tmp_path / "runs" / "r1"
    config = TrainConfig(out=str(run_dir), report_to=["mlflow"], lr=1e-3)
    log = MetricsLog.for_run(run_dir, config)
    for line in LINES:
        log.write(line)
    log.close()
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["data.max_length"] == "1024"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 2.0)]
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"] == 2.5


def test_no_tracker_no_sink(tmp_path):
    log = MetricsLog.for_run(tmp_path, TrainConfig(out=str(tmp_path)))
    assert log.sinks == []
    log.write(LINES[0])
    assert not (tmp_path / "tensorboard").exists()


def test_a_tracker_whose_library_is_missing_is_refused_before_the_run_starts(
    tmp_path, monkeypatch, capsys
):
    """The sinks open when the loop starts, after the model loaded; a missing library is
    named before anything is read or written."""
    from tuneforge.cli import main
    from tuneforge.train import metrics

    monkeypatch.setitem(metrics.SINK_LIBRARIES, "mlflow", "no_such_tracker_library")
    out = tmp_path / "run"
    args = ["train", "--data", "demo", "--out", str(out), "--report-to", "mlflow"]
    assert main([*args, "--max-steps", "1", "--model", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "no_such_tracker_library) is not installed" in error
    assert "pip install 'tuneforge[mlflow]'" in error
    assert not out.exists()
