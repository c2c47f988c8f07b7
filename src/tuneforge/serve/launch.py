"""Building a server around a model reference: the one start-up path of ``tuneforge serve`` and
``tuneforge ui``.

Loads the base as its adapters were trained (NF4 4-bit for QLoRA adapters), attaches the
adapters given at start, opens the RAG store, and builds the app around an ``Engine``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from tuneforge.serve.app import Retriever, create_app
from tuneforge.serve.config import ServeSettings
from tuneforge.serve.engine import Engine


@dataclass
class Server:
    """A built server app and what it was built from.

    Attributes:
        app: the FastAPI app (run it with uvicorn).
        retriever: RAG on request, when a store was given.
        precision: the base's weights (``float32``, ``nf4 4-bit (float32 compute)``, ...).
        quantized: the base was loaded in 4-bit for QLoRA adapters.
        compiled: with ``compile_steps``, what compiling the decode step did (a line to print).
    """

    app: FastAPI
    retriever: Retriever | None
    precision: str
    quantized: bool
    compiled: str | None = None


def build_server(
    model_ref: str,
    adapters: dict[str, Path],
    settings: ServeSettings,
    *,
    store: Path | None = None,
    dtype: str = "auto",
    device: str = "auto",
    compile_steps: bool = False,
) -> Server:
    """Load the model and adapters and build the app.

    Args:
        model_ref: the base model reference.
        adapters: adapters to load at start, by name.
        settings: the server's settings.
        store: a RAG store folder (enables ``rag`` in requests).
        dtype: weights dtype of a full-precision base.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        compile_steps: compile single-row decode steps (``generation.compiled_step``), before
            the app answers anyone.

    Raises:
        TuneforgeError: a model, adapter or store that cannot be used (the message names it).
    """
    from tuneforge.adapters import AdapterRegistry, load_base_for_adapters
    from tuneforge.serve.retrieval import build_retriever

    retriever = build_retriever(store) if store else None
    loaded = load_base_for_adapters(model_ref, adapters.values(), dtype=dtype, device=device)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    for name, folder in adapters.items():
        registry.load(name, folder)
    compiled = compile_decode_step(registry) if compile_steps else None
    engine = Engine(registry, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue)
    app = create_app(engine, settings, retriever=retriever)
    return Server(app, retriever, loaded.precision, loaded.quantization is not None, compiled)


def compile_decode_step(registry) -> str:
    """Turn compiled decode steps on and compile the base model's now, with a 4-token answer
    that no end-of-reply token can cut short; what happened, as a line for the log."""
    from tuneforge.generation import (
        BatchDecoder,
        GenerationSettings,
        Row,
        chat_messages,
        fast_path_blocker,
        prompt_ids,
    )
    from tuneforge.generation.compiled_step import compile_blocker, compile_decode_steps
    from tuneforge.generation.decoding import decode_all

    compile_decode_steps(True)
    blocker = fast_path_blocker(registry.model, ())
    if blocker is not None:
        return f"decode steps not compiled: this model decodes on the plain path ({blocker})"
    decoder = BatchDecoder(registry.tokenizer, [])
    ids = prompt_ids(registry.tokenizer, chat_messages("Hello"))
    started = time.perf_counter()
    decode_all(decoder, registry.model, [Row(ids, GenerationSettings(max_new_tokens=4))], [()])
    seconds = time.perf_counter() - started
    (forward,) = decoder.model_forwards()
    compiled = forward.compiled
    if compiled is None:
        return f"decode steps not compiled: {compile_blocker(forward)}"
    if compiled.failed is not None:
        return f"decode steps not compiled ({compiled.failed}): decoding eagerly"
    return f"single-row decode steps compiled in {seconds:.1f} s"
