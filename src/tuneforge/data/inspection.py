"""What training will see: counts, token lengths, loss share, packing efficiency, one example.

For preference data the example is a pair: its prompt, then each completion with its supervised
tokens marked (the prompt carries no loss in either); packing does not apply (a pair's row
already holds its prompt once and both completions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.data.batching import pack_rows
from tuneforge.data.config import DataConfig
from tuneforge.data.preference import TokenizedPair
from tuneforge.data.prepare import DataReport, prepare_data
from tuneforge.data.tokenization import IGNORE_INDEX, TokenizedExample

OPEN_MARK, CLOSE_MARK = "⟦", "⟧"


@dataclass
class Inspection:
    """The numbers ``tuneforge data inspect`` prints."""

    report: DataReport
    percentiles: dict[str, int]  # token lengths before truncation: p50, p90, p99, max
    touched_by_truncation: int  # examples truncated or dropped for length
    packing_efficiency: float | None  # real tokens / row slots packed to max_length (0..1)
    packed_rows: int
    example: str  # one rendered example (or pair), supervised parts between the marks

    def text(self) -> str:
        """The human-readable report."""
        report = self.report
        lengths = ", ".join(f"{key} {value}" for key, value in self.percentiles.items())
        what = "examples" if self.packing_efficiency is not None else "pairs"
        lines = [
            report.summary(),
            f"token lengths (before truncation{'' if what == 'examples' else '; per pair, its longer conversation'}): {lengths}",
            f"{what} touched by max_length={report.max_length}: "
            f"{self.touched_by_truncation} of {len(report.lengths)}",
            f"tokens carrying loss: {100 * report.supervised_share:.1f}%",
        ]
        if self.packing_efficiency is not None:
            lines.append(
                f"packing into rows of {report.max_length}: {self.packed_rows} rows (train), "
                f"efficiency {100 * self.packing_efficiency:.1f}% (real tokens / row slots)"
            )
            lines.append(f"example (supervised tokens between {OPEN_MARK} {CLOSE_MARK}):")
        else:
            lines.append(
                f"pair (supervised tokens between {OPEN_MARK} {CLOSE_MARK}; the prompt carries "
                "no loss in either completion):"
            )
        return "\n".join([*lines, self.example])


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


def mark_pair(tokenizer, pair: TokenizedPair) -> str:
    """A pair as text: the prompt, then each completion with its supervised tokens marked."""
    prompt = _decode(tokenizer, pair.prompt_ids, False)
    parts = [f"prompt:\n{prompt}"]
    for name, ids, labels in (
        ("chosen", pair.chosen_ids, pair.chosen_labels),
        ("rejected", pair.rejected_ids, pair.rejected_labels),
    ):
        parts.append(f"{name}:\n{mark_supervised(tokenizer, TokenizedExample(ids, labels))}")
    return "\n".join(parts)


def inspect_data(config: DataConfig, tokenizer, example_index: int = 0) -> Inspection:
    """Prepare the data as training would and measure it.

    Args:
        config: the data configuration training will use.
        tokenizer: the model's tokenizer.
        example_index: which kept training example (or pair) to show (wraps around).
    """
    prepared = prepare_data(config, tokenizer, progress=True)
    report = prepared.report
    lengths = report.lengths
    percentiles = {
        "p50": percentile(lengths, 0.5),
        "p90": percentile(lengths, 0.9),
        "p99": percentile(lengths, 0.99),
        "max": max(lengths),
    }
    if prepared.kind == "preference":
        counts = report.pairs
        return Inspection(
            report=report,
            percentiles=percentiles,
            touched_by_truncation=counts.truncated
            + counts.dropped_too_long
            + counts.prompt_too_long,
            packing_efficiency=None,
            packed_rows=0,
            example=mark_pair(tokenizer, prepared.train[example_index % len(prepared.train)]),
        )
    kept = [len(example.input_ids) for example in prepared.train]
    rows = len(pack_rows(kept, config.max_length, list(range(len(kept)))))
    efficiency = sum(kept) / (rows * config.max_length)
    shown = prepared.train[example_index % len(prepared.train)]
    return Inspection(
        report=report,
        percentiles=percentiles,
        touched_by_truncation=report.truncated + report.dropped_too_long,
        packing_efficiency=efficiency,
        packed_rows=rows,
        example=mark_supervised(tokenizer, shown),
    )
