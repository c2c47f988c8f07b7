"""Chunking: sections cut into windows of the embedding model's tokens.

Windows hold at most ``chunk_size`` tokens and overlap the previous one by about ``overlap``
tokens. A cut prefers, in order, a paragraph break, a line break, a sentence end, and falls back
to a plain token boundary only when no break lies in the window's second half. Each chunk is an
exact slice of the document's text, so ``start``/``end`` character offsets point back into it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.rag.parsing import Document

# How good a place a token boundary is for a cut: paragraph > line > sentence > anywhere.
_PARAGRAPH, _LINE, _SENTENCE, _ANY = 3, 2, 1, 0


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


@dataclass
class Chunk:
    """A piece of a document that is embedded and retrieved as a unit.

    Attributes:
        text: the slice ``document.text[start:end]``.
        location: the section it lies in ("page 2", "§ Pricing", "line 7").
        start: character offset of the first character in the document's text.
        end: character offset one past the last character.
        tokens: its length in embedding-model tokens.
    """

    text: str
    location: str
    start: int
    end: int
    tokens: int


def _boundary_kinds(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """For each token i, how good a cut just before it is (index 0 is never used)."""
    kinds = [_ANY] * len(offsets)
    for i in range(1, len(offsets)):
        gap = text[offsets[i - 1][1] : offsets[i][0]]
        if "\n\n" in gap:
            kinds[i] = _PARAGRAPH
        elif "\n" in gap:
            kinds[i] = _LINE
        elif gap and text[offsets[i - 1][1] - 1] in ".!?":
            kinds[i] = _SENTENCE
    return kinds


def _windows(kinds: list[int], size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows ``[a, b)`` over ``len(kinds)`` tokens, cut at the best boundaries."""
    n, windows, a = len(kinds), [], 0
    while a < n:
        if n - a <= size:
            windows.append((a, n))
            break
        limit = a + size
        lowest = a + max(1, size // 2)
        # Best boundary in the second half of the window; among equals, the latest.
        b = max(range(lowest, limit + 1), key=lambda i: (kinds[i], i))
        if kinds[b] == _ANY:
            b = limit
        windows.append((a, b))
        start = max(b - overlap, a + 1)
        # Start the next window at a sentence or better boundary inside the overlap if any.
        better = [i for i in range(start, b) if kinds[i] >= _SENTENCE]
        a = better[0] if better else start
    return windows


def chunk_document(document: Document, tokenizer, settings: ChunkSettings) -> list[Chunk]:
    """Cut every section of ``document`` into chunks of at most ``settings.chunk_size`` tokens.

    Args:
        document: a parsed document.
        tokenizer: the embedding model's (fast) tokenizer; must return offset mappings.
        settings: chunk size and overlap in tokens.
    """
    chunks = []
    for section in document.sections:
        encoded = tokenizer(
            section.text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,
        )
        offsets = [(s, e) for s, e in encoded["offset_mapping"] if e > s]
        if not offsets:
            continue
        kinds = _boundary_kinds(section.text, offsets)
        for a, b in _windows(kinds, settings.chunk_size, settings.overlap):
            lo, hi = offsets[a][0], offsets[b - 1][1]
            chunks.append(
                Chunk(
                    text=section.text[lo:hi],
                    location=section.location,
                    start=section.offset + lo,
                    end=section.offset + hi,
                    tokens=b - a,
                )
            )
    return chunks
