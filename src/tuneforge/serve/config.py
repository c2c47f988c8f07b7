"""Server settings: one typed object built by the CLI (or a test) and passed to ``create_app``;
the adapter roots that bound what ``/v1/load_lora_adapter`` may load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import AdapterError, ConfigError


@dataclass
class ServeSettings:
    """How the server behaves.

    Attributes:
        model_name: the id clients send as ``model`` for the base model (and see in /v1/models).
        api_key: when set, every endpoint but ``/health`` needs ``Authorization: Bearer KEY``.
        max_batch_size: most requests decoded together in one batch (rows).
        max_queue: most requests waiting for the model; one more is answered 429 at once.
        adapter_roots: folders inside which ``/v1/load_lora_adapter`` may load adapters
            (resolved, symlinks followed). Empty means: nothing may be hot-loaded.
        default_max_tokens: reply length (tokens) when a request gives no ``max_tokens``
            (capped by the context left after the prompt).
        store: a RAG store folder; enables the ``rag`` request field.
        context_length: the model's context window (tokens); None reads it from the config.
    """

    model_name: str = "default"
    api_key: str | None = None
    max_batch_size: int = 8
    max_queue: int = 64
    adapter_roots: list[Path] = field(default_factory=list)
    default_max_tokens: int = 256
    store: Path | None = None
    context_length: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be >= 1, got {self.max_batch_size}")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue must be >= 1, got {self.max_queue}")
        if self.default_max_tokens < 1:
            raise ConfigError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key is empty; pass a non-empty key or leave the option out")
        self.adapter_roots = [Path(root).resolve() for root in self.adapter_roots]


def default_adapter_roots(start_adapters: dict[str, Path], cwd: Path | None = None) -> list[Path]:
    """The adapter roots used when ``--adapter-root`` is not given.

    The working directory the server starts in, plus the parent folder of every adapter given at
    start (``runs/json/adapter`` allows ``runs/json/``): places the operator already pointed at.
    Nothing outside them (``/etc``, ``~/.ssh``, another user's runs) can be loaded over HTTP.
    """
    roots = [Path(cwd or Path.cwd()).resolve()]
    for folder in start_adapters.values():
        parent = Path(folder).resolve().parent
        if parent not in roots:
            roots.append(parent)
    return roots


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
