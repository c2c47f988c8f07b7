"""The commands the UI starts: ``tuneforge train`` and ``tuneforge compare`` as child processes.

A job is the CLI itself (``python -m tuneforge ...``), so a run started in the UI is an ordinary
run folder, stopped the CLI's way: SIGTERM makes ``train`` checkpoint and exit 143, and
``tuneforge train --config RUN/config.yaml --resume`` continues it from the UI or a terminal.
Each job's output goes to a log file the UI shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError


@dataclass
class Job:
    """A started command.

    Attributes:
        name: the run's (or comparison's) name.
        kind: ``train`` or ``compare``.
        argv: the command line after ``python -m tuneforge``.
        log: the file its stdout and stderr go to.
        process: the child process.
    """

    name: str
    kind: str
    argv: list[str]
    log: Path
    process: subprocess.Popen

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """None while it runs; then the CLI's exit code (0, 2 user error, 143 stopped...)."""
        return self.process.poll()


class Jobs:
    """The UI's child processes, by (kind, name); one running job per name."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, name: str, argv: list[str], log: Path) -> Job:
        """Start ``python -m tuneforge ARGV`` with its output in ``log``.

        Raises:
            ConfigError: a job of this kind and name is still running.
        """
        with self._lock:
            current = self._jobs.get((kind, name))
            if current is not None and current.running:
                raise ConfigError(f"{kind} {name!r} is already running; stop it first")
            log.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with log.open("w", encoding="utf-8") as handle:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tuneforge", *argv],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            job = Job(name=name, kind=kind, argv=argv, log=log, process=process)
            self._jobs[(kind, name)] = job
            return job

    def get(self, kind: str, name: str) -> Job | None:
        """The last job of this kind and name started by this UI, if any."""
        return self._jobs.get((kind, name))

    def of_kind(self, kind: str) -> list[Job]:
        """Every job of ``kind`` started by this UI, oldest first."""
        return [job for (k, _), job in self._jobs.items() if k == kind]

    def stop(self, kind: str, name: str) -> bool:
        """Send SIGTERM (``train`` checkpoints, then exits 143). Returns whether it was running."""
        job = self._jobs.get((kind, name))
        if job is None or not job.running:
            return False
        job.process.send_signal(signal.SIGTERM)
        return True

    def stop_all(self, timeout: float = 60) -> None:
        """SIGTERM every running job and wait for each (a training run writes its checkpoint)."""
        running = [job for job in self._jobs.values() if job.running]
        for job in running:
            job.process.send_signal(signal.SIGTERM)
        for job in running:
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()


def log_tail(path: Path, max_bytes: int = 6000) -> str:
    """The end of a log file (the whole file when short); empty when there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
