"""The base model's identity, recorded beside an adapter so a mismatched base is refused.

An adapter is a delta on one particular set of base weights: applied to another model of the same
shape it runs without an error and produces nonsense. At save time we write
``base_identity.json``: the architecture, every base parameter's logical shape, and a cheap
weights fingerprint (a few values at fixed positions of each base tensor, plus their SHA-256).
At load time the same numbers are taken from the model in memory and compared.

The fingerprint skips 4-bit tensors (their stored values are packed NF4 codes, not weights); the
embeddings and norms, never quantized, identify a base on their own. Values are compared exactly
when the dtypes match, else within the coarser dtype's rounding (an fp32 adapter on a bf16 base).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tuneforge.errors import AdapterError

IDENTITY_FILE = "base_identity.json"
SAMPLES_PER_TENSOR = 8

# Relative rounding of each dtype (2^-mantissa bits): the tolerance of a cross-dtype comparison.
_REL_EPS = {"float32": 2**-23, "bfloat16": 2**-8, "float16": 2**-11}


@dataclass
class BaseIdentity:
    """What identifies a base model.

    Attributes:
        model_type: ``config.model_type`` (``llama``, ``qwen2``, ...).
        architectures: ``config.architectures``.
        shapes: logical shape of every base parameter, by canonical name.
        samples: ``SAMPLES_PER_TENSOR`` fp32 values at fixed flat positions of each
            non-quantized base tensor, by canonical name.
        dtypes: dtype name of each sampled tensor.
        fingerprint: SHA-256 of the sampled values (a short id to show and compare first).
        quantization: the bitsandbytes config when the base was loaded in 4/8-bit, else None.
        base_model: the base model's name or path as recorded by transformers (informational).
    """

    model_type: str
    architectures: list[str]
    shapes: dict[str, list[int]]
    samples: dict[str, list[float]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    quantization: dict | None = None
    base_model: str = ""


def canonical_name(name: str) -> str | None:
    """The base parameter name under peft wrapping, or None for an adapter's own parameter.

    ``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``.
    """
    if "lora_" in name or ".modules_to_save." in name:
        return None
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def is_quantized(param: torch.Tensor) -> bool:
    """True for a bitsandbytes 4-bit/8-bit parameter (its stored values are codes)."""
    return getattr(param, "quant_state", None) is not None or param.dtype in (
        torch.uint8,
        torch.int8,
    )


def logical_shape(param: torch.Tensor) -> list[int]:
    """The weight's shape before packing (a 4-bit tensor is stored as ``[n*m/2, 1]`` bytes)."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return list(state.shape)
    return list(param.shape)


