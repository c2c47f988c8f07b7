"""One row: the request (``Row``: prompt, settings, adapter, streaming callback, cancellation,
logits processor) and its progress while it decodes (``RowProgress``: new tokens, stops, limit,
cancellation, streaming, grammar completion).

Both decoding paths (``batch_decoder`` and the plain ``model.generate`` path in ``decoding``)
hand every new token of a row to its ``RowProgress``, which decides whether the row is finished
and streams its text, so per-row behaviour cannot differ between the paths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from tuneforge.generation.settings import GenerationSettings, Reply

# (this row's new token ids so far, this row's next-token scores [vocab]) -> scores [vocab]
RowLogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


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


@runtime_checkable
class GrammarProcessor(Protocol):
    """A ``RowLogitsProcessor`` that knows when its row's reply is complete (a grammar).

    ``is_complete(new_ids)`` gets the row's whole reply as token ids once it has finished; the
    row's ``finish_reason`` is then ``"stop"`` if it is complete, ``"length"`` if not (cut by
    ``max_new_tokens`` or a stop string before the grammar was satisfied).
    """

    def __call__(self, new_ids: list[int], scores: torch.Tensor) -> torch.Tensor: ...

    def is_complete(self, new_ids: list[int]) -> bool: ...


def held_back(text: str, stops: list[str]) -> int:
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


class RowProgress:
    """The new tokens of one row and why it finished (None while it runs).

    Args:
        tokenizer: decodes the row's new tokens into text.
        row: the request.
        stop_ids: token ids that end a reply (EOS, end of turn).
    """

    def __init__(self, tokenizer, row: Row, stop_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.row = row
        self.stop_ids = stop_ids
        self.new_ids: list[int] = []
        self.text: str | None = None  # None: not decoded yet
        self.sent = 0  # characters already handed to on_text
        self.finish: str | None = None  # "stop", "length" or "cancelled" once finished

    def advance(self, token: int) -> None:
        """Take the row's next token; set ``finish`` when the row is done, stream new text."""
        row = self.row
        self.new_ids.append(token)
        if token in self.stop_ids:
            self.finish = "stop"
        # Decoding every step costs a little; only rows that watch their text pay for it.
        if row.settings.stop or row.on_text is not None:
            text = self.tokenizer.decode(self.new_ids, skip_special_tokens=True)
            for stop in row.settings.stop:
                position = text.find(stop)
                if position >= 0:
                    text, self.finish = text[:position], "stop"
            self.text = text
        if self.finish is None and len(self.new_ids) >= row.settings.max_new_tokens:
            self.finish = "length"
        if self.finish is None and row.cancelled.is_set():
            self.finish = "cancelled"
        self._stream(final=self.finish is not None)

    def _stream(self, final: bool) -> None:
        if self.row.on_text is None:
            return
        text = self.text or ""
        ready = len(text) if final else len(text) - held_back(text, self.row.settings.stop)
        if ready > self.sent:
            self.row.on_text(text[self.sent : ready])
            self.sent = ready

    def close(self) -> None:
        """Decode the text if the row did not watch it, and send every held-back piece."""
        if self.text is None:
            self.text = self.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        self.finish = self.finish or "length"
        self._stream(final=True)

    def reply(self, seconds: float) -> Reply:
        """The row's reply (call after ``close``); ``seconds`` is its decoding wall time.

        A row decoded under a grammar (``GrammarProcessor``) ends with ``"stop"`` only when the
        grammar says its reply is complete; one cut before (by the token limit or a stop
        string) ends with ``"length"``.
        """
        finish = "stop" if self.finish == "stop" else "length"
        grammar = self.row.logits_processor
        if isinstance(grammar, GrammarProcessor) and self.finish != "cancelled":
            finish = "stop" if grammar.is_complete(self.new_ids) else "length"
        return Reply(
            text=self.text or "",
            prompt_tokens=len(self.row.prompt_ids),
            completion_tokens=len(self.new_ids),
            seconds=seconds,
            finish_reason=finish,
        )
