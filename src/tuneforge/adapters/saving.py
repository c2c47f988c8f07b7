"""Saving an adapter folder in the PEFT format, with what travels with it.

The adapters issue extends this with the base model's identity (architecture, shapes, a weights
fingerprint) so a mismatched base is refused at load time.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.atomic import staged_dir


def save_adapter(model, out_dir: Path | str, tokenizer=None) -> Path:
    """Save a peft-wrapped model's adapter to ``out_dir`` atomically (PEFT format).

    Writes ``adapter_config.json`` and ``adapter_model.safetensors``, plus the tokenizer and its
    chat template when given, so the adapter is usable on its own.
    """
    out_dir = Path(out_dir)
    with staged_dir(out_dir, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir
