"""Preparing a model for each training method; the loop never branches on the method.

- ``full``: every weight trainable, fp32 master weights (AdamW keeps fp32 states).
- ``lora``: the base is frozen (stored in the compute dtype), peft LoRA adapters in fp32.
- ``qlora``: every linear layer of the decoder stored in 4-bit NF4 with double quantization
  (Dettmers et al. 2023, "QLoRA"), computing in the compute dtype; LoRA adapters in fp32.

A lora/qlora run may start from a trained adapter (``init_adapter``, e.g. an SFT run's
``adapter/`` before DPO): its LoRA shape must be the config's, it is checked against the base
like any adapter (``tuneforge.adapters.loading``), and its weights replace the fresh adapter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tuneforge.errors import AdapterError, ConfigError, ModelError
from tuneforge.train.config import TrainConfig
from tuneforge.tuning_vocabulary import resolve_dtype, row_tokens


@dataclass
class PreparedModel:
    """A model ready for ``fit``.

    Attributes:
        model: the module to train (a ``peft.PeftModel`` for lora/qlora).
        tokenizer: its tokenizer.
        source: the folder (or hub id) the base weights came from.
        compute_dtype: the dtype matmuls run in (bf16 through autocast, or fp32).
        target_modules: the adapted module names (lora/qlora), else None.
    """

    model: nn.Module
    tokenizer: object
    source: str
    compute_dtype: torch.dtype
    target_modules: list[str] | None


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (what ``dtype: auto`` asks): a bf16-capable GPU,
    or a CPU with AVX512-BF16/AMX (``models.device.native_bf16``, the rule decoding uses too).

    Measured on a 2-core CPU with AMX (bench/results/train_methods.md): LoRA trains at 729 real
    tokens/s in bf16 against 425 in fp32, full fine-tuning at 542 against 329.
    """
    from tuneforge.models.device import native_bf16

    return native_bf16(device)


def compute_dtype_for(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The run's compute dtype: ``tuning_vocabulary.resolve_dtype`` (auto = bf16 where the
    device computes it natively, else fp32)."""
    name = resolve_dtype(config.dtype, bf16_supported(device))
    return getattr(torch, name)


def output_head_names(model: nn.Module) -> set[str]:
    """Qualified names of the output head (``lm_head``), which LoRA never adapts by default."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, module in model.named_modules() if head is not None and module is head}


def default_target_modules(model: nn.Module) -> list[str]:
    """Short names of every linear layer except the output head (e.g. q_proj ... down_proj)."""
    import bitsandbytes as bnb

    heads = output_head_names(model)
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | bnb.nn.Linear4bit) and name not in heads
    }
    if not names:
        raise ModelError("the model has no linear layers besides its output head to adapt")
    return sorted(names)


