"""Write a loaded transformers model and its tokenizer as one GGUF file, atomically.

The file holds what llama.cpp (and Ollama, which runs llama.cpp) reads: the architecture's
hyperparameters (``tuneforge.export.families``), the tokenizer with its pre-tokenizer and chat
template (``tuneforge.export.vocabulary``), and every weight under llama.cpp's name in the chosen
type (``tuneforge.export.quantization``). It is written beside the target under a temporary
name with the user's umask and renamed over it, so a crash leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.atomic import create_temporary_file
from tuneforge.export.families import add_hyperparameters, family_for, gguf_tensors
from tuneforge.export.quantization import encode, gguf_dtype, tensor_type
from tuneforge.export.vocabulary import add_vocabulary, read_vocabulary


@dataclass
class GgufFile:
    """What ``write_gguf`` wrote.

    Attributes:
        path: the ``.gguf`` file.
        dtype: the ``--dtype`` name (``f16``, ``q8_0`` ...).
        architecture: llama.cpp's architecture (``llama``, ``qwen2`` ...).
        tokenizer_model: ``gpt2`` (byte-level BPE) or ``llama`` (SentencePiece-style).
        pre_tokenizer: llama.cpp's pre-tokenizer name (``gpt2`` tokenizers only), else None.
        pre_tokenizer_source: how it was identified (check-text hash or tokenizer.json).
        size_bytes: the file's size.
        tensor_types: tensor type name -> how many tensors have it.
    """

    path: Path
    dtype: str
    architecture: str
    tokenizer_model: str
    pre_tokenizer: str | None
    pre_tokenizer_source: str | None
    size_bytes: int
    tensor_types: dict[str, int] = field(default_factory=dict)


def write_gguf(
    model, tokenizer, out_file: Path | str, dtype: str = "f16", name: str = ""
) -> GgufFile:
    """Write ``model`` and ``tokenizer`` as one GGUF file that llama.cpp and Ollama load.

    Args:
        model: a transformers causal LM of a supported family (any dtype; read as float32).
        tokenizer: its fast tokenizer; its chat template is stored in ``tokenizer.chat_template``.
        out_file: the ``.gguf`` file to write (replaced if it exists).
        dtype: a name from ``GGUF_DTYPES`` (``f32``, ``f16``, ``bf16``, ``q8_0``, ``q5_1``,
            ``q5_0``, ``q4_1``, ``q4_0``) for the weight matrices; norms stay f32.
        name: ``general.name`` (default: the file's stem).

    Raises:
        ModelError: an unsupported family, setting, tokenizer or dtype (nothing is written).
    """
    import gguf

    chosen = gguf_dtype(dtype)
    config = model.config
    family = family_for(config)
    vocabulary = read_vocabulary(tokenizer, config.vocab_size)
    out_file = Path(out_file)
    fd, tmp = create_temporary_file(out_file)  # the user's umask, not mkstemp's 0600
    os.close(fd)
    counts: Counter[str] = Counter()
    try:
        writer = gguf.GGUFWriter(str(tmp), family.arch)
        writer.add_name(name or out_file.stem)
        writer.add_file_type(gguf.LlamaFileType[chosen.file_type])
        add_hyperparameters(writer, family, config)
        add_vocabulary(writer, vocabulary)
        for target, array in gguf_tensors(family, config, model.state_dict()):
            qtype = tensor_type(chosen, target, array)
            writer.add_tensor(target, encode(array, qtype), raw_dtype=qtype)
            counts[qtype.name] += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        os.replace(tmp, out_file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    pre = vocabulary.pre
    return GgufFile(
        path=out_file,
        dtype=chosen.name,
        architecture=family.arch,
        tokenizer_model=vocabulary.model,
        pre_tokenizer=pre.name if pre else None,
        pre_tokenizer_source=pre.source if pre else None,
        size_bytes=out_file.stat().st_size,
        tensor_types=dict(counts),
    )
