"""Server settings: one typed object built by the CLI (or a test) and passed to ``create_app``;
the adapter roots that bound what ``/v1/load_lora_adapter`` may load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import AdapterError, ConfigError
from tuneforge.serve.guards import host_name

# Large enough for any prompt a model's context holds (a 128k-token context is ~0.5 MB of
# text), small enough that reading and tokenizing one body stays cheap.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
MIN_MAX_BODY_BYTES = 1024


@dataclass
class ServeSettings:
    """How the server behaves.

    Attributes:
        model_name: the id clients send as ``model`` for the base model (and see in /v1/models).
        api_key: when set, every endpoint but ``/health`` needs ``Authorization: Bearer KEY``;
            visible ASCII only (what an HTTP header carries).
        max_batch_size: most requests decoded together in one batch (rows).
        max_queue: most requests waiting for the model; one more is answered 429 at once.
        adapter_roots: folders inside which ``/v1/load_lora_adapter`` may load adapters
            (resolved, symlinks followed). Empty (the default): nothing may be loaded over
            HTTP. The filesystem root, the home folder and its parents are refused.
        default_max_tokens: reply length (tokens) when a request gives no ``max_tokens``
            (capped by the context left after the prompt).
        store: a RAG store folder; enables the ``rag`` request field.
        context_length: the model's context window (tokens); None reads it from the config.
        host: the address the server binds; its Host check answers the names it implies.
        allowed_hosts: more names clients may send in the Host header (``"*"``: any).
        max_body_bytes: largest request body (bytes); a larger one is answered 413.
    """

    model_name: str = "default"
    api_key: str | None = None
    max_batch_size: int = 8
    max_queue: int = 64
    adapter_roots: list[Path] = field(default_factory=list)
    default_max_tokens: int = 256
    store: Path | None = None
    context_length: int | None = None
    host: str = "127.0.0.1"
    allowed_hosts: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be >= 1, got {self.max_batch_size}")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue must be >= 1, got {self.max_queue}")
        if self.default_max_tokens < 1:
            raise ConfigError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_body_bytes < MIN_MAX_BODY_BYTES:
            raise ConfigError(
                f"--max-body-bytes must be >= {MIN_MAX_BODY_BYTES} (bytes), got {self.max_body_bytes}"
            )
        if self.api_key is not None:
            check_api_key(self.api_key)
        for name in self.allowed_hosts:
            if name != "*" and host_name(name) is None:
                raise ConfigError(
                    f"--allowed-host {name!r}: not a host name; give a name such as "
                    "api.example.com or an address such as 192.168.1.5 (or '*' for any)"
                )
        self.adapter_roots = [checked_adapter_root(root) for root in self.adapter_roots]


def check_api_key(key: str) -> None:
    """Refuse an API key that an HTTP client cannot send back exactly (the key is not shown).

    Raises:
        ConfigError: the key is empty, or holds anything but visible ASCII (spaces, control
            or non-ASCII characters).
    """
    if not key.strip():
        raise ConfigError("--api-key is empty; pass a non-empty key or leave the option out")
    if not all("!" <= char <= "~" for char in key):
        raise ConfigError(
            "--api-key: use visible ASCII characters only (letters, digits, punctuation; no "
            "spaces or accents): clients send the key in an HTTP header, which carries ASCII"
        )


def checked_adapter_root(root: Path | str) -> Path:
    """``root`` resolved, if it is a folder that is safe to open to HTTP clients.

    Raises:
        ConfigError: it is missing or not a folder, or it is the filesystem root, the home
            folder or a parent of it: any adapter *and any folder* there could be loaded or
            probed over HTTP.
    """
    folder = Path(root).expanduser().resolve()
    if not folder.exists():
        raise ConfigError(f"--adapter-root {root}: no such folder; create it or fix the path")
    if not folder.is_dir():
        raise ConfigError(f"--adapter-root {root}: not a folder; pass the folder holding adapters")
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no home folder known (no $HOME, no passwd entry)
        home = None
    if folder == Path(folder.anchor) or (home is not None and home.is_relative_to(folder)):
        raise ConfigError(
            f"--adapter-root {folder}: too wide: HTTP clients could load any folder under it, "
            "your home folder included; point it at the folder that holds your adapters, "
            "such as runs/"
        )
    return folder


class AdapterPathError(AdapterError):
    """An adapter path outside every allowed adapter root (or one that cannot be resolved)."""


OUTSIDE_THE_ROOTS = (
    "lora_path is not inside an adapter root of this server (the folders the operator allowed "
    "with --adapter-root); nothing outside them is loaded or described"
)


def check_adapter_path(path: Path | str, roots: list[Path]) -> Path:
    """Resolve ``path`` (``~`` expanded, symlinks followed) and return it if it lies inside
    one of ``roots``.

    Raises:
        AdapterPathError: it lies outside them all, or cannot be resolved (a symlink loop, a
            NUL byte). The message is the same whatever the path, and names none: a client
            learns nothing about what exists outside the roots.
    """
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        resolved = None
    if resolved is not None and any(resolved.is_relative_to(root) for root in roots):
        return resolved
    raise AdapterPathError(OUTSIDE_THE_ROOTS)
