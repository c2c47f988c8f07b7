"""Merging a LoRA adapter into its base: ``W <- W + scaling·B·A`` (Hu et al. 2021, eq. 3).

The merge is a plain function over a state dict, so it is easy to check and to undo:
``merge_lora`` adds each layer's delta in place and ``unmerge_lora`` subtracts it again. The
merged model is the base architecture with different numbers in its weights: no extra modules,
no peft at inference time, so it runs at exactly the base's speed.

``scaling`` is ``lora_alpha / r`` (or ``lora_alpha / sqrt(r)`` with rsLoRA, Kalajdzievski 2023),
per layer when the config has ``rank_pattern``/``alpha_pattern``, as in peft.

A QLoRA adapter was trained on the 4-bit NF4 base, not on the original weights; merging it into
the original weights would add the delta to numbers it never saw. So we load the base in 4-bit
exactly as in training, dequantize it to fp32, merge there, and report how far the merged
model's logits are from the adapter running on the 4-bit base.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.adapters.loading import _LORA_KEY, AdapterFiles, check_adapter, read_adapter
from tuneforge.errors import AdapterError

SAMPLE_PROMPTS = [
    "What is the capital of France?",
    "Return the order as JSON: 2 lamps, ship to Oslo.",
    "Explain fine-tuning in one sentence.",
]


@dataclass
class MergeReport:
    """What ``merge_adapter`` did.

    Attributes:
        out_dir: the merged model folder.
        layers: how many weight matrices received a LoRA delta.
        quantized_base: True when the adapter was trained on a 4-bit base (QLoRA).
        max_logit_diff: max |merged - reference| over the sample prompts' logits, where the
            reference is the unmerged adapter on the base it was trained on (4-bit for QLoRA).
        seconds: wall time of the whole merge (s).
    """

    out_dir: Path
    layers: int
    quantized_base: bool
    max_logit_diff: float
    seconds: float


def _scaling(config: dict, module: str, rank: int) -> float:
    from peft.utils.other import get_pattern_key

    alpha = config.get("lora_alpha", rank)
    pattern = config.get("alpha_pattern") or {}
    if pattern:
        key = get_pattern_key(list(pattern), module)
        alpha = pattern.get(key, alpha)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def lora_deltas(files: AdapterFiles) -> dict[str, torch.Tensor]:
    """``scaling·B·A`` (fp32, shape ``[out, in]``) for each adapted weight, by base weight name.

    Raises:
        AdapterError: the adapter uses a variant that is not a plain low-rank delta (DoRA,
            LoRA bias, modules_to_save, embedding LoRA).
    """
    config, weights = files.config, files.weights_path
    for field, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias")):
        if config.get(field):
            raise AdapterError(
                f"{files.folder / 'adapter_config.json'}: {what} adapters ({field}: true) are "
                "not merged by tuneforge; merge with peft's merge_and_unload() instead"
            )
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in files.tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise AdapterError(
                f"{weights}: tensor {key} is not a LoRA A/B matrix (modules_to_save or another "
                "variant); tuneforge merges plain LoRA adapters only"
            )
        pairs.setdefault(match["module"], {})[match["part"]] = tensor
    deltas = {}
    for module, pair in pairs.items():
        lora_a, lora_b = pair["A"].float(), pair["B"].float()  # [r, in], [out, r]
        delta = _scaling(config, module, lora_a.shape[0]) * (lora_b @ lora_a)
        deltas[f"{module}.weight"] = delta.T if config.get("fan_in_fan_out") else delta
    return deltas


@torch.no_grad()
def merge_lora(state: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]) -> None:
    """``W <- W + delta`` in place for every delta (computed in fp32, stored in W's dtype)."""
    for name, delta in deltas.items():
        if name not in state:
            raise AdapterError(f"base has no weight {name}; load the base the adapter was made for")
        weight = state[name]
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))


@torch.no_grad()
def unmerge_lora(state: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]) -> None:
    """Undo ``merge_lora``: ``W <- W - delta`` in place."""
    merge_lora(state, {name: -delta for name, delta in deltas.items()})


