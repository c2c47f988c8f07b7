"""The one decoding path: rows of token ids in, one ``Reply`` per row out.

``generate_rows`` decodes any number of rows; ``generate`` (one conversation), the adapter
registry (``AdapterRegistry.decode``) and the server's worker all call it. Rows are left-padded
into one ``model.generate`` call per group (``group_rows``): every row's last prompt token sits
in the same column, so new tokens append to all rows at once, and the attention mask hides the
padding and sets the positions. Everything else is per row:

- **adapter**: on a peft model, ``adapter_names`` routes each row through its own LoRA
  (``"__base__"`` for none): peft's mixed-batch forward computes ``base(x)`` for the whole batch
  and adds ``scaling·B·A·x`` for each row's own adapter, so rows on different adapters share a
  batch (``AdapterRegistry.decode`` maps ``Row.adapter`` to these names);
- **max_new_tokens, stop strings, cancellation**: a stopping criterion tracks each row and marks
  it finished on its own (the batch runs until its last row finishes);
- **streaming**: the same criterion decodes each row's new tokens and hands out text pieces,
  holding back an incomplete UTF-8 character or a possible prefix of a stop string;
- **logits processor**: ``Row.logits_processor`` sees the row's new token ids so far and its
  next-token scores, and returns the scores to sample from (masking tokens a grammar forbids,
  for example), so constrained and free rows share a batch. A processor that is a grammar
  (``GrammarProcessor``: it has ``is_complete``) decides the row's finish reason: ``"stop"``
  only when its reply is complete, ``"length"`` (truncated) otherwise.

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
from typing import Protocol, runtime_checkable

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tuneforge.data import ensure_pad_token
from tuneforge.generation.prompts import prompt_ids
from tuneforge.generation.settings import GenerationSettings, Reply, sampling_kwargs

# (this row's new token ids so far, this row's next-token scores [vocab]) -> scores [vocab]
RowLogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


@runtime_checkable
class GrammarProcessor(Protocol):
    """A ``RowLogitsProcessor`` that knows when its row's reply is complete (a grammar).

    ``is_complete(new_ids)`` gets the row's whole reply as token ids once it has finished; the
    row's ``finish_reason`` is then ``"stop"`` if it is complete, ``"length"`` if not (cut by
    ``max_new_tokens`` or a stop string before the grammar was satisfied).
    """

    def __call__(self, new_ids: list[int], scores: torch.Tensor) -> torch.Tensor: ...

    def is_complete(self, new_ids: list[int]) -> bool: ...


@dataclass
class Row:
    """One request to decode.

    Attributes:
        prompt_ids: the prompt as token ids (chat template already applied for chat requests).
        settings: sampling settings; ``max_new_tokens`` and ``stop`` apply to this row only.
        adapter: the loaded adapter to use, None for the base model (read by
            ``AdapterRegistry.decode``, which turns it into peft's ``adapter_names``).
        on_text: called with each new piece of text as it is generated (streaming), on the
            thread that decodes.
        cancelled: set when the client went away; the row then stops at the next token.
        logits_processor: called before each new token of this row with its new token ids so
            far and its scores (shape ``[vocab]``); returns the scores to pick from. A
            ``GrammarProcessor`` (e.g. ``JsonGrammar.row_processor()``) also decides the
            row's finish reason.
    """

    prompt_ids: list[int]
    settings: GenerationSettings
    adapter: str | None = None
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    logits_processor: RowLogitsProcessor | None = None


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


def stop_token_ids(tokenizer, model) -> list[int]:
    """EOS ids of the tokenizer and the generation config (end-of-turn tokens included)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(value)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.get_vocab().get(token)
        if token_id is not None:
            ids.add(token_id)
    return sorted(ids)


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
        self.texts: list[str | None] = [None for _ in rows]  # None: not decoded yet
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
        if token in self.stop_ids:
            self.finish[index] = "stop"
        # Decoding every step costs a little; only rows that watch their text pay for it.
        if row.settings.stop or row.on_text is not None:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in row.settings.stop:
                position = text.find(stop)
                if position >= 0:
                    text, self.finish[index] = text[:position], "stop"
            self.texts[index] = text
        if self.finish[index] is None and len(ids) >= row.settings.max_new_tokens:
            self.finish[index] = "length"
        if self.finish[index] is None and row.cancelled.is_set():
            self.finish[index] = "cancelled"
        self._stream(index, row, final=self.finish[index] is not None)

    def _stream(self, index: int, row: Row, final: bool) -> None:
        if row.on_text is None:
            return
        text = self.texts[index] or ""
        ready = len(text) if final else len(text) - _held_back(text, row.settings.stop)
        if ready > self.sent[index]:
            row.on_text(text[self.sent[index] : ready])
            self.sent[index] = ready

    def close(self) -> None:
        """Decode rows that did not watch their text, and send every held-back piece."""
        for index, row in enumerate(self.rows):
            if self.texts[index] is None:
                self.texts[index] = self.tokenizer.decode(
                    self.new_ids[index], skip_special_tokens=True
                )
            self.finish[index] = self.finish[index] or "length"
            self._stream(index, row, final=True)

    def reply(self, index: int, seconds: float) -> Reply:
        """Row ``index``'s reply (call after ``close``)."""
        finish = "stop" if self.finish[index] == "stop" else "length"
        grammar = self.rows[index].logits_processor
        if isinstance(grammar, GrammarProcessor) and self.finish[index] != "cancelled":
            finish = "stop" if grammar.is_complete(self.new_ids[index]) else "length"
        return Reply(
            text=self.texts[index] or "",
            prompt_tokens=len(self.rows[index].prompt_ids),
            completion_tokens=len(self.new_ids[index]),
            seconds=seconds,
            finish_reason=finish,
        )


class _RowLogitsProcessors(LogitsProcessor):
    """Applies each row's own ``logits_processor`` to that row's scores, before sampling."""

    def __init__(self, rows: list[Row], tracker: _RowTracker) -> None:
        self.rows = rows
        self.tracker = tracker

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        # scores: [rows, vocab]. A finished row only receives padding from now on: skip it.
        for index, row in enumerate(self.rows):
            if row.logits_processor is not None and self.tracker.finish[index] is None:
                scores[index] = row.logits_processor(
                    list(self.tracker.new_ids[index]), scores[index]
                )
        return scores


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[rows, longest prompt]``, prompts right-aligned."""
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for index, ids in enumerate(prompts):
        input_ids[index, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[index, width - len(ids) :] = 1
    return input_ids, attention_mask


def _decode_group(model, tokenizer, rows: list[Row], adapter_names: list[str] | None):
    """One ``model.generate`` call for rows of one group (``group_rows``)."""
    device = next(model.parameters()).device
    input_ids, attention_mask = _left_padded(
        [row.prompt_ids for row in rows], ensure_pad_token(tokenizer)
    )
    stop_ids = stop_token_ids(tokenizer, model)
    tracker = _RowTracker(tokenizer, rows, stop_ids)
    kwargs = {
        "max_new_tokens": max(row.settings.max_new_tokens for row in rows),
        "eos_token_id": stop_ids,
        "pad_token_id": tokenizer.pad_token_id,
        "stopping_criteria": StoppingCriteriaList([tracker]),
    }
    if any(row.logits_processor is not None for row in rows):
        kwargs["logits_processor"] = LogitsProcessorList([_RowLogitsProcessors(rows, tracker)])
    kwargs.update(sampling_kwargs(rows[0].settings))
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    start = time.perf_counter()
    model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
    )
    seconds = time.perf_counter() - start
    tracker.close()
    return [tracker.reply(index, seconds) for index in range(len(rows))]


@torch.inference_mode()
def generate_rows(
    model, tokenizer, rows: list[Row], adapter_names: list[str] | None = None
) -> list[Reply]:
    """Decode ``rows``: one ``model.generate`` call per group of rows (``group_rows``).

    The tokenizer gets a pad token if it has none (``tuneforge.data.ensure_pad_token``).

    Args:
        model: a causal LM, or a peft model holding one or several LoRA adapters.
        tokenizer: its tokenizer.
        rows: the requests.
        adapter_names: for a peft model with several adapters, each row's peft adapter name
            (``"__base__"``: none); None uses the model as it is (its active adapter, if any).

    Returns:
        one Reply per row, in order: text (stops cut), prompt and completion token counts
        (tokens), the wall time of the call that decoded it (seconds), ``finish_reason``.

    Raises:
        ValueError: ``adapter_names`` does not give one name per row.
    """
    if adapter_names is not None and len(adapter_names) != len(rows):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(rows)} rows")
    replies: list[Reply | None] = [None] * len(rows)
    for group in group_rows(rows):
        names = None if adapter_names is None else [adapter_names[i] for i in group]
        decoded = _decode_group(model, tokenizer, [rows[i] for i in group], names)
        for index, reply in zip(group, decoded, strict=True):
            replies[index] = reply
    return replies


def generate(
    model,
    tokenizer,
    messages: list[dict],
    settings: GenerationSettings | None = None,
    on_text: Callable[[str], None] | None = None,
    logits_processor: RowLogitsProcessor | None = None,
) -> Reply:
    """Generate the assistant's reply to ``messages`` (a one-row ``generate_rows``).

    Args:
        model: a causal LM (plain or peft-wrapped).
        tokenizer: its tokenizer.
        messages: chat messages (``role``/``content`` dicts) ending with a user turn.
        settings: sampling settings (default: greedy, 256 new tokens).
        on_text: called with each new piece of text as it is generated (streaming); the pieces
            join to the reply's text.
        logits_processor: the row's ``Row.logits_processor`` (e.g. a JSON schema's
            ``JsonGrammar.row_processor()``); None decodes freely.
    """
    row = Row(
        prompt_ids(tokenizer, messages),
        settings or GenerationSettings(),
        on_text=on_text,
        logits_processor=logits_processor,
    )
    return generate_rows(model, tokenizer, [row])[0]
