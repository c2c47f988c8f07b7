"""Model references: the one string a user types to name a model.

``default`` (the bundled SmolLM2-135M-Instruct), a local transformers folder, a ``.gguf`` file,
or a hub id such as ``HuggingFaceTB/SmolLM2-360M-Instruct``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuneforge.errors import ModelError

RefKind = Literal["default", "folder", "gguf", "hub"]

DEFAULT_REF = "default"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelRef:
    """A classified model reference.

    Attributes:
        text: what the user typed.
        kind: ``default``, ``folder``, ``gguf`` or ``hub``.
        path: the local path for ``folder`` and ``gguf`` references.
    """

    text: str
    kind: RefKind
    path: Path | None = None


def parse_ref(text: str) -> ModelRef:
    """Classify a model reference without loading anything.

    Raises:
        ModelError: the reference names a path that does not exist, or a file that is neither a
            ``.gguf`` file nor a model folder.
    """
    text = str(text).strip()
    if text == DEFAULT_REF:
        return ModelRef(text, "default")
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return ModelRef(text, "folder", path.resolve())
        if path.suffix.lower() == ".gguf":
            return ModelRef(text, "gguf", path.resolve())
        raise ModelError(
            f"{path}: is a file but not a .gguf model; pass a model folder (with config.json), "
            "a .gguf file, 'default', or a hub id"
        )
    looks_like_path = text.startswith(("/", ".", "~")) or text.endswith(".gguf") or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelError(
            f"{text}: no such file or folder; pass an existing model folder, a .gguf file, "
            "'default' (the bundled SmolLM2-135M-Instruct) or a hub id like org/name"
        )
    return ModelRef(text, "hub")