def _quantization_config(files: AdapterFiles):
    """The ``BitsAndBytesConfig`` of a QLoRA adapter's 4-bit base (as trained), or None."""
    from tuneforge.models.quantization import four_bit_config, is_four_bit

    quant = files.identity.quantization if files.identity else None
    if not quant:
        return None
    if not is_four_bit(quant):
        raise AdapterError(
            f"{files.folder}: the adapter was trained on an 8-bit base; tuneforge merges LoRA "
            "adapters of full-precision and 4-bit (QLoRA) bases"
        )
    return four_bit_config(torch.float32, quant)


def _load_base(source, quantization):
    from tuneforge.models.quantization import load_causal_lm

    cpu = torch.device("cpu")
    return load_causal_lm(source, dtype=torch.float32, device=cpu, quantization=quantization).eval()


def sample_batch(tokenizer) -> dict[str, torch.Tensor]:
    from tuneforge.generation import chat_messages, prompt_ids

    rows = [prompt_ids(tokenizer, chat_messages(p)) for p in SAMPLE_PROMPTS]
    width = min(len(r) for r in rows)  # equal lengths: no padding to confuse the comparison
    return {"input_ids": torch.tensor([r[:width] for r in rows])}


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()


def merge_adapter(
    model_ref: str,
    adapter_dir: Path | str,
    out_dir: Path | str,
    *,
    dtype: str = "float32",
    home: Path | None = None,
    progress: bool = True,
) -> MergeReport:
    """Merge the adapter in ``adapter_dir`` into the base ``model_ref``; save a plain model.

    The output folder (safetensors, config, tokenizer with chat template) loads with
    ``AutoModelForCausalLM.from_pretrained`` alone: no tuneforge, no peft.

    Args:
        model_ref: the base model reference (``default``, a folder, a ``.gguf`` file, a hub id).
        adapter_dir: a PEFT LoRA adapter folder (tuneforge- or peft-saved).
        out_dir: the merged model folder to write (replaced atomically if it exists).
        dtype: dtype of the saved weights: ``float32``, ``bfloat16`` or ``float16``; the merge
            itself is always computed in fp32.
        home: tuneforge cache root for resolving ``model_ref``.

    Raises:
        AdapterError: the adapter is corrupt, does not fit the base, or is not plain LoRA.
    """
    from peft import PeftModel

    from tuneforge.atomic import staged_dir
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.device import resolve_dtype
    from tuneforge.models.loading import load_tokenizer, resolve_folder

    start = time.perf_counter()
    files = read_adapter(adapter_dir)
    deltas = lora_deltas(files)
    save_dtype = resolve_dtype(dtype, torch.device("cpu"))
    source = resolve_folder(model_ref, home=home, progress=progress)
    quantization = _quantization_config(files)
    tokenizer_source = files.folder if (files.folder / "tokenizer_config.json").exists() else source
    tokenizer = load_tokenizer(tokenizer_source)
    ensure_chat_template(tokenizer)
    batch = sample_batch(tokenizer)

    # The reference: the adapter unmerged on the base it was trained on (4-bit for QLoRA).
    base = _load_base(source, quantization)
    check_adapter(files, base)
    reference = PeftModel.from_pretrained(base, str(files.folder)).eval()
    expected = _logits(reference, batch)
    base = reference.unload()  # LoRA layers out again, base weights untouched
    del reference
    if quantization is not None:
        # A fresh 4-bit load, dequantized before any forward pass (bitsandbytes repacks weights
        # for its CPU kernel on the first forward): NF4 codes -> the fp32 weights it trained on.
        base = _load_base(source, quantization)
        base.dequantize()
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(base.config, attr):
                delattr(base.config, attr)
    merge_lora(base.state_dict(), deltas)
    actual = _logits(base, batch)
    max_diff = float((actual - expected).abs().max())
    base.to(save_dtype)
    with staged_dir(Path(out_dir), replace=True) as tmp:
        base.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return MergeReport(
        out_dir=Path(out_dir),
        layers=len(deltas),
        quantized_base=quantization is not None,
        max_logit_diff=max_diff,
        seconds=time.perf_counter() - start,
    )
