"""Text generation: the one decoding path for the CLI, the adapter registry, the server and eval.

``settings`` (GenerationSettings, Reply), ``prompts`` (chat messages -> token ids) and
``decoding`` (``generate_rows`` for batched rows with per-row adapters, limits, stops, streaming
and logits processors; ``generate`` for one conversation, a one-row call of the same path).
Under ``decoding``: ``batch_decoder`` (the fast path, rows joining and leaving between steps)
with ``slot_cache``, ``packed_linear`` and ``batched_lora``; ``row_progress`` (per-row stops,
limits, cancellation, streaming on both paths). docs/decode.md tells what each piece bought.
"""

from tuneforge.generation.batch_decoder import BatchDecoder, fast_path_blocker
from tuneforge.generation.decoding import (
    Row,
    RowLogitsProcessor,
    generate,
    generate_rows,
    group_rows,
    new_batch_decoder,
)
from tuneforge.generation.prompts import chat_messages, prompt_ids
from tuneforge.generation.settings import GenerationSettings, Reply

__all__ = [
    "BatchDecoder",
    "GenerationSettings",
    "Reply",
    "Row",
    "RowLogitsProcessor",
    "chat_messages",
    "fast_path_blocker",
    "generate",
    "generate_rows",
    "group_rows",
    "new_batch_decoder",
    "prompt_ids",
]