def _sample(tensor: torch.Tensor) -> list[float]:
    """``SAMPLES_PER_TENSOR`` values at evenly spaced flat positions (first and last included)."""
    flat = tensor.detach().reshape(-1)
    count = flat.numel()
    if count == 0:
        return []
    k = min(SAMPLES_PER_TENSOR, count)
    # integer positions: a float linspace rounds past the end for tensors of > 2^24 values
    positions = torch.tensor([i * (count - 1) // max(k - 1, 1) for i in range(k)])
    return flat[positions.to(flat.device)].float().cpu().tolist()


def _digest(samples: dict[str, list[float]]) -> str:
    payload = json.dumps(sorted(samples.items()), separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()


def _quantization(model) -> dict | None:
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {
        key: str(value) if not isinstance(value, (bool, int, float)) else value
        for key, value in raw.items()
        if value is not None
    }


def base_precision_words(quantization: dict | None) -> str:
    """The base an adapter needs, in words: adapters share a base when these are equal (the
    compute dtype need not be: it is chosen when loading).

    Args:
        quantization: a recorded or computed ``BaseIdentity.quantization``; None (or empty) for
            a full-precision base.
    """
    if not quantization:
        return "the full-precision base"
    if not (quantization.get("load_in_4bit") or quantization.get("_load_in_4bit")):
        return "an 8-bit base"
    quant = str(quantization.get("bnb_4bit_quant_type", "nf4")).upper()
    double = "" if quantization.get("bnb_4bit_use_double_quant") else ", no double quantization"
    return f"the {quant} 4-bit base (QLoRA{double})"


def base_identity(model) -> BaseIdentity:
    """Compute the identity of ``model``'s base weights (plain or peft-wrapped)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shapes: dict[str, list[int]] = {}
    samples: dict[str, list[float]] = {}
    dtypes: dict[str, str] = {}
    for raw_name, param in base.named_parameters():
        name = canonical_name(raw_name)
        if name is None:
            continue
        shapes[name] = logical_shape(param)
        if not is_quantized(param):
            samples[name] = _sample(param)
            dtypes[name] = str(param.dtype).removeprefix("torch.")
    config = base.config
    return BaseIdentity(
        model_type=str(getattr(config, "model_type", "")),
        architectures=list(getattr(config, "architectures", None) or []),
        shapes=shapes,
        samples=samples,
        dtypes=dtypes,
        fingerprint=_digest(samples),
        quantization=_quantization(base),
        base_model=str(getattr(config, "_name_or_path", "") or ""),
    )


def write_identity(identity: BaseIdentity, folder: Path) -> Path:
    """Write ``base_identity.json`` into ``folder`` (already a staging folder: plain write)."""
    path = Path(folder) / IDENTITY_FILE
    path.write_text(json.dumps(asdict(identity), indent=1) + "\n", encoding="utf-8")
    return path


def read_identity(folder: Path) -> BaseIdentity | None:
    """The identity saved in an adapter folder, or None for a folder saved by plain peft."""
    path = Path(folder) / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BaseIdentity(**data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise AdapterError(
            f"{path}: unreadable base identity ({err}); restore the file, or delete it to load "
            "the adapter without the base check"
        ) from err


def _close(a: list[float], b: list[float], rel: float) -> bool:
    ta, tb = torch.tensor(a), torch.tensor(b)
    return ta.shape == tb.shape and bool(
        torch.all((ta - tb).abs() <= rel * torch.maximum(ta.abs(), tb.abs()) + 1e-30)
    )


def check_identity(saved: BaseIdentity, current: BaseIdentity, adapter_dir: Path) -> None:
    """Raise AdapterError unless ``current`` is the base ``saved`` was recorded from.

    Args:
        saved: the identity read from the adapter folder.
        current: ``base_identity`` of the model the adapter is about to be applied to.
        adapter_dir: the adapter folder, for the message.
    """
    path = Path(adapter_dir) / IDENTITY_FILE
    fix = f"load the base it was trained on ({saved.base_model or 'see ' + str(path)}) with --model"
    if saved.model_type != current.model_type:
        raise AdapterError(
            f"{path}: adapter was trained on a {saved.model_type!r} model, this base is "
            f"{current.model_type!r}; {fix}"
        )
    trained_on, loaded = (
        base_precision_words(saved.quantization),
        base_precision_words(current.quantization),
    )
    if trained_on != loaded:  # checked before the shapes: 4-bit weights are packed
        raise AdapterError(
            f"{path}: the adapter was trained on {trained_on}, this base is {loaded}; load it "
            "where the base is the one it was trained on (a command or server started with "
            "--adapter picks it), or merge it into a model of its own (tuneforge merge)"
        )
    differing = [name for name, shape in saved.shapes.items() if current.shapes.get(name) != shape]
    missing = sorted(set(current.shapes) ^ set(saved.shapes))
    if differing or missing:
        first = (differing or missing)[0]
        raise AdapterError(
            f"{path}: base shapes differ ({len(differing) + len(missing)} parameters, first "
            f"{first}: adapter base {saved.shapes.get(first)}, this base "
            f"{current.shapes.get(first)}); {fix}"
        )
    if saved.fingerprint == current.fingerprint:
        return
    for name, values in saved.samples.items():
        if name not in current.samples:  # quantized here but not at save time (or the reverse)
            continue
        dtypes = {saved.dtypes.get(name, "float32"), current.dtypes.get(name, "float32")}
        rel = max(_REL_EPS.get(d, 2**-8) for d in dtypes) if len(dtypes) > 1 else 0.0
        if not _close(values, current.samples[name], rel):
            raise AdapterError(
                f"{path}: the base weights differ from those the adapter was trained on "
                f"(fingerprint {saved.fingerprint[:12]} vs {current.fingerprint[:12]}, first "
                f"difference in {name}); {fix}"
            )
