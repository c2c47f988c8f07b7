"""Run metrics: ``metrics.jsonl`` (one JSON object per logged step) and peak memory.

Step lines hold ``step, epoch, loss, lr, tokens, tokens_per_s, grad_norm, peak_memory_bytes,
elapsed_s``; validation lines hold ``step, val_loss``. Tokens are real (non-pad) tokens. DPO and
ORPO runs add ``reward_margin, preference_accuracy, chosen_logps, rejected_logps`` (``val_``
prefixed on validation lines; ``tuneforge.train.objectives``).

``metrics.jsonl`` is the record of a run. Experiment trackers are sinks that receive each line
as well (``report_to`` in the training config): a ``MetricSink`` has ``write(record)`` and
``close()``; ``SINKS`` maps a ``report_to`` name to its class, each importing its own library
(optional extras: ``pip install 'tuneforge[tensorboard]'`` / ``'tuneforge[mlflow]'``).
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from tuneforge.errors import ConfigError

if TYPE_CHECKING:
    from tuneforge.train.config import TrainConfig


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's peak RSS (Linux).

    ``fit`` calls it once the model and optimizer exist, so the peak it logs is the training's
    (what the memory planner predicts), not a transient of loading or quantizing the weights.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM, the peak resident set size
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere the peak keeps counting from process start


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since the last reset: CUDA ``max_memory_allocated``, else the peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class MetricSink(Protocol):
    """Somewhere a run's metrics lines also go (an experiment tracker)."""

    def write(self, record: dict[str, Any]) -> None:
        """Receive one metrics line (``step`` plus numbers), after ``metrics.jsonl`` has it."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end the tracker's run with ``status`` (:func:`run_status`)."""


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The metric values of a line: every number but ``step`` (booleans are not metrics)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _missing(library: str, extra: str) -> ConfigError:
    return ConfigError(
        f"train config field 'report_to' names {extra}, whose library ({library}) is not "
        f"installed; pip install 'tuneforge[{extra}]', or remove {extra} from report_to"
    )


class TensorBoardSink:
    """TensorBoard event files in ``RUN/tensorboard`` (``tensorboard --logdir runs`` shows
    every run under ``runs/``), written with torch's ``SummaryWriter``."""

    def __init__(self, run_dir: Path, params: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise _missing("tensorboard", "tensorboard") from err
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))

    def write(self, record: dict[str, Any]) -> None:
        for key, value in _numbers(record).items():
            self.writer.add_scalar(key, value, global_step=int(record["step"]))
        self.writer.flush()  # visible in TensorBoard while the run goes on

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()  # event files have no run status


class MlflowSink:
    """An MLflow run named after the run folder, in experiment ``tuneforge``: on the server or
    store of ``$MLFLOW_TRACKING_URI`` when set, else a local file store in ``mlruns`` beside
    the run folder (``mlflow ui --backend-store-uri runs/mlruns``). The config is logged as
    the run's parameters. The MLflow run's id is kept in ``RUN/mlflow_run_id``: a resumed
    training continues the same MLflow run (its parameters stay those of the first start)."""

    EXPERIMENT = "tuneforge"
    RUN_ID_FILE = "mlflow_run_id"

    def __init__(self, run_dir: Path, params: dict[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise _missing("mlflow", "mlflow") from err
        from mlflow.entities import Param

        run_dir = Path(run_dir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir.parent / "mlruns").as_uri()
            # MLflow 3 keeps its file store but refuses it unless asked for: the file store is
            # what needs no server and no database, so a local run asks for it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.EXPERIMENT)
        )
        id_file = run_dir / self.RUN_ID_FILE
        self.run_id = self._resumable(id_file.read_text().strip()) if id_file.is_file() else None
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(
            experiment_id, run_name=run_dir.name, tags={"tuneforge.run_dir": str(run_dir)}
        )
        self.run_id = run.info.run_id
        self.client.log_batch(
            self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()]
        )
        from tuneforge.atomic import write_text

        write_text(id_file, self.run_id + "\n")

    def _resumable(self, run_id: str) -> str | None:
        """``run_id`` when this tracking store still has that run, else None (a new one)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return None
        return run_id

    def write(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["step"])
        metrics = [Metric(k, v, now, step) for k, v in _numbers(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


SINKS: dict[str, type] = {"tensorboard": TensorBoardSink, "mlflow": MlflowSink}
"""``report_to`` name -> sink class, built as ``Sink(run_dir, params)``."""

SINK_LIBRARIES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
"""``report_to`` name -> the module its sink imports (checked before a run loads anything)."""


def check_trackers(names: list[str]) -> None:
    """Refuse ``report_to`` entries whose library is not installed, before a run starts (the
    sinks open only once the model is loaded and the loop begins).

    Raises:
        ConfigError: a tracker's library is missing (the message says what to install).
    """
    from importlib.util import find_spec

    for name in names:
        if find_spec(SINK_LIBRARIES[name]) is None:
            raise _missing(SINK_LIBRARIES[name], name)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"path": "a"}}`` -> ``{"data.path": "a"}`` (tracker parameters are flat)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_sinks(names: list[str], run_dir: Path, params: dict[str, Any]) -> list[MetricSink]:
    """The sinks ``names`` (``report_to``) for the run in ``run_dir``, each opened now.

    Args:
        names: ``report_to`` entries, keys of ``SINKS``.
        run_dir: the run directory.
        params: the run's parameters (its config), logged once; nested mappings flattened.

    Raises:
        ConfigError: a tracker whose library is not installed.
    """
    flat = _flat(params)
    return [SINKS[name](Path(run_dir), flat) for name in names]


def run_status(error: BaseException | None) -> str:
    """How a run that ended with ``error`` (None: it completed) is marked in the trackers:
    ``FINISHED``; ``KILLED`` when a signal stopped it after a checkpoint (it can be resumed);
    ``FAILED`` for anything else (a diverged loss, an error)."""
    from tuneforge.train.signals import TrainingInterrupted

    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, TrainingInterrupted | KeyboardInterrupt) else "FAILED"


class MetricsLog:
    """Append-only ``metrics.jsonl``; each line is flushed and fsynced as it is written, then
    handed to each sink (experiment trackers; none by default)."""

    def __init__(
        self, path: Path, enabled: bool = True, sinks: list[MetricSink] | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.sinks = list(sinks or [])

    @classmethod
    def for_run(cls, run_dir: Path, config: TrainConfig, enabled: bool = True) -> MetricsLog:
        """The log of a training run: ``run_dir/metrics.jsonl`` plus the trackers of the
        config's ``report_to`` (opened only where ``enabled``: rank 0 of a multi-process run).

        Raises:
            ConfigError: a tracker whose library is not installed.
        """
        sinks = open_sinks(config.report_to, run_dir, config.to_dict()) if enabled else []
        return cls(Path(run_dir) / "metrics.jsonl", enabled=enabled, sinks=sinks)

    def close(self, status: str = "FINISHED") -> None:
        """Close the sinks (the trackers' runs end with ``status``); ``metrics.jsonl`` needs
        no closing."""
        for sink in self.sinks:
            sink.close(status)
        self.sinks = []

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(run_status(error))

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a killed run may have logged past its checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) <= step
        ]
        from tuneforge.atomic import write_text

        write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for sink in self.sinks:
            sink.write(record)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a kill: drop it


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
