"""One resolver from a model reference to a loaded model and tokenizer (full precision, or the
4-bit base of a QLoRA adapter: ``tuneforge.models.quantization``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import ModelError
from tuneforge.home import default_home
from tuneforge.models.bundled import ensure_default_model
from tuneforge.models.device import resolve_device, resolve_dtype
from tuneforge.models.gguf_convert import convert_gguf_to_folder, gguf_cache_dir
from tuneforge.models.quantization import (
    describe_four_bit,
    four_bit_config,
    load_causal_lm,
    recorded_compute_dtype,
)
from tuneforge.models.reference import ModelRef, parse_ref


@dataclass
class LoadedModel:
    """A model ready to use.

    Attributes:
        model: a transformers ``PreTrainedModel`` (causal LM), in eval mode.
        tokenizer: its tokenizer (chat template included when the model has one).
        ref: the reference it was loaded from.
        folder: the local folder holding its weights (None for hub ids).
        quantization: the 4-bit settings its linear layers were loaded with (``four_bit_config``
            values, compute dtype resolved), or None for full precision.
    """

    model: torch.nn.Module
    tokenizer: object
    ref: ModelRef
    folder: Path | None
    quantization: dict | None = None

    @property
    def precision(self) -> str:
        """How the weights are held: ``float32``, ``bfloat16``, or ``NF4 4-bit (double
        quantization, compute float32)``."""
        if self.quantization is not None:
            name, details = describe_four_bit(self.quantization)
            return f"{name} ({details})"
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")


def resolve_folder(
    ref: ModelRef | str, home: Path | None = None, progress: bool = True
) -> Path | str:
    """Turn a reference into something ``from_pretrained`` accepts: a local folder or a hub id.

    ``default`` and ``.gguf`` references are converted on first use and cached under ``home``.
    """
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    home = Path(home) if home is not None else default_home()
    if ref.kind == "default":
        return ensure_default_model(home, progress=progress)
    if ref.kind == "gguf":
        cached = gguf_cache_dir(home, ref.path)
        if not (cached / "config.json").exists():
            convert_gguf_to_folder(ref.path, cached, progress=progress)
        return cached
    if ref.kind == "folder":
        check_model_folder(ref.path)
        return ref.path
    return ref.text


def check_model_folder(folder: Path) -> None:
    """Raise ModelError unless ``folder`` holds a causal-LM config and readable weights."""
    from safetensors import SafetensorError, safe_open
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config_path = folder / "config.json"
    if not config_path.exists():
        raise ModelError(
            f"{folder}: not a model folder (no config.json); pass a transformers model folder, "
            "a .gguf file, 'default' or a hub id"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{config_path}: invalid JSON ({err}); restore the file") from err
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{config_path}: model_type {model_type!r} is not a causal language model that "
            "transformers supports; use a decoder-only LLM (llama, mistral, qwen2, gemma, ...)"
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not list(folder.glob("pytorch_model*.bin")):
        raise ModelError(f"{folder}: no weights (*.safetensors or pytorch_model.bin) found")
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as err:
            raise ModelError(
                f"{path}: corrupt or truncated safetensors file ({err}); re-download or re-save it"
            ) from err


def load_tokenizer(source: Path | str):
    """Load the tokenizer of a model folder or hub id."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise ModelError(f"{source}: cannot load the tokenizer ({err})") from err


def load_model(
    ref: str | ModelRef,
    *,
    dtype: str = "auto",
    device: str = "auto",
    home: Path | None = None,
    progress: bool = True,
    quantization: dict | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from any model reference.

    Args:
        ref: ``default``, a model folder, a ``.gguf`` file or a hub id.
        dtype: ``auto`` (bf16 where the device computes it natively, else fp32; see
            ``models.device``), ``float32``, ``bfloat16``, ``float16``; with ``quantization``
            the compute dtype of the 4-bit layers (``auto``: the one the settings record).
        device: ``auto``, ``cpu`` or ``cuda``.
        home: cache root (default ``$TUNEFORGE_HOME`` or ``~/.cache/tuneforge``).
        quantization: the 4-bit settings of a QLoRA adapter's base (``BaseIdentity.
            quantization``) to load the linear layers in 4-bit as in training; None for full
            precision. ``tuneforge.adapters.load_base_for_adapters`` picks it for adapters.

    Raises:
        ModelError: the reference cannot be resolved or its files are unusable.
    """
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    source = resolve_folder(ref, home=home, progress=progress)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config = None
    if quantization is not None:
        if dtype == "auto":
            torch_dtype = recorded_compute_dtype(quantization) or torch_dtype
        config = four_bit_config(torch_dtype, quantization)
    try:
        model = load_causal_lm(source, dtype=torch_dtype, device=torch_device, quantization=config)
    except OSError as err:
        hint = "check the hub id and network access" if ref.kind == "hub" else "check the files"
        raise ModelError(f"{ref.text}: cannot load the model ({err}); {hint}") from err
    tokenizer = load_tokenizer(source)
    model.eval()
    folder = Path(source) if ref.kind != "hub" else None
    used = None
    if config is not None:
        used = {k: v for k, v in config.to_dict().items() if k.startswith("bnb_4bit_")}
        used["bnb_4bit_compute_dtype"] = str(torch_dtype).removeprefix("torch.")
    return LoadedModel(model=model, tokenizer=tokenizer, ref=ref, folder=folder, quantization=used)


def list_models(home: Path | None = None) -> list[dict[str, str]]:
    """The bundled and cached model references, with their state and location."""
    from tuneforge.models.bundled import DEFAULT_NAME, default_model_dir

    home = Path(home) if home is not None else default_home()
    default_dir = default_model_dir(home)
    rows = [
        {
            "ref": "default",
            "name": DEFAULT_NAME,
            "state": "cached"
            if (default_dir / "config.json").exists()
            else "bundled (converted on first use)",
            "path": str(default_dir),
        }
    ]
    gguf_root = home / "models" / "gguf"
    if gguf_root.exists():
        for folder in sorted(p for p in gguf_root.iterdir() if (p / "config.json").exists()):
            rows.append(
                {
                    "ref": str(folder),
                    "name": folder.name,
                    "state": "cached (from .gguf)",
                    "path": str(folder),
                }
            )
    return rows
