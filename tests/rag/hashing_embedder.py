"""A deterministic bag-of-words embedder for tests that run ingests in other processes.

It has the ``Embedder`` interface the store uses (name, source, identity, dimension, tokenizer,
max_tokens, encode) but needs neither torch nor sentence-transformers, so a child process starts
in about a second instead of a dozen. Words hash into ``dimension`` buckets; a query shares
buckets with the chunks that share its words, so search results are meaningful.
"""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")


def _bucket(word: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(word.lower().encode(), digest_size=4).digest()) % size


class WordTokenizer:
    """Words and punctuation marks as tokens, with character offsets (a fast-tokenizer call)."""

    unk_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False, verbose=True):
        if isinstance(text, list):
            encoded = [self(t, add_special_tokens, return_offsets_mapping) for t in text]
            return {key: [e[key] for e in encoded] for key in encoded[0]} if encoded else {}
        matches = list(_WORD.finditer(text))
        # Like WordPiece: a word longer than 100 characters is one unknown token.
        ids = [0 if len(m.group()) > 100 else 1 + _bucket(m.group(), 30000) for m in matches]
        out = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = [m.span() for m in matches]
        return out


class HashingEmbedder:
    """Unit vectors of hashed word counts; ``delay_s`` per text makes an ingest last a while."""

    name = "hashing"
    source = "hashing"
    max_tokens = 512

    def __init__(self, dimension: int = 32, delay_s: float = 0.0) -> None:
        self.dimension = dimension
        self.identity = f"hashing:{dimension}"
        self.tokenizer = WordTokenizer()
        self.delay_s = delay_s

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        time.sleep(self.delay_s * len(texts))
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text):
                vectors[row, _bucket(word, self.dimension)] += 1.0
            vectors[row, -1] += 1e-3  # never the zero vector
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
