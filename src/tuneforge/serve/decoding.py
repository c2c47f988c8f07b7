"""Decoding several requests as one batch: left padding, per-row limits, stops and streaming.

The server works on token ids, not messages, because ``/v1/completions`` takes a raw prompt
(no chat template) while chat requests are rendered with it. Rows of one ``model.generate`` call
share the sampling mode; everything else is per row:

- **adapter**: on a peft model, ``adapter_names`` routes each row through its own LoRA
  (``"__base__"`` for none), so rows with different adapters share one batch (peft's
  mixed-batch forward, as in ``adapters.registry``);
- **max_new_tokens, stop strings, cancellation**: a stopping criterion tracks each row and marks
  it finished on its own (the batch runs until its last row finishes);
- **streaming**: the same criterion decodes each row's new tokens and hands out text deltas,
  holding back an incomplete UTF-8 character or a possible prefix of a stop string.

Which rows may share a call (``group_rows``): all greedy rows together (greedy decoding of a
row does not depend on the others; a test checks batched equals alone); sampled rows without a
seed together when temperature and top_p match; a sampled row with a seed alone (its seed sets
the global RNG).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tuneforge.generation import GenerationSettings, Reply, sampling_kwargs, stop_token_ids


@dataclass
class Row:
    """One request to decode.

    Attributes:
        prompt_ids: the prompt as token ids (chat template already applied for chat requests).
        settings: sampling settings; ``max_new_tokens`` and ``stop`` apply to this row only.
        adapter: the loaded adapter to use, None for the base model.
        on_text: called on the worker thread with each new piece of text (streaming).
        cancelled: set when the client went away; the row then stops at the next token.
    """

    prompt_ids: list[int]
    settings: GenerationSettings
    adapter: str | None = None
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


def group_rows(rows: list[Row]) -> list[list[int]]:
    """Split row indexes into groups that can share one ``generate`` call (see module doc)."""
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        settings = row.settings
        if settings.temperature == 0:
            key: tuple = ("greedy",)
        elif settings.seed is None:
            key = ("sampled", settings.temperature, settings.top_p)
        else:
            key = ("seeded", index)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` may not be final yet.

    An incomplete UTF-8 sequence decodes to U+FFFD; a suffix that starts a stop string may turn
    out to be the stop, which is never sent.
    """
    hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return hold


class _RowTracker(StoppingCriteria):
    """Per-row bookkeeping, called by ``generate`` after every new token of the batch."""

    def __init__(self, tokenizer, rows: list[Row], stop_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.rows = rows
        self.stop_ids = set(stop_ids)
        self.new_ids: list[list[int]] = [[] for _ in rows]
        self.texts = ["" for _ in rows]
        self.sent = [0 for _ in rows]  # characters already handed to on_text
        self.finish: list[str | None] = [None for _ in rows]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for index, row in enumerate(self.rows):
            if self.finish[index] is None:
                self._advance(index, row, last[index])
        done = [finish is not None for finish in self.finish]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _advance(self, index: int, row: Row, token: int) -> None:
        ids = self.new_ids[index]
        ids.append(token)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if token in self.stop_ids:
            self.finish[index] = "stop"
        for stop in row.settings.stop:
            position = text.find(stop)
            if position >= 0:
                text, self.finish[index] = text[:position], "stop"
        if self.finish[index] is None and len(ids) >= row.settings.max_new_tokens:
            self.finish[index] = "length"
        if self.finish[index] is None and row.cancelled.is_set():
            self.finish[index] = "cancelled"
        self.texts[index] = text
        if row.on_text is not None:
            final = self.finish[index] is not None
            ready = len(text) if final else len(text) - _held_back(text, row.settings.stop)
            if ready > self.sent[index]:
                row.on_text(text[self.sent[index] : ready])
                self.sent[index] = ready


@torch.inference_mode()
def generate_rows(
    model, tokenizer, rows: list[Row], adapter_names: list[str] | None = None
) -> list[Reply]:
    """Decode ``rows`` in one ``generate`` call; they must share a group (``group_rows``).

    Args:
        model: a causal LM, or a peft model holding several LoRA adapters.
        tokenizer: its tokenizer.
        rows: the requests.
        adapter_names: for a peft model, each row's peft adapter name (``"__base__"``: none).

    Returns:
        one Reply per row, in order: text (stops cut), prompt and completion token counts
        (tokens), the batch's wall time (seconds) and ``finish_reason`` ("stop" or "length").
    """
    settings = rows[0].settings
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(row.prompt_ids) for row in rows)
    # Left padding: every row's last prompt token sits in the same column, so new tokens append
    # to all rows at once; the attention mask hides the padding and sets the positions.
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
        attention_mask[index, width - len(row.prompt_ids) :] = 1
    stop_ids = stop_token_ids(tokenizer, model)
    tracker = _RowTracker(tokenizer, rows, stop_ids)
    kwargs = {
        "max_new_tokens": max(row.settings.max_new_tokens for row in rows),
        "eos_token_id": stop_ids,
        "pad_token_id": pad_id,
        "stopping_criteria": StoppingCriteriaList([tracker]),
    }
    kwargs.update(sampling_kwargs(settings))
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    start = time.perf_counter()
    model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
    )
    seconds = time.perf_counter() - start
    return [
        Reply(
            text=tracker.texts[index],
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(tracker.new_ids[index]),
            seconds=seconds,
            finish_reason="stop" if tracker.finish[index] == "stop" else "length",
        )
        for index, row in enumerate(rows)
    ]
