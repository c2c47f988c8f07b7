"""Reading a PEFT adapter folder, checking that it fits a base, and attaching it.

Every check runs *before* peft touches the model, so a refused adapter leaves the model as it
was: the base identity (when the folder has one), the LoRA rank and targets against the
config and the base's layers, and the safetensors file itself.

An adapter runs on the base it was trained on: ``load_base_for_adapters`` loads the base in
NF4 4-bit for QLoRA adapters (their ``base_identity.json`` records the 4-bit settings), in full
precision otherwise. ``generate``, ``chat``, ``eval``, ``rag ask`` and ``serve`` load through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.adapters.identity import BaseIdentity, base_identity, check_identity, read_identity
from tuneforge.errors import AdapterError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"

# base_model.model.<module>.lora_A.weight (peft drops the adapter name when saving)
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass
class AdapterFiles:
    """An adapter folder read into memory.

    Attributes:
        folder: the folder.
        config: ``adapter_config.json`` as a dict.
        tensors: the adapter weights by the names peft saved them under.
        identity: the recorded base identity, or None (folder saved by plain peft).
    """

    folder: Path
    config: dict
    tensors: dict[str, torch.Tensor]
    identity: BaseIdentity | None

    @property
    def weights_path(self) -> Path:
        path = self.folder / WEIGHTS_FILE
        return path if path.exists() else self.folder / LEGACY_WEIGHTS_FILE


_JSON_KINDS = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def read_adapter_config(folder: Path) -> dict:
    """``adapter_config.json`` of ``folder``; AdapterError if missing, invalid or not LoRA."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise AdapterError(
            f"{folder}: not an adapter folder (no {CONFIG_FILE}); pass the adapter/ folder "
            "of a training run"
        )
    if not path.is_file():
        raise AdapterError(f"{path}: not a file; an adapter's config is a JSON file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(f"{path}: invalid JSON ({err}); restore the file") from err
    except OSError as err:
        raise AdapterError(f"{path}: cannot be read ({err.strerror}); fix its permissions") from err
    if not isinstance(config, dict):
        kind = _JSON_KINDS.get(type(config), "a number")
        raise AdapterError(
            f"{path}: holds {kind}, not a JSON object with the adapter's settings; restore "
            "the file (peft writes it with save_pretrained)"
        )
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(
            f"{path}: peft_type {config.get('peft_type')!r} is not supported; tuneforge loads "
            "LoRA adapters (peft_type LORA)"
        )
    if not isinstance(config.get("r"), int) or config["r"] < 1:
        raise AdapterError(f"{path}: field 'r' must be a positive integer, got {config.get('r')!r}")
    return config


def read_adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The adapter weights; AdapterError naming the file if it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if path.exists():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterError(
                f"{path}: corrupt or truncated safetensors file ({err}); re-save the adapter "
                "or copy the folder again"
            ) from err
    legacy = Path(folder) / LEGACY_WEIGHTS_FILE
    if legacy.exists():
        try:
            return torch.load(str(legacy), map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError) as err:
            raise AdapterError(f"{legacy}: corrupt adapter weights ({err}); re-save it") from err
    raise AdapterError(
        f"{folder}: no {WEIGHTS_FILE} in the adapter folder; copy the whole adapter folder"
    )


def read_adapter(folder: Path | str) -> AdapterFiles:
    """Read an adapter folder's config, weights and base identity (no model needed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: no such adapter folder; pass a folder with {CONFIG_FILE}")
    config = read_adapter_config(folder)
    return AdapterFiles(folder, config, read_adapter_tensors(folder), read_identity(folder))


def trained_quantization(folder: Path | str) -> dict | None:
    """The 4-bit settings of the base the adapter in ``folder`` was trained on, or None.

    None means a full-precision base, or none recorded (an adapter saved by plain peft).

    Raises:
        AdapterError: the base was 8-bit (tuneforge loads full-precision and 4-bit bases).
    """
    from tuneforge.models.quantization import is_four_bit

    identity = read_identity(Path(folder))
    recorded = identity.quantization if identity is not None else None
    if recorded and not is_four_bit(recorded):
        raise AdapterError(
            f"{folder}: the adapter was trained on an 8-bit base; tuneforge loads adapters of "
            "full-precision and 4-bit (QLoRA) bases"
        )
    return recorded or None


def load_base_for_adapters(
    model_ref: str,
    adapter_dirs: Iterable[Path | str],
    *,
    dtype: str = "auto",
    device: str = "auto",
    home: Path | None = None,
    progress: bool = True,
):
    """Load the base model as the given adapters were trained on it.

    QLoRA adapters get the NF4 4-bit base with the settings they recorded (their compute dtype
    unless ``dtype`` is given), so they answer as the model they were trained as, and as their
    merged model does; other adapters (and none) get the full-precision base. One loaded base
    serves all the adapters (a server's), so they must agree.

    Args:
        model_ref: the base model reference (``default``, a folder, a ``.gguf`` file, a hub id).
        adapter_dirs: the adapter folders that will be attached (may be empty).
        dtype, device, home, progress: as for ``tuneforge.models.load_model``.

    Returns:
        a ``tuneforge.models.LoadedModel``; its ``precision`` says which base it is.

    Raises:
        AdapterError: adapters trained on different bases (4-bit and full precision, or other
            4-bit settings), or an 8-bit one.
        ModelError: the base cannot be loaded.
    """
    from tuneforge.models import load_model

    bases = {Path(folder): trained_quantization(folder) for folder in adapter_dirs}
    groups: dict[str, list[Path]] = {}  # the base, in words -> the adapters trained on it
    for folder, quantization in bases.items():
        groups.setdefault(_base_words(quantization), []).append(folder)
    if len(groups) > 1:
        described = "; ".join(
            f"{', '.join(str(f) for f in folders)} on {words}" for words, folders in groups.items()
        )
        raise AdapterError(
            f"adapters trained on different bases cannot share one base: {described}. Load them "
            "in separate commands (or servers), one per base; or merge an adapter into a model "
            "of its own (tuneforge merge) and serve that"
        )
    return load_model(
        model_ref,
        dtype=dtype,
        device=device,
        home=home,
        progress=progress,
        quantization=next(iter(bases.values()), None),
    )


def _base_words(quantization: dict | None) -> str:
    """The base an adapter needs, in words; adapters share a base when these are equal (the
    compute dtype need not be: it is chosen when loading)."""
    if quantization is None:
        return "the full-precision base"
    quant = str(quantization.get("bnb_4bit_quant_type", "nf4")).upper()
    double = "" if quantization.get("bnb_4bit_use_double_quant") else ", no double quantization"
    return f"the {quant} 4-bit base (QLoRA{double})"


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    """``(in_features, out_features)`` of every linear layer of the base, by module name."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    shapes = {}
    for name, module in base.named_modules():
        if "lora_" in name or name.endswith(".base_layer") or "modules_to_save" in name:
            continue
        if "original_module" in name:
            continue
        if hasattr(module, "in_features") and hasattr(module, "out_features"):
            shapes[name] = (int(module.in_features), int(module.out_features))
    return shapes


def expected_rank(config: dict, module: str) -> int:
    """The rank peft gives ``module``: a ``rank_pattern`` entry, else ``r``."""
    from peft.utils.other import get_pattern_key

    pattern = config.get("rank_pattern") or {}
    if pattern:
        key = get_pattern_key(list(pattern), module)
        if key in pattern:
            return int(pattern[key])
    return int(config["r"])


def _targets(config: dict) -> list[str] | str | None:
    targets = config.get("target_modules")
    return sorted(targets) if isinstance(targets, (list, set, tuple)) else targets


def _targets_module(target: str, module: str) -> bool:
    """peft's rule for a ``target_modules`` list entry: the full name or its last parts."""
    return module == target or module.endswith("." + target)


def check_fits(files: AdapterFiles, shapes: dict[str, tuple[int, int]]) -> None:
    """Raise AdapterError unless every LoRA pair in ``files`` fits a linear layer of the base.

    Checks, per pair: the module exists in the base, ``A`` is ``[r, in]`` and ``B`` is
    ``[out, r]`` with ``r`` the rank the config declares, and the module is one the config
    targets.
    """
    config_path = files.folder / CONFIG_FILE
    weights = files.weights_path
    targets = _targets(files.config)
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in files.tensors.items():
        match = _LORA_KEY.match(key)
        if match:
            modules.setdefault(match["module"], {})[match["part"]] = tensor
    if not modules:
        raise AdapterError(f"{weights}: holds no LoRA weights (lora_A/lora_B); re-save the adapter")
    if isinstance(targets, list):
        unknown = [t for t in targets if not any(_targets_module(t, n) for n in shapes)]
        if unknown:
            raise AdapterError(
                f"{config_path}: target_modules {unknown[:3]} name no layer of this base (its linear "
                f"layers end in {sorted({n.split('.')[-1] for n in shapes})}); the adapter was "
                "made for another architecture: load the base it was trained on"
            )
    for module, pair in sorted(modules.items()):
        if module not in shapes:
            raise AdapterError(
                f"{weights}: weights for {module}, a layer this base does not have; the adapter "
                "was made for another architecture: load the base it was trained on"
            )
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{weights}: {module} has lora_{next(iter(pair))} only; re-save it")
        if isinstance(targets, list) and not any(_targets_module(t, module) for t in targets):
            raise AdapterError(
                f"{weights}: weights for {module}, which target_modules in {config_path} "
                "does not name; the config and the weights disagree: re-save it"
            )
        fan_in, fan_out = shapes[module]
        rank = expected_rank(files.config, module)
        a_shape, b_shape = tuple(pair["A"].shape), tuple(pair["B"].shape)
        if a_shape[0] != rank or b_shape[-1] != rank:
            raise AdapterError(
                f"{config_path}: rank mismatch for {module}: the config says r={rank}, "
                f"{weights.name} holds rank {a_shape[0]}; the config and the weights disagree: "
                "re-save the adapter (or fix 'r'/'rank_pattern')"
            )
        if a_shape != (rank, fan_in) or b_shape != (fan_out, rank):
            raise AdapterError(
                f"{weights}: {module} lora_A {list(a_shape)} / lora_B {list(b_shape)} do not fit "
                f"the base layer ({fan_in} in, {fan_out} out); load the base it was trained on"
            )


def check_adapter(
    files: AdapterFiles, model, identity: BaseIdentity | None = None
) -> BaseIdentity | None:
    """Run every check of ``files`` against ``model``; return the base identity it computed.

    Args:
        files: the adapter read with ``read_adapter``.
        model: the base (plain or peft-wrapped).
        identity: ``base_identity(model)`` if the caller has it cached.
    """
    if files.identity is not None:
        identity = identity or base_identity(model)
        check_identity(files.identity, identity, files.folder)
    check_fits(files, linear_shapes(model))
    return identity


def attach_adapter(model, adapter_dir: Path | str, name: str = "default"):
    """Wrap ``model`` with the LoRA adapter saved in ``adapter_dir`` (PEFT format).

    ``model`` may already be a ``PeftModel``: the adapter is then added beside the others under
    ``name`` and made active.

    Returns:
        the ``peft.PeftModel``, in eval mode.

    Raises:
        AdapterError: the folder is missing, corrupt, or does not fit this base (identity, rank,
            targets); the model is left unchanged.
    """
    files = read_adapter(adapter_dir)
    check_adapter(files, model)
    return load_checked(model, files, name)


def load_checked(model, files: AdapterFiles, name: str):
    """Load an already checked adapter into ``model`` with peft; undo a partial load on failure.

    What ``PeftModel.from_pretrained``/``load_adapter`` do, minus reading the weights a second
    time, and with the LoRA layers created empty (``low_cpu_mem_usage``) instead of randomly
    initialised and then overwritten.
    """
    from peft import LoraConfig, PeftModel
    from peft.utils import set_peft_model_state_dict

    is_peft = isinstance(model, PeftModel)
    try:
        config = LoraConfig.from_pretrained(str(files.folder))
        config.inference_mode = True
        if is_peft:
            model.add_adapter(name, config, low_cpu_mem_usage=True)
            wrapped = model
        else:
            wrapped = PeftModel(model, config, adapter_name=name, low_cpu_mem_usage=True)
        device = next(model.parameters()).device
        tensors = {key: tensor.to(device) for key, tensor in files.tensors.items()}
        result = set_peft_model_state_dict(
            wrapped, tensors, adapter_name=name, low_cpu_mem_usage=True
        )
        missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
        if missing:
            raise ValueError(f"no weights for {len(missing)} LoRA tensors, first {missing[0]}")
        wrapped.set_adapter(name)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        if is_peft and name in model.peft_config:
            model.delete_adapter(name)
        elif not is_peft:
            strip_lora_layers(model)
        raise AdapterError(
            f"{files.folder}: cannot load this adapter onto the base model ({err})"
        ) from err
    return wrapped.eval()


def strip_lora_layers(model) -> None:
    """Put every peft LoRA wrapper in ``model`` back to its original layer (undo an injection)."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
