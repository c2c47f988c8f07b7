"""The one decoding path: rows of token ids in, one ``Reply`` per row out.

``generate_rows`` decodes any number of rows; ``generate`` (one conversation), the adapter
registry (``AdapterRegistry.decode``) and the server's worker all go through it. Two engines
sit under it, with one behaviour per row (``RowProgress``):

- the **fast path** (``batch_decoder.BatchDecoder``) for the Llama-style families: each row in
  its own KV-cache slot at its own positions (no padding), bf16 weights packed for CPU matmuls,
  LoRA for rows on different adapters in one batched product, shared prompt prefixes computed
  once; the server's continuous batching runs on it;
- the **plain path**, ``model.generate`` with left-padded rows (one call per ``group_rows``
  group), for every other model (``batch_decoder.fast_path_blocker`` says why). Greedy rows give
  the same tokens on both paths (tests/generation/test_fast_path.py).

Per row, on both:

- **adapter**: on a peft model, ``adapter_names`` names each row's LoRA (``"__base__"``: none);
  ``AdapterRegistry.decode`` maps ``Row.adapter`` to these names;
- **max_new_tokens, stop strings, cancellation**: each row finishes on its own;
- **streaming**: each row's new text is handed out as it grows, holding back an incomplete
  UTF-8 character or a possible prefix of a stop string;
- **logits processor**: ``Row.logits_processor`` sees the row's new token ids so far and its
  next-token scores, and returns the scores to sample from (masking tokens a grammar forbids,
  for example), before each of the row's tokens, never after the row finished; constrained and
  free rows share a batch. A processor that is a grammar (``GrammarProcessor``: it has
  ``is_complete``) decides the row's finish reason: ``"stop"`` only when its reply is complete,
  ``"length"`` (truncated) otherwise.

Which rows may share a ``model.generate`` call on the plain path (``group_rows``): all greedy
rows together (greedy decoding of a row does not depend on the others; a test checks batched
equals alone); sampled rows without a seed together when temperature and top_p match; a
sampled row with a seed alone (its seed sets the global RNG). The fast path takes all rows in
one batch: a seeded row draws from its own generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tuneforge.data import ensure_pad_token
from tuneforge.generation.batch_decoder import BatchDecoder, active_adapters, fast_path_blocker
from tuneforge.generation.prompts import prompt_ids
from tuneforge.generation.row_progress import Row, RowLogitsProcessor, RowProgress
from tuneforge.generation.settings import GenerationSettings, Reply, sampling_kwargs

BASE_ADAPTER = "__base__"  # peft's adapter name for "no adapter" in a mixed batch


def group_rows(rows: list[Row]) -> list[list[int]]:
    """Split row indexes into groups that can share one ``model.generate`` call (module doc)."""
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


def new_batch_decoder(model, tokenizer, adapters: tuple[str, ...] = ()) -> BatchDecoder | None:
    """A ``BatchDecoder`` for ``model`` (rows may join it at any time), or None when rows on
    ``adapters`` (peft names) need the plain path (``fast_path_blocker``)."""
    if fast_path_blocker(model, adapters) is not None:
        return None
    ensure_pad_token(tokenizer)
    return BatchDecoder(tokenizer, stop_token_ids(tokenizer, model))


def row_adapters(adapter_names: list[str]) -> list[tuple[str, ...]]:
    """peft ``adapter_names`` (``"__base__"``: none) as ``BatchDecoder`` adapter tuples."""
    return [() if name == BASE_ADAPTER else (name,) for name in adapter_names]


class _RowTracker(StoppingCriteria):
    """The plain path's per-row bookkeeping: ``generate`` calls it after every new token."""

    def __init__(self, tokenizer, rows: list[Row], stop_ids: list[int]) -> None:
        self.progress = [RowProgress(tokenizer, row, set(stop_ids)) for row in rows]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for progress, token in zip(self.progress, last, strict=True):
            if progress.finish is None:
                progress.advance(token)
        done = [progress.finish is not None for progress in self.progress]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowLogitsProcessors(LogitsProcessor):
    """Applies each row's own ``logits_processor`` to that row's scores, before sampling."""

    def __init__(self, tracker: _RowTracker) -> None:
        self.tracker = tracker

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        # scores: [rows, vocab]. A finished row only receives padding from now on: skip it.
        for index, progress in enumerate(self.tracker.progress):
            processor = progress.row.logits_processor
            if processor is not None and progress.finish is None:
                scores[index] = processor(list(progress.new_ids), scores[index])
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