def lora_config_for(config: TrainConfig, target_modules: list[str]):
    """The peft ``LoraConfig`` of a run."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules,
        use_rslora=config.use_rslora,
        use_dora=config.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attention_implementation(device_type: str, compute_dtype: str, max_length: int) -> str:
    """The attention kernel for training: ``sdpa``, or ``eager`` for short bf16 rows on CPU.

    Measured on a 2-core AMX CPU (SmolLM2-135M, LoRA, batch 8 x 128 tokens, bf16 autocast):
    torch's CPU flash-attention backward in bf16 takes about a quarter of the step, and the
    plain matmul-softmax-matmul path trains 15% faster. Eager keeps the B x heads x T x T
    probabilities for backward, so it is used only up to 512 tokens; fp32 and CUDA keep sdpa.

    Args:
        device_type: ``cpu`` or ``cuda``.
        compute_dtype: ``float32`` or ``bfloat16`` (resolved, not ``auto``).
        max_length: tokens per row (``tuning_vocabulary.row_tokens``: twice the data's
            max_length for preference pairs).
    """
    if device_type == "cpu" and compute_dtype == "bfloat16" and max_length <= 512:
        return "eager"
    return "sdpa"


def _load_base(
    source: str, method: str, compute_dtype: torch.dtype, device: torch.device, attention: str
):
    """Load the base causal LM: fp32 (full), compute dtype (lora) or NF4 4-bit (qlora)."""
    from tuneforge.models.quantization import four_bit_config, load_causal_lm

    quantization = None
    if method == "qlora":
        dtype, quantization = compute_dtype, four_bit_config(compute_dtype)
    elif method == "lora":
        dtype = compute_dtype  # frozen: storing it in bf16 halves its memory
    else:
        dtype = torch.float32  # trainable: fp32 master weights
    try:
        return load_causal_lm(
            source, dtype=dtype, device=device, quantization=quantization, attention=attention
        )
    except OSError as err:
        raise ModelError(f"{source}: cannot load the model ({err})") from err


def read_starting_adapter(config: TrainConfig):
    """Read ``config.init_adapter`` and check that its LoRA shape is the config's (no model
    needed, so a mismatch is reported before anything loads).

    Returns:
        the ``AdapterFiles`` (None without ``init_adapter``).

    Raises:
        AdapterError: the folder is missing or not a LoRA adapter.
        ConfigError: its r, lora_alpha, use_rslora, use_dora or target_modules differ from the
            config's (the message gives the options that match it).
    """
    if config.init_adapter is None:
        return None
    from tuneforge.adapters.loading import read_adapter

    files = read_adapter(config.init_adapter)
    saved = files.config
    fixes = []
    for name, ours, theirs in (
        ("lora_r", config.lora_r, saved.get("r")),
        ("lora_alpha", float(config.lora_alpha), float(saved.get("lora_alpha", 8))),
        ("use_rslora", config.use_rslora, bool(saved.get("use_rslora", False))),
        ("use_dora", config.use_dora, bool(saved.get("use_dora", False))),
    ):
        if ours != theirs:
            value = str(theirs).lower() if isinstance(theirs, bool) else theirs
            fixes.append((name, ours, value))
    targets = saved.get("target_modules")
    if config.target_modules is not None and set(config.target_modules) != set(targets or ()):
        fixes.append(("target_modules", config.target_modules, ",".join(sorted(targets or ()))))
    if fixes:
        given = ", ".join(f"{name} {ours}" for name, ours, _ in fixes)
        needed = " ".join(f"--{name.replace('_', '-')} {theirs}" for name, _, theirs in fixes)
        raise ConfigError(
            f"train config field 'init_adapter': {files.folder} was trained with another LoRA "
            f"shape than this run's ({given}); a run continues an adapter with its shape: "
            f"pass {needed}"
        )
    return files


def prepare_model(
    config: TrainConfig,
    device: torch.device,
    home: Path | None = None,
    tokenizer=None,
    adapter=None,
):
    """Load the base model named by ``config.model`` and make it trainable per ``config.method``.

    Args:
        tokenizer: the model's tokenizer when the caller loaded it already (``train`` does, to
            read the data before the model); loaded here otherwise.
        adapter: ``read_starting_adapter(config)`` when the caller read it already; read here
            otherwise.

    Returns:
        a PreparedModel.

    Raises:
        ModelError: the model cannot be resolved or loaded.
        ConfigError: a target module that the model does not have, or an ``init_adapter`` of
            another LoRA shape.
        AdapterError: an ``init_adapter`` that does not fit the base.
    """
    from tuneforge.models.loading import load_tokenizer, resolve_folder

    compute_dtype = compute_dtype_for(config, device)
    source = str(resolve_folder(config.model, home=home, progress=config.progress))
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(source)
    torch.manual_seed(config.seed)
    attention = attention_implementation(
        device.type,
        _dtype_name(compute_dtype),
        row_tokens(config.objective, config.data.max_length),
    )
    model = _load_base(source, config.method, compute_dtype, device, attention)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    target_modules = None
    if config.uses_lora:
        adapter = adapter or read_starting_adapter(config)
        model, target_modules = _apply_lora(model, config, adapter)
        if compute_dtype != torch.float32:
            _let_autocast_cast_lora_inputs(model)
        fuse_lora_updates(model)
    model.train()
    return PreparedModel(model, tokenizer, source, compute_dtype, target_modules)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _let_autocast_cast_lora_inputs(model: nn.Module) -> None:
    """Stop peft casting each LoRA layer's bf16 input up to the fp32 adapter dtype.

    Training runs under autocast, which feeds the adapter matmuls bf16 anyway: peft's cast made
    an fp32 copy of the input of every adapted layer (about a tenth of a bf16 CPU step).
    """
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def fuse_lora_updates(model: nn.Module) -> None:
    """Give each plain peft LoRA linear layer a forward that adds ``scaling·(x·Aᵀ)·Bᵀ`` to the
    base output inside one ``addmm``.

    peft computes ``result + lora_B(lora_A(x)) * scaling``: two more passes over the layer's
    whole output (the multiply, the add), and the multiply again in the backward pass. In
    ``addmm`` the scaling lands on the rank-r factors and the sum is the product's own
    accumulation. Measured on a 576-1536-576 pair, LoRA r=8, fp32, batch 8 x 128: forward +
    backward 1.25x faster, the same output to the last bit; a whole LoRA step of the default
    model 1.05x in fp32, 1.01x in bf16 (``bench/lora_forward.py``). Any other case (adapters disabled
    or merged, several active adapters, DoRA and the other variants, a LoRA bias, per-row
    ``adapter_names``, an input the adapter's dtype would need casting for outside autocast)
    takes peft's own forward.
    """
    from peft.tuners.lora.layer import Linear

    for module in model.modules():
        if type(module) is Linear:
            module.forward = _FusedLoraForward(module)


class _FusedLoraForward:
    """The forward ``fuse_lora_updates`` sets on one peft ``lora.Linear`` (see there)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        layer = self.layer
        adapters = layer.active_adapters
        name = adapters[0] if len(adapters) == 1 else None
        if (
            args
            or kwargs
            or name is None
            or name not in layer.lora_A
            or layer.disable_adapters
            or layer.merged
            or name in layer.lora_variant
            or layer.lora_B[name].bias is not None
            or (
                x.dtype != layer.lora_A[name].weight.dtype
                and not torch.is_autocast_enabled(x.device.type)
            )
        ):
            return type(layer).forward(layer, x, *args, **kwargs)
        result = layer.base_layer(x)
        low = torch.nn.functional.linear(layer.lora_dropout[name](x), layer.lora_A[name].weight)
        fused = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            low.reshape(-1, low.shape[-1]),
            layer.lora_B[name].weight.t(),
            alpha=layer.scaling[name],
        )
        return fused.view(result.shape)


