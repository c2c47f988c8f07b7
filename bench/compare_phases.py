"""Where the wall time of ``tuneforge compare`` goes, from its phase lines, for two runs side by side.

``compare`` prints ``[compare  N s] <phase>`` as each phase starts. Given the logs of two runs
(e.g. before and after a change, same budget, same seed), this prints the seconds of each phase
group and the ratio, and writes ``bench/results/compare_phases.md``:

- stores and RAFT examples (ingest, retrieval for the RAFT prompts);
- training (every fine-tune of the budget);
- answering (every arm on every task: the model's replies);
- forgetting and the cost to update one fact.

Usage::

    tuneforge compare --out /tmp/before --budget quick > before.log 2>&1   # at the old commit
    tuneforge compare --out /tmp/after --budget quick > after.log 2>&1     # at the new one
    .venv/bin/python bench/compare_phases.py before.log after.log
"""

from __future__ import annotations

import argparse
import re
import sys
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report

PHASE = re.compile(r"^\[compare\s+(\d+) s\] (.*)$")
GROUPS = ("stores and RAFT examples", "training", "answering", "forgetting and update cost")


def group_of(phase: str) -> str:
    """The phase group a ``compare`` phase line starts."""
    if phase.startswith("training "):
        return "training"
    if phase.startswith(("forgetting", "update cost")):
        return "forgetting and update cost"
    if phase.startswith(("ingesting", "building", "cited")):
        return "stores and RAFT examples"
    return "answering"  # "<task>: <arm> (n <split> prompts)"


def phase_seconds(log: Path) -> dict[str, float]:
    """Seconds per phase group, and ``total``, from one compare log."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise SystemExit(f"{log}: cannot read the log ({err.strerror})") from err
    marks = [(int(m.group(1)), m.group(2)) for line in lines if (m := PHASE.match(line))]
    if not marks or not marks[-1][1].startswith("done"):
        raise SystemExit(f"{log}: no finished compare run in it (no '[compare N s] done' line)")
    seconds = dict.fromkeys(GROUPS, 0.0)
    for (start, phase), (end, _) in pairwise(marks):
        seconds[group_of(phase)] += end - start
    seconds["total"] = float(marks[-1][0])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python bench/compare_phases.py before.log after.log",
    )
    parser.add_argument("before", type=Path, help="log of the first compare run")
    parser.add_argument("after", type=Path, help="log of the second compare run")
    parser.add_argument("--note", default="", help="a line on how the runs were made")
    args = parser.parse_args()
    before, after = phase_seconds(args.before), phase_seconds(args.after)
    rows = [
        [name, f"{before[name]:.0f}", f"{after[name]:.0f}", f"{before[name] / after[name]:.2f}x"]
        for name in (*GROUPS, "total")
        if after[name] > 0
    ]
    body = (args.note + "\n\n" if args.note else "") + markdown_table(
        ["phase", f"{args.before.name} s", f"{args.after.name} s", "speed-up"], rows
    )
    report("compare_phases", "tuneforge compare: wall seconds per phase, two runs", body)


if __name__ == "__main__":
    main()
