"""Export a Llama-family model (with an adapter merged in) as a GGUF file for llama.cpp/Ollama.

Written with the ``gguf`` package (the writer llama.cpp's own converter uses): the
hyperparameters, the tokenizer (GPT-2-style byte-level BPE: tokens, types, merges, special ids)
and the chat template, then every tensor under llama.cpp's name. Two details matter:

- llama.cpp applies rotary embeddings to interleaved pairs, transformers to the two halves of
  each head, so the rows of ``q_proj``/``k_proj`` are permuted per head (transformers' GGUF
  loader undoes the same permutation when it reads the file back);
- 2-D weight matrices are stored in the requested dtype (f16 or f32), 1-D norms always in f32,
  as llama.cpp expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from tuneforge.atomic import create_temporary_file
from tuneforge.errors import ModelError

DTYPES = ("f16", "f32")

_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_tensor_name(name: str) -> str | None:
    """llama.cpp's name for a transformers Llama parameter, or None if it has no counterpart."""
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if name in fixed:
        return fixed[name]
    parts = name.split(".", 3)  # model, layers, i, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES[parts[3]]}"
    return None


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows from transformers' half-split rotary layout to llama.cpp's interleaved.

    ``weight`` is ``[heads * head_dim, hidden]``; within each head, row ``j`` of the first half
    and row ``j`` of the second half become rows ``2j`` and ``2j + 1``.
    """
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _check_supported(config) -> None:
    if config.model_type != "llama":
        raise ModelError(
            f"GGUF export supports Llama-family models (model_type 'llama'), not "
            f"{config.model_type!r}; use llama.cpp's convert_hf_to_gguf.py on the merged folder "
            "(tuneforge merge) for other architectures"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelError(
            f"GGUF export: rope_type {rope.get('rope_type')!r} (rope scaling) is not supported; "
            "use llama.cpp's convert_hf_to_gguf.py on the merged folder"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("GGUF export: Llama models with bias terms are not supported")


def _tokenizer_pre(spec: dict) -> str:
    """llama.cpp's pre-tokenizer name for a tokenizer.json ``pre_tokenizer`` block."""
    kinds = [p.get("type") for p in spec.get("pretokenizers", [spec])] if spec else []
    if kinds == ["ByteLevel"]:
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"
    return "default"


def _add_tokenizer(writer, tokenizer) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if tokenizer.is_fast else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style, as in SmolLM, Llama 3, "
            f"Qwen); this tokenizer is {model.get('type') or 'not a fast tokenizer'}"
        )
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = set(tokenizer.all_special_tokens)
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    types = [
        gguf.TokenType.CONTROL
        if t in special
        else gguf.TokenType.USER_DEFINED
        if t in added
        else gguf.TokenType.NORMAL
        for t in tokens
    ]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_tokenizer_pre(spec.get("pre_tokenizer") or {}))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    merges = model.get("merges", [])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(model, tokenizer, out_file: Path | str, dtype: str = "f16", name: str = "") -> Path:
    """Write a loaded Llama model and its tokenizer as one GGUF file, atomically.

    Args:
        model: a transformers ``LlamaForCausalLM`` (any dtype; written as ``dtype``).
        tokenizer: its fast tokenizer (byte-level BPE), chat template included if set.
        out_file: the ``.gguf`` file to write.
        dtype: ``f16`` or ``f32`` for the weight matrices (norms are always f32).
        name: the model name stored in ``general.name``.
    """
    import gguf

    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype!r}: GGUF export writes one of {', '.join(DTYPES)}")
    config = model.config
    _check_supported(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary_file(out_file)  # the user's umask, not mkstemp's 0600
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name or out_file.stem)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(
            gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
        )
        _add_tokenizer(writer, tokenizer)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for param_name, tensor in model.state_dict().items():
            target = gguf_tensor_name(param_name)
            if target is None or (tied and param_name == "lm_head.weight"):
                continue  # tied output: llama.cpp reuses token_embd when output.weight is absent
            array = tensor.detach().to(torch.float32).cpu().numpy()
            if param_name.endswith("q_proj.weight"):
                array = permute_rotary(array, heads)
            elif param_name.endswith("k_proj.weight"):
                array = permute_rotary(array, kv_heads)
            if dtype == "f16" and array.ndim == 2:
                array = array.astype(np.float16)
            writer.add_tensor(target, np.ascontiguousarray(array))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        os.replace(tmp, out_file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out_file


def export_gguf(
    model_ref: str,
    adapter_dir: Path | str | None,
    out_file: Path | str,
    dtype: str = "f16",
    *,
    home: Path | None = None,
    progress: bool = True,
) -> Path:
    """Export ``model_ref`` (with ``adapter_dir`` merged in, if given) to a GGUF file.

    The adapter is merged first exactly as ``tuneforge merge`` does (onto the dequantized base
    for QLoRA), into a temporary folder next to ``out_file`` that is removed afterwards.

    Returns:
        ``out_file``.
    """
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models import load_model

    out_file = Path(out_file)
    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype!r}: GGUF export writes one of {', '.join(DTYPES)}")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_file.parent, prefix=".merge-") as scratch:
        source = model_ref
        if adapter_dir is not None:
            from tuneforge.adapters.merge import merge_adapter

            merged = Path(scratch) / "merged"
            merge_adapter(model_ref, adapter_dir, merged, home=home, progress=progress)
            source = str(merged)
        loaded = load_model(source, dtype="float32", device="cpu", home=home, progress=progress)
        ensure_chat_template(loaded.tokenizer)
        name = Path(str(model_ref)).name if adapter_dir is None else Path(adapter_dir).name
        return write_gguf(loaded.model, loaded.tokenizer, out_file, dtype=dtype, name=name)
