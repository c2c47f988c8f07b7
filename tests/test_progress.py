"""Progress: complete lines in a log (first, every interval, last), tqdm's bar on a terminal."""

from __future__ import annotations

import io

from tuneforge.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_not_carriage_returns():
    log = io.StringIO()
    with Progress("train", total=60, unit="step", stream=log, interval_s=3600) as progress:
        for step in range(60):
            progress.update(1, {"loss": f"{1 / (step + 1):.4f}"})
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # The first update and the last one; nothing in between within the interval.
    assert len(lines) == 2
    assert lines[0].startswith("train: 1/60 steps (2%) · loss=1.0000 · ")
    assert lines[1].startswith("train: 60/60 steps (100%) · loss=0.0167 · ")
    assert "left" in lines[0] and "left" not in lines[1]


def test_lines_come_every_interval():
    log = io.StringIO()
    progress = Progress("ingest", unit="chunk", stream=log, interval_s=0)
    for _ in range(3):
        progress.update(10)
    progress.close()
    lines = log.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        "ingest: 10 chunks",
        "ingest: 20 chunks",
        "ingest: 30 chunks",
    ]
    log = io.StringIO()
    progress = Progress("ingest", unit="chunk", stream=log, interval_s=3600)
    progress.update(10)
    progress.update(5)
    progress.close()  # the final count, which the interval held back
    assert [line.split(" · ")[0] for line in log.getvalue().splitlines()] == [
        "ingest: 10 chunks",
        "ingest: 15 chunks",
    ]


def test_a_resumed_count_starts_at_initial():
    log = io.StringIO()
    with Progress("train", total=10, unit="step", initial=4, stream=log) as progress:
        progress.update(1)
    assert log.getvalue().startswith("train: 5/10 steps (50%)")


def test_a_terminal_gets_the_live_bar_and_disabled_shows_nothing():
    screen = Terminal()
    with Progress("train", total=3, unit="step", stream=screen) as progress:
        progress.update(3, {"loss": 0.5})
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
    quiet = io.StringIO()
    with Progress("train", total=3, stream=quiet, enabled=False) as progress:
        progress.update(3)
    assert quiet.getvalue() == ""


def test_set_postfix_names_the_current_file_without_counting():
    log = io.StringIO()
    progress = Progress("ingest", unit="chunk", stream=log, interval_s=0)
    progress.set_postfix({"file": "2/3 b.md"})
    progress.update(16)
    progress.close()
    assert log.getvalue().splitlines()[0].startswith("ingest: 16 chunks · file=2/3 b.md · ")
