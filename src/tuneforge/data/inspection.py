"""What training will see: counts, token lengths, loss share, packing efficiency, one example."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.data.batching import pack_rows
from tuneforge.data.config import DataConfig
from tuneforge.data.prepare import DataReport, prepare_data
from tuneforge.data.tokenization import IGNORE_INDEX, TokenizedExample

OPEN_MARK, CLOSE_MARK = "⟦", "⟧"


@dataclass
class Inspection:
    """The numbers ``tuneforge data inspect`` prints."""

    report: DataReport
    percentiles: dict[str, int]  # token lengths before truncation: p50, p90, p99, max
    touched_by_truncation: int  # examples truncated or dropped for length
    packing_efficiency: float  # real tokens / row slots when packed to max_length (0..1)
    packed_rows: int
    example: str  # one rendered example, supervised parts between the marks

    def text(self) -> str:
        """The human-readable report."""
        report = self.report
        lengths = ", ".join(f"{key} {value}" for key, value in self.percentiles.items())
        return "\n".join(
            [
                report.summary(),
                f"token lengths (before truncation): {lengths}",
                f"examples touched by max_length={report.max_length}: "
                f"{self.touched_by_truncation} of {len(report.lengths)}",
                f"tokens carrying loss: {100 * report.supervised_share:.1f}%",
                f"packing into rows of {report.max_length}: {self.packed_rows} rows (train), "
                f"efficiency {100 * self.packing_efficiency:.1f}% (real tokens / row slots)",
                f"example (supervised tokens between {OPEN_MARK} {CLOSE_MARK}):",
                self.example,
            ]
        )


def percentile(values: list[int], share: float) -> int:
    """Nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def mark_supervised(tokenizer, example: TokenizedExample) -> str:
    """Decode an example, wrapping each run of supervised tokens in ⟦ ⟧."""
    pieces, run, supervised = [], [], None
    for token, label in zip(example.input_ids, example.labels, strict=True):
        flag = label != IGNORE_INDEX
        if flag != supervised and run:
            pieces.append(_decode(tokenizer, run, supervised))
            run = []
        supervised = flag
        run.append(token)
    if run:
        pieces.append(_decode(tokenizer, run, supervised))
    return "".join(pieces)


def _decode(tokenizer, ids: list[int], supervised: bool) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"{OPEN_MARK}{text}{CLOSE_MARK}" if supervised else text


def inspect_data(config: DataConfig, tokenizer, example_index: int = 0) -> Inspection:
    """Prepare the data as training would and measure it.

    Args:
        config: the data configuration training will use.
        tokenizer: the model's tokenizer.
        example_index: which kept training example to show (wraps around).
    """
    prepared = prepare_data(config, tokenizer, progress=True)
    report = prepared.report
    lengths = report.lengths
    kept = [len(example.input_ids) for example in prepared.train]
    rows = len(pack_rows(kept, config.max_length, list(range(len(kept)))))
    efficiency = sum(kept) / (rows * config.max_length)
    shown = prepared.train[example_index % len(prepared.train)]
    return Inspection(
        report=report,
        percentiles={
            "p50": percentile(lengths, 0.5),
            "p90": percentile(lengths, 0.9),
            "p99": percentile(lengths, 0.99),
            "max": max(lengths),
        },
        touched_by_truncation=report.truncated + report.dropped_too_long,
        packing_efficiency=efficiency,
        packed_rows=rows,
        example=mark_supervised(tokenizer, shown),
    )
