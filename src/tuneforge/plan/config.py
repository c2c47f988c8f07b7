"""The shape of a model, read from its ``config.json`` alone: no weights are needed to plan.

Supported: decoder-only Llama-family models (``llama``, ``mistral``, ``qwen2``, ``qwen3``):
token embedding, N blocks of [RMSNorm, attention q/k/v/o with grouped-query attention, RMSNorm,
gated MLP gate/up/down], a final RMSNorm and an output head, tied to the embedding or not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tuneforge.errors import ConfigError

# model_type -> (bias on q/k/v, bias on o, per-head q/k RMSNorm); None = read attention_bias.
_FAMILIES: dict[str, tuple[bool | None, bool | None, bool]] = {
    "llama": (None, None, False),
    "mistral": (False, False, False),
    "qwen2": (True, False, False),
    "qwen3": (None, None, True),
}

_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)


@dataclass(frozen=True)
class ModelConfig:
    """The hyperparameters that fix a Llama-family model's parameter count and activation sizes.

    Attributes:
        name: a label for tables (the shipped name, or the config's folder).
        vocab_size, hidden_size, intermediate_size, num_hidden_layers: as in ``config.json``.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (fewer than query heads = grouped-query attention).
        head_dim: features per head (``hidden_size // num_attention_heads`` unless given).
        tie_word_embeddings: the output head shares the embedding matrix.
        qkv_bias, o_bias, mlp_bias: linear layers that carry a bias vector.
        qk_norm: per-head RMSNorm on queries and keys (Qwen3).
    """

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False

    def __post_init__(self) -> None:
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"model config {self.name}: '{field}' must be positive")
        if self.num_attention_heads <= 0 or self.num_key_value_heads <= 0 or self.head_dim <= 0:
            raise ConfigError(
                f"model config {self.name}: head counts and head_dim must be positive"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"model config {self.name}: num_attention_heads ({self.num_attention_heads}) must "
                f"be a multiple of num_key_value_heads ({self.num_key_value_heads})"
            )

    @property
    def q_dim(self) -> int:
        """Width of the query projection's output: heads x head_dim."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection's output: kv heads x head_dim."""
        return self.num_key_value_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int, bool]]:
        """The linear layers of one decoder block: short name -> (in, out, has bias)."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim
        return {
            "q_proj": (h, q, self.qkv_bias),
            "k_proj": (h, kv, self.qkv_bias),
            "v_proj": (h, kv, self.qkv_bias),
            "o_proj": (q, h, self.o_bias),
            "gate_proj": (h, i, self.mlp_bias),
            "up_proj": (h, i, self.mlp_bias),
            "down_proj": (i, h, self.mlp_bias),
        }

    @classmethod
    def from_dict(cls, raw: dict, name: str) -> ModelConfig:
        """Build from a transformers ``config.json`` dictionary.

        Raises:
            ConfigError: an unsupported ``model_type`` or a missing field.
        """
        if "text_config" in raw and "hidden_size" not in raw:
            raw = raw["text_config"]  # multimodal wrappers keep the language model inside
        model_type = raw.get("model_type", "llama")
        if model_type not in _FAMILIES:
            raise ConfigError(
                f"model config {name}: model_type '{model_type}' is not supported by the planner; "
                f"supported: {', '.join(sorted(_FAMILIES))} (Llama-family decoders)"
            )
        missing = [field for field in _REQUIRED if field not in raw]
        if missing:
            raise ConfigError(f"model config {name}: missing field(s) {', '.join(missing)}")
        qkv_bias, o_bias, qk_norm = _FAMILIES[model_type]
        attention_bias = bool(raw.get("attention_bias", False))
        heads = int(raw["num_attention_heads"])
        return cls(
            name=name,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", model_type != "llama")),
            qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
            o_bias=attention_bias if o_bias is None else o_bias,
            mlp_bias=bool(raw.get("mlp_bias", False)),
            qk_norm=qk_norm,
        )


def shipped_config_names() -> list[str]:
    """Names of the model configs shipped with tuneforge (``llama-7b``, ``llama-2-70b``, ...)."""
    folder = resources.files("tuneforge") / "assets" / "model_configs"
    return sorted(
        entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def _read_json(path: Path, name: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the model config ({err.strerror})") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def load_model_config(source: str | Path, home: Path | None = None) -> ModelConfig:
    """Read a model's shape from a shipped name, a ``config.json`` path, or a model reference.

    Args:
        source: ``llama-7b`` (see ``shipped_config_names()``), a path to a ``config.json``, or a
            model reference (``default``, a model folder, a ``.gguf`` file, a hub id) resolved by
            ``tuneforge.models.resolve_folder``.
        home: tuneforge cache root for model references.

    Raises:
        ConfigError: the config cannot be read or describes an unsupported model.
        ModelError: a model reference that cannot be resolved.
    """
    text = str(source)
    if text in shipped_config_names():
        path = resources.files("tuneforge") / "assets" / "model_configs" / f"{text}.json"
        return ModelConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), text)
    path = Path(text).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ConfigError(
                f"{path}: no such config file; pass a config.json, a model reference, or one of "
                f"the shipped names: {', '.join(shipped_config_names())}"
            )
        return ModelConfig.from_dict(_read_json(path, text), path.parent.name or text)
    from tuneforge.errors import ModelError
    from tuneforge.models import resolve_folder

    try:
        folder = resolve_folder(text, home=home, progress=False)
    except ModelError as err:
        raise ModelError(
            f"{err}; or a shipped config name: {', '.join(shipped_config_names())}"
        ) from err
    config_path = Path(folder) / "config.json"
    return ModelConfig.from_dict(_read_json(config_path, text), text)
