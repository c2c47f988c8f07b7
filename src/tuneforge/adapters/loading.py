"""Attaching a saved PEFT adapter folder to a loaded base model."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import AdapterError


def attach_adapter(model, adapter_dir: Path | str, name: str = "default"):
    """Wrap ``model`` with the LoRA adapter saved in ``adapter_dir`` (PEFT format).

    Returns:
        the ``peft.PeftModel``, in eval mode.

    Raises:
        AdapterError: the folder is missing, lacks ``adapter_config.json``, or does not fit.
    """
    from peft import PeftModel
    from safetensors import SafetensorError

    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").exists():
        raise AdapterError(
            f"{folder}: not an adapter folder (no adapter_config.json); pass the adapter/ folder "
            "of a training run"
        )
    try:
        wrapped = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise AdapterError(
            f"{folder}: cannot load this adapter onto the base model ({err})"
        ) from err
    return wrapped.eval()
