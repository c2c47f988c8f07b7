"""The served model: one base plus named LoRA adapters, loaded and unloaded at run time.

Adapter bookkeeping is ``tuneforge.adapters.AdapterRegistry`` (checks that an adapter fits the
base, loads it beside the others, gives back the plain base when the last one goes). Decoding is
the server's own (``decoding.generate_rows``): it needs raw prompts, per-row limits and stops,
and streaming of every row of a batch, which the registry's message-level ``generate_batch``
does not offer. Only the engine's worker thread calls ``load``, ``unload`` and ``generate``, so
the model never changes while a batch runs.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.adapters.registry import AdapterRegistry
from tuneforge.errors import AdapterError
from tuneforge.generation import Reply
from tuneforge.serve.decoding import Row, generate_rows


class AdapterPathError(AdapterError):
    """An adapter path outside every allowed adapter root."""


def check_adapter_path(path: Path | str, roots: list[Path]) -> Path:
    """Resolve ``path`` (symlinks followed) and return it if it lies inside one of ``roots``.

    Raises:
        AdapterPathError: it lies outside them all (``..`` and symlinks cannot escape).
    """
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    allowed = ", ".join(str(root) for root in roots) or "none (hot loading is off)"
    raise AdapterPathError(
        f"{path}: outside the allowed adapter roots ({allowed}); move the adapter there or start "
        "the server with --adapter-root pointing at its folder"
    )


class ModelHost:
    """A loaded base model and tokenizer with the adapters currently attached.

    Args:
        model: the plain base causal LM, in eval mode.
        tokenizer: its tokenizer.
    """

    def __init__(self, model, tokenizer) -> None:
        from tuneforge.data.templates import ensure_chat_template

        ensure_chat_template(tokenizer)  # once here, never mutated later from request threads
        self.tokenizer = tokenizer
        self.registry = AdapterRegistry(model, tokenizer)

    @property
    def model(self):
        """The model batches run on (the base, or the peft model holding the adapters)."""
        return self.registry.model

    @property
    def context_length(self) -> int:
        """The model's context window (tokens)."""
        config = getattr(self.model, "config", None)
        return int(getattr(config, "max_position_embeddings", 2048))

    def names(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return self.registry.names()

    def adapter_dir(self, name: str) -> Path:
        """The folder adapter ``name`` was loaded from."""
        return self.registry.adapter_dir(name)

    def load(self, name: str, folder: Path) -> None:
        """Attach the adapter in ``folder`` under ``name``.

        Raises:
            AdapterError: the name is taken, or the folder is not an adapter for this base.
        """
        self.registry.load(name, folder)

    def unload(self, name: str) -> None:
        """Detach adapter ``name`` and free its weights (callers drain its requests first)."""
        self.registry.unload(name)

    def _peft_name(self, adapter: str | None) -> str:
        # Mixed batches need, per row, the name peft knows the adapter by.
        return self.registry.peft_name(adapter)

    def generate(self, rows: list[Row]) -> list[Reply]:
        """Decode ``rows`` in one batch; they must share a group (``decoding.group_rows``)."""
        names = None
        if hasattr(self.model, "peft_config"):
            names = [self._peft_name(row.adapter) for row in rows]
        return generate_rows(self.model, self.tokenizer, rows, names)
