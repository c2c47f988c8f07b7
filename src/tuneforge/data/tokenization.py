"""Token ids and labels from rendered texts, in batch calls to the fast tokenizer.

Labels are *not* shifted (the model shifts them): ``labels[t] == input_ids[t]`` where token ``t``
carries loss and ``-100`` elsewhere. A token carries loss when its characters overlap a
supervised span of the rendered text (character offsets from the fast tokenizer).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tuneforge.data.rendering import Rendered

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    """One training example: token ids and labels of the same length (-100: no loss)."""

    input_ids: list[int]
    labels: list[int]


def encode_texts(tokenizer, texts: list[str], add_special_tokens: bool) -> list | None:
    """Encode with the Rust backend in one call (it releases the GIL, so it can run in a thread
    while Python works on the previous chunk); None when the tokenizer has no usable backend.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None  # no backend, or one set to truncate/pad: let transformers handle it
    return backend.encode_batch(texts, add_special_tokens=add_special_tokens)


def label_rendered(
    tokenizer, rendered: list[Rendered], encodings: list | None, add_special_tokens: bool
) -> list[TokenizedExample]:
    """Token ids and labels for ``rendered``, from ``encode_texts`` output when there is one."""
    if encodings is not None:
        return [_label_encoding(e, item.spans) for e, item in zip(encodings, rendered, strict=True)]
    texts = [item.text for item in rendered]
    if getattr(tokenizer, "is_fast", False):
        batch = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        pairs = zip(batch["input_ids"], batch["offset_mapping"], strict=True)
        return [
            _label(ids, offsets, item.spans)
            for (ids, offsets), item in zip(pairs, rendered, strict=True)
        ]
    return [_tokenize_by_prefix(tokenizer, item, add_special_tokens) for item in rendered]


def _label_encoding(encoding, spans) -> TokenizedExample:
    """Label from a ``tokenizers.Encoding``: look up only the span boundaries (fast)."""
    ids = encoding.ids
    labels = [IGNORE_INDEX] * len(ids)
    for span_start, span_end in spans:
        first = encoding.char_to_token(span_start)
        last = encoding.char_to_token(span_end - 1)
        if first is None or last is None:  # a boundary char no token covers (normalizers)
            return _label(ids, encoding.offsets, spans)
        labels[first : last + 1] = ids[first : last + 1]
    return TokenizedExample(ids, labels)


def _label(ids: list[int], offsets, spans) -> TokenizedExample:
    labels = [IGNORE_INDEX] * len(ids)
    if spans:
        starts = [start for start, _ in offsets]
        ends = [end for _, end in offsets]
        for span_start, span_end in spans:
            first = bisect.bisect_right(ends, span_start)  # first token ending after the start
            stop = bisect.bisect_left(starts, span_end)  # first token starting at/after the end
            labels[first:stop] = ids[first:stop]
    return TokenizedExample(list(ids), labels)


def _tokenize_by_prefix(tokenizer, item: Rendered, add_special_tokens: bool) -> TokenizedExample:
    """Slow tokenizers have no offsets: count the tokens of each span boundary's prefix."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    ids = encode(item.text)
    labels = [IGNORE_INDEX] * len(ids)
    for span_start, span_end in item.spans:
        first, stop = len(encode(item.text[:span_start])), len(encode(item.text[:span_end]))
        labels[first:stop] = ids[first:stop]
    return TokenizedExample(ids, labels)
