"""Exact parameter counts from a model config: embeddings, attention, MLP, norms, head, LoRA.

The counts equal ``sum(p.numel() for p in model.parameters())`` of the real transformers model
(tied weights once) and, for LoRA, peft's ``get_nb_trainable_parameters()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.plan.config import ModelConfig
from tuneforge.tuning_vocabulary import LORA_R, METHODS


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a model prepared for one training method.

    Attributes:
        total: every parameter, LoRA adapters included (peft's ``all_param``).
        trainable: parameters that receive gradients.
        base: parameters of the base model alone.
        quantized: base parameters stored in 4-bit NF4 under qlora (the decoder's linear
            weights), else 0.
        lora: LoRA adapter parameters (0 for full fine-tuning).
    """

    total: int
    trainable: int
    base: int
    quantized: int
    lora: int

    @property
    def percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Parameters of one LoRA pair on an ``in -> out`` linear: A is [r, in], B is [out, r]."""
    return r * (in_features + out_features)


def percent_fewer(trainable: int, reference: int) -> float:
    """How many percent fewer parameters ``trainable`` is than ``reference``."""
    return 100.0 * (1.0 - trainable / reference)


def default_target_modules(config: ModelConfig) -> list[str]:
    """Every linear layer of a decoder block (the output head is never adapted by default)."""
    return list(config.linear_shapes())


def check_target_modules(config: ModelConfig, target_modules: list[str] | None) -> list[str]:
    """The target modules to adapt, validated against the block's linear layers.

    Raises:
        ConfigError: a name that is not a linear layer of the block.
    """
    if target_modules is None:
        return default_target_modules(config)
    known = config.linear_shapes()
    unknown = [name for name in target_modules if name not in known]
    if unknown or not target_modules:
        raise ConfigError(
            f"target_modules {unknown or '[]'} are not linear layers of {config.name}; "
            f"choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(target_modules))


def block_linear_weights(config: ModelConfig) -> int:
    """Weight elements (no biases) of one block's linear layers: what qlora stores in NF4."""
    return sum(i * o for i, o, _ in config.linear_shapes().values())


def base_parameter_count(config: ModelConfig) -> int:
    """Parameters of the base model: embedding, blocks, final norm, head (once if tied)."""
    h = config.hidden_size
    per_block = 2 * h  # input and post-attention RMSNorm weights
    per_block += sum(i * o + (o if bias else 0) for i, o, bias in config.linear_shapes().values())
    if config.qk_norm:
        per_block += 2 * config.head_dim
    embedding = config.vocab_size * h
    head = 0 if config.tie_word_embeddings else config.vocab_size * h
    return embedding + config.num_hidden_layers * per_block + h + head


def lora_count(config: ModelConfig, r: int, target_modules: list[str] | None = None) -> int:
    """LoRA parameters over all blocks for the given target modules at rank ``r``."""
    if r <= 0:
        raise ConfigError(f"lora_r must be a positive integer, got {r}")
    shapes = config.linear_shapes()
    names = check_target_modules(config, target_modules)
    per_block = sum(lora_parameter_count(shapes[n][0], shapes[n][1], r) for n in names)
    return config.num_hidden_layers * per_block


def count_parameters(
    config: ModelConfig,
    method: str = "full",
    lora_r: int = LORA_R,
    target_modules: list[str] | None = None,
) -> ParameterCount:
    """Total and trainable parameters of ``config`` prepared for ``method`` (exact integers).

    Raises:
        ConfigError: an unknown method, a bad rank, or unknown target modules.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    base = base_parameter_count(config)
    if method == "full":
        return ParameterCount(total=base, trainable=base, base=base, quantized=0, lora=0)
    lora = lora_count(config, lora_r, target_modules)
    quantized = config.num_hidden_layers * block_linear_weights(config) if method == "qlora" else 0
    return ParameterCount(
        total=base + lora, trainable=lora, base=base, quantized=quantized, lora=lora
    )
