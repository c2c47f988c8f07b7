"""Chunking: sections cut into windows of the embedding model's tokens.

Windows hold at most ``chunk_size`` tokens and overlap the previous one by about ``overlap``
tokens. A cut prefers, in order, a paragraph break, a line break, a sentence end, and falls back
to a plain token boundary only when no break lies in the window's second half. Each chunk is an
exact slice of the document's text, so ``start``/``end`` character offsets point back into it.

Every chunk is bounded whatever the text, in two ways:

- **tokens**: re-tokenized on its own, a chunk never has more than ``chunk_size`` tokens;
- **characters**: at most ``chunk_size * MAX_CHARS_PER_TOKEN``. Tokens alone do not bound a
  chunk: WordPiece reads a word of more than 100 characters (a line without spaces, a run of
  emoji) as ONE unknown token, so a 2 MB line was one 2,000,000-character "1-token" chunk, which
  no prompt can hold. Here the characters of an unknown token count one token each, as CJK
  characters do, and a window also stops at ``MAX_CHARS_PER_TOKEN`` characters per token
  (which bounds long whitespace runs too).

A section is tokenized in blocks of about ``BLOCK_CHARS`` characters, so chunking a 20 MB file
holds one block's offsets at a time, not millions; chunks are yielded as they are cut.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.rag.parsing import Document, Section

# How good a place a token boundary is for a cut: paragraph > line > sentence > anywhere.
_PARAGRAPH, _LINE, _SENTENCE, _ANY = 3, 2, 1, 0
# Natural text averages 3.5-4.5 characters per embedding token and stays under 6 per chunk
# (measured on the bundled knowledge base and these docs), so this bound only cuts pathological
# text: whitespace runs, very long vocabulary pieces.
MAX_CHARS_PER_TOKEN = 8
# Characters tokenized at a time (at least 4 windows' worth).
BLOCK_CHARS = 1 << 16
# Sentence ends that need no following space: CJK full-width stops.
_FULL_WIDTH_STOPS = "。！？"


@dataclass
class ChunkSettings:
    """How documents are cut.

    Attributes:
        chunk_size: most tokens (of the embedding model's tokenizer) per chunk.
        overlap: tokens repeated from the end of one chunk at the start of the next.
    """

    chunk_size: int = 160
    overlap: int = 32

    def __post_init__(self) -> None:
        if self.chunk_size < 8:
            raise ConfigError(f"chunk_size must be >= 8 tokens, got {self.chunk_size}")
        if not 0 <= self.overlap <= self.chunk_size // 2:
            raise ConfigError(
                f"overlap must be between 0 and chunk_size/2 = {self.chunk_size // 2} tokens, "
                f"got {self.overlap}"
            )

    @property
    def max_chars(self) -> int:
        """Most characters per chunk: ``chunk_size * MAX_CHARS_PER_TOKEN``."""
        return self.chunk_size * MAX_CHARS_PER_TOKEN


@dataclass
class Chunk:
    """A piece of a document that is embedded and retrieved as a unit.

    Attributes:
        text: the slice ``document.text[start:end]``.
        location: the section it lies in ("page 2", "§ Pricing", "line 7").
        start: character offset of the first character in the document's text.
        end: character offset one past the last character.
        tokens: its length in embedding-model tokens (``text`` tokenized on its own).
    """

    text: str
    location: str
    start: int
    end: int
    tokens: int


def _units(text: str, lo: int, hi: int, tokenizer) -> list[tuple[int, int]]:
    """The counted pieces of ``text[lo:hi]``: ``(start, end)`` offsets into ``text``.

    A unit is a token, except that an unknown token covering several characters becomes one
    unit per character, and tokens sharing a character (byte pieces of one emoji) merge.
    """
    encoded = tokenizer(
        text[lo:hi], add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    unknown = getattr(tokenizer, "unk_token_id", None)
    units: list[tuple[int, int]] = []
    for token_id, (s, e) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if e <= s:
            continue
        s, e = s + lo, e + lo
        if units and s < units[-1][1]:
            units[-1] = (units[-1][0], max(units[-1][1], e))
        elif token_id == unknown and e - s > 1:
            units.extend((i, i + 1) for i in range(s, e))
        else:
            units.append((s, e))
    return units


def _boundary_kinds(text: str, units: list[tuple[int, int]]) -> list[int]:
    """For each unit i, how good a cut just before it is (index 0 is never used)."""
    kinds = [_ANY] * len(units)
    for i in range(1, len(units)):
        gap = text[units[i - 1][1] : units[i][0]]
        last = text[units[i - 1][1] - 1]
        if "\n\n" in gap:
            kinds[i] = _PARAGRAPH
        elif "\n" in gap:
            kinds[i] = _LINE
        elif (gap and last in ".!?") or last in _FULL_WIDTH_STOPS:
            kinds[i] = _SENTENCE
    return kinds


def _windows(
    units: list[tuple[int, int]],
    kinds: list[int],
    settings: ChunkSettings,
    count_tokens: Callable[[int, int], int],
) -> Iterator[tuple[int, int, int]]:
    """Unit windows ``(a, b, tokens)`` over ``units``, cut at the best boundaries."""
    size, n, a = settings.chunk_size, len(units), 0
    ends = [e for _, e in units]
    while a < n:
        # At most `size` units, and at most max_chars characters (always at least one unit).
        within_chars = bisect.bisect_right(ends, units[a][0] + settings.max_chars, lo=a)
        limit = min(n, a + size, max(a + 1, within_chars))
        if limit == n:
            b = n
        else:
            lowest = a + max(1, (limit - a) // 2)
            # Best boundary in the second half of the window; among equals, the latest.
            b = max(range(lowest, limit + 1), key=lambda i: (kinds[i], i))
            if kinds[b] == _ANY:
                b = limit
        tokens = count_tokens(units[a][0], units[b - 1][1])
        # A slice can tokenize into more pieces than it had units (a word cut in the middle,
        # an unknown run short enough to be read piece by piece): shrink until it fits.
        while tokens > size and b - a > 1:
            b = a + max(1, (b - a) * 3 // 4)
            tokens = count_tokens(units[a][0], units[b - 1][1])
        yield a, b, tokens
        if b == n:
            return
        # Overlap in proportion to the window, so windows shortened by the character bound do
        # not advance one unit at a time.
        start = max(b - settings.overlap * (b - a) // size, a + 1)
        # Start the next window at a sentence or better boundary inside the overlap if any.
        better = [i for i in range(start, b) if kinds[i] >= _SENTENCE]
        a = better[0] if better else start


def _block_end(text: str, start: int, block: int) -> int:
    """Where the block starting at ``start`` ends: after the last whitespace in its second half."""
    if len(text) - start <= block:
        return len(text)
    lo, hi = start + block // 2, start + block
    cut = max(text.rfind(space, lo, hi) for space in " \n\t")
    return cut + 1 if cut >= 0 else hi


def _section_chunks(section: Section, tokenizer, settings: ChunkSettings) -> Iterator[Chunk]:
    text = section.text

    def count_tokens(lo: int, hi: int) -> int:
        return len(tokenizer(text[lo:hi], add_special_tokens=False, verbose=False)["input_ids"])

    block = max(BLOCK_CHARS, 4 * settings.max_chars)
    start = 0
    while start < len(text):
        end = _block_end(text, start, block)
        units = _units(text, start, end, tokenizer)
        windows = list(_windows(units, _boundary_kinds(text, units), settings, count_tokens))
        # The last window may end at the block's cut, not at a boundary of the text: redo it
        # at the start of the next block, with the text that follows in view.
        redo = end < len(text) and len(windows) > 1
        next_start = units[windows.pop()[0]][0] if redo else end
        for a, b, tokens in windows:
            lo, hi = units[a][0], units[b - 1][1]
            yield Chunk(
                text=text[lo:hi],
                location=section.location,
                start=section.offset + lo,
                end=section.offset + hi,
                tokens=tokens,
            )
        start = next_start


def chunk_document(document: Document, tokenizer, settings: ChunkSettings) -> Iterator[Chunk]:
    """Cut every section of ``document`` into bounded chunks, yielded in reading order.

    Args:
        document: a parsed document.
        tokenizer: the embedding model's (fast) tokenizer; must return offset mappings.
        settings: chunk size and overlap in tokens.

    Yields:
        chunks of at most ``settings.chunk_size`` tokens and ``settings.max_chars`` characters.
    """
    for section in document.sections:
        yield from _section_chunks(section, tokenizer, settings)
