"""Saving an adapter folder in the PEFT format, with what travels with it.

Besides peft's ``adapter_config.json`` and ``adapter_model.safetensors`` the folder holds
``base_identity.json`` (architecture, shapes, weights fingerprint of the base, so a mismatched
base is refused at load time) and, when a tokenizer is given, the tokenizer with its chat
template (so the adapter renders prompts exactly as in training wherever it goes).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.adapters.identity import base_identity, write_identity
from tuneforge.atomic import staged_dir
from tuneforge.data.templates import ensure_chat_template


def save_adapter(
    model, out_dir: Path | str, tokenizer=None, *, identity=None, state_dict=None
) -> Path:
    """Save a peft-wrapped model's adapter to ``out_dir`` atomically (PEFT format).

    Args:
        model: a ``peft.PeftModel`` (plain peft or tuneforge-made).
        out_dir: the adapter folder to write (replaced if it exists).
        tokenizer: saved beside the adapter with its chat template (the fallback ChatML template
            is set on it first if it has none).
        identity: the base identity to record (default: computed from ``model``).
        state_dict: the model's whole state dict, when the model itself holds sharded tensors
            (FSDP); peft keeps the adapter's entries.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    with staged_dir(out_dir, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        write_identity(identity or base_identity(model), tmp)
        if tokenizer is not None:
            ensure_chat_template(tokenizer)
            tokenizer.save_pretrained(tmp)
    return out_dir