def _plain_group(model, tokenizer, rows: list[Row], adapter_names: list[str] | None):
    """One ``model.generate`` call for rows of one group (``group_rows``): the plain path."""
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
        kwargs["logits_processor"] = LogitsProcessorList([_RowLogitsProcessors(tracker)])
    kwargs.update(sampling_kwargs(rows[0].settings))
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    start = time.perf_counter()
    model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
    )
    seconds = time.perf_counter() - start
    replies = []
    for progress in tracker.progress:
        progress.close()
        replies.append(progress.reply(seconds))
    return replies


def generate_rows_plain(
    model, tokenizer, rows: list[Row], adapter_names: list[str] | None = None
) -> list[Reply]:
    """``generate_rows`` on the plain path (``model.generate``) whatever the model: the
    reference the fast path is tested and measured against (tests, bench/decode.py)."""
    replies: list[Reply | None] = [None] * len(rows)
    for group in group_rows(rows):
        names = None if adapter_names is None else [adapter_names[i] for i in group]
        decoded = _plain_group(model, tokenizer, [rows[i] for i in group], names)
        for index, reply in zip(group, decoded, strict=True):
            replies[index] = reply
    return replies


def decode_all(decoder: BatchDecoder, model, rows: list[Row], adapters=None) -> list[Reply]:
    """Run ``decoder`` until ``rows`` (joined all at once) are finished; their replies in order.

    Args:
        adapters: each row's adapter tuple (``BatchDecoder.join``), None: the model's own.
    """
    replies: dict[int, Reply] = {}
    for row, reply in decoder.join(model, rows, adapters):
        replies[id(row)] = reply
    while decoder.active:
        for row, reply in decoder.step(model):
            replies[id(row)] = reply
    return [replies[id(row)] for row in rows]


@torch.inference_mode()
def generate_rows(
    model, tokenizer, rows: list[Row], adapter_names: list[str] | None = None
) -> list[Reply]:
    """Decode ``rows``: together on the fast path, else one ``model.generate`` call per group.

    The tokenizer gets a pad token if it has none (``tuneforge.data.ensure_pad_token``).

    Args:
        model: a causal LM, or a peft model holding one or several LoRA adapters.
        tokenizer: its tokenizer.
        rows: the requests.
        adapter_names: for a peft model with several adapters, each row's peft adapter name
            (``"__base__"``: none); None uses the model as it is (its active adapter, if any).

    Returns:
        one Reply per row, in order: text (stops cut), prompt and completion token counts
        (tokens), the wall time from the start of its decoding to its end (seconds),
        ``finish_reason``.

    Raises:
        ValueError: ``adapter_names`` does not give one name per row.
    """
    if adapter_names is not None and len(adapter_names) != len(rows):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(rows)} rows")
    if not rows:
        return []
    adapters = None if adapter_names is None else row_adapters(adapter_names)
    used = (
        active_adapters(model)
        if adapters is None
        else tuple(sorted({name for names in adapters for name in names}))
    )
    decoder = new_batch_decoder(model, tokenizer, used)
    if decoder is None:
        return generate_rows_plain(model, tokenizer, rows, adapter_names)
    return decode_all(decoder, model, rows, adapters)


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
    row = chat_row(tokenizer, messages, settings, logits_processor, on_text)
    return generate_rows(model, tokenizer, [row])[0]


def chat_row(
    tokenizer,
    messages: list[dict],
    settings: GenerationSettings | None = None,
    logits_processor: RowLogitsProcessor | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Row:
    """The row of a chat prompt (chat template applied), as :func:`generate` decodes it; for
    callers that decode many conversations in one :func:`generate_rows` call (evaluation).

    Args:
        tokenizer: the model's tokenizer.
        messages: chat messages ending with a user turn.
        settings: sampling settings (default: greedy, 256 new tokens).
        logits_processor: the row's ``Row.logits_processor``; None decodes freely.
        on_text: the row's streaming callback.
    """
    return Row(
        prompt_ids(tokenizer, messages),
        settings or GenerationSettings(),
        on_text=on_text,
        logits_processor=logits_processor,
    )