def _apply_lora(model: nn.Module, config: TrainConfig, adapter=None):
    """Freeze the base and wrap it with LoRA adapters (fp32) on the target modules: fresh ones,
    or the weights of ``adapter`` (``read_starting_adapter``)."""
    from peft import get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    if adapter is not None:
        from tuneforge.adapters.loading import check_adapter

        check_adapter(adapter, model)
    saved_targets = adapter.config.get("target_modules") if adapter is not None else None
    target_modules = config.target_modules or saved_targets or default_target_modules(model)
    if isinstance(target_modules, str):  # a peft regex: the layers it matches
        raise ConfigError(
            f"train config field 'init_adapter': {adapter.folder} targets the modules matching "
            f"{target_modules!r}; set target_modules to the list of layer names it adapts"
        )
    target_modules = sorted(target_modules)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in target_modules if name not in present]
    if missing:
        raise ConfigError(
            f"train config field 'target_modules' names {missing} which this model does not "
            f"have; linear layers it has: {', '.join(default_target_modules(model))}"
        )
    if config.gradient_checkpointing:
        # With a frozen embedding the checkpointed blocks would see inputs without grad.
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora_config_for(config, target_modules))
    if adapter is not None:
        _load_adapter_weights(peft_model, adapter)
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()  # adapters train in fp32 whatever the base stores
    return peft_model, target_modules


def _load_adapter_weights(peft_model, adapter) -> None:
    """Copy a saved adapter's weights into the fresh (same-shape) adapter of ``peft_model``."""
    from peft.utils import set_peft_model_state_dict

    device = next(peft_model.parameters()).device
    tensors = {key: tensor.to(device) for key, tensor in adapter.tensors.items()}
    result = set_peft_model_state_dict(peft_model, tensors)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing or result.unexpected_keys:
        raise AdapterError(
            f"{adapter.folder}: its weights do not cover this run's adapter (missing "
            f"{missing[:2]}, unexpected {list(result.unexpected_keys)[:2]}); start from an "
            "adapter trained on this model with these target_modules"
        )
