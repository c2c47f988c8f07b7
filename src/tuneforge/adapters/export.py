"""Export a model, with an adapter merged in, as a GGUF file that llama.cpp and Ollama run.

The steps: merge the adapter exactly as ``tuneforge merge`` does (onto the dequantized base for
QLoRA), write the GGUF file (``tuneforge.export.write_gguf``: the family's architecture, the
tokenizer with llama.cpp's pre-tokenizer, the chat template, weights in the chosen type), run it
under llama.cpp against the merged model on sample prompts when llama-cpp-python is installed,
and write an Ollama Modelfile beside it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.export.gguf_file import GgufFile, write_gguf
from tuneforge.export.llama_cpp_check import (
    LlamaCppComparison,
    compare_with_llama_cpp,
    llama_cpp_missing,
)
from tuneforge.export.modelfile import ollama_create_command, write_modelfile
from tuneforge.export.quantization import gguf_dtype


@dataclass
class ExportReport:
    """What ``export_gguf`` wrote and measured.

    Attributes:
        gguf: the written file (path, dtype, architecture, pre-tokenizer, size, tensor types).
        modelfile: the Ollama Modelfile beside it.
        ollama_command: ``ollama create NAME -f <modelfile>``.
        comparison: the file under llama.cpp against the merged model, or None if not measured.
        not_measured: why the comparison was not made (None when it was).
        seconds: wall time of the whole export.
    """

    gguf: GgufFile
    modelfile: Path
    ollama_command: str
    comparison: LlamaCppComparison | None
    not_measured: str | None
    seconds: float


def export_gguf(
    model_ref: str,
    adapter_dir: Path | str | None,
    out_file: Path | str,
    dtype: str = "f16",
    *,
    check: bool = True,
    home: Path | None = None,
    progress: bool = True,
) -> ExportReport:
    """Export ``model_ref`` (with ``adapter_dir`` merged in, if given) to a GGUF file.

    Args:
        model_ref: the base model reference (``default``, a folder, a ``.gguf`` file, a hub id).
        adapter_dir: a LoRA adapter folder to merge first, or None.
        out_file: the ``.gguf`` file to write; ``<stem>.Modelfile`` is written beside it.
        dtype: ``f32``, ``f16``, ``bf16``, ``q8_0``, ``q5_1``, ``q5_0``, ``q4_1`` or ``q4_0``.
        check: run the file under llama.cpp on sample prompts (skipped, with the reason in
            ``not_measured``, when llama-cpp-python is not installed).
        home: cache root for model references.

    Raises:
        ModelError: an unsupported family, tokenizer or dtype; nothing is written then.
    """
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models import load_model

    start = time.perf_counter()
    gguf_dtype(dtype)  # refuse an unknown dtype before any loading
    out_file = Path(out_file)
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
        written = write_gguf(loaded.model, loaded.tokenizer, out_file, dtype=dtype, name=name)
        modelfile = write_modelfile(
            written.path, loaded.tokenizer, loaded.model.config.max_position_embeddings
        )
        comparison, not_measured = None, llama_cpp_missing() if check else "skipped (--no-check)"
        if not_measured is None:
            comparison = compare_with_llama_cpp(written.path, loaded.model, loaded.tokenizer)
    return ExportReport(
        gguf=written,
        modelfile=modelfile,
        ollama_command=ollama_create_command(modelfile),
        comparison=comparison,
        not_measured=not_measured,
        seconds=time.perf_counter() - start,
    )
