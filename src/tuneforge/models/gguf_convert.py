"""GGUF file -> safetensors model folder, done once and cached.

transformers can read a GGUF file (dequantizing every tensor, tens of seconds), but it refuses
``save_pretrained`` on the result. We rebuild a plain model from its config and state dict and
save that, with the tokenizer and its chat template, so later loads take seconds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tuneforge.atomic import staged_dir
from tuneforge.errors import ModelError


def check_gguf(path: Path) -> None:
    """Raise ModelError if ``path`` is not a complete, readable GGUF file."""
    import gguf

    try:
        gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as err:
        raise ModelError(
            f"{path}: not a readable GGUF file ({err}); the file is truncated or corrupt: "
            "download it again"
        ) from err


def gguf_cache_dir(home: Path, path: Path) -> Path:
    """Cache folder for a user's .gguf file, keyed by its path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return Path(home) / "models" / "gguf" / f"{path.stem}-{key[:12]}"


def convert_gguf_to_folder(gguf_path: Path, out_dir: Path, progress: bool = True) -> Path:
    """Dequantize ``gguf_path`` into a safetensors model folder at ``out_dir`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tuneforge.data.batching import pick_pad_token

    check_gguf(gguf_path)
    if not progress:
        hf_logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as err:
        raise ModelError(
            f"{gguf_path}: transformers cannot convert this GGUF file ({err}); "
            "supported are the architectures transformers reads from GGUF (llama, mistral, qwen2, ...)"
        ) from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = loaded.state_dict()
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(state, assign=True, strict=False)
    plain.tie_weights()
    pick_pad_token(tokenizer)
    if tokenizer.pad_token_id is not None:
        plain.config.pad_token_id = tokenizer.pad_token_id
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
    with staged_dir(out_dir) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir
