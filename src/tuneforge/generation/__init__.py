"""Text generation: the one decoding path for the CLI, the adapter registry, the server and eval.

``settings`` (GenerationSettings, Reply), ``prompts`` (chat messages -> token ids) and
``decoding`` (``generate_rows`` for batched rows with per-row adapters, limits, stops, streaming
and logits processors; ``generate`` for one conversation, a one-row call of the same path).
"""

from tuneforge.generation.decoding import (
    Row,
    RowLogitsProcessor,
    generate,
    generate_rows,
    group_rows,
)
from tuneforge.generation.prompts import chat_messages, prompt_ids
from tuneforge.generation.settings import GenerationSettings, Reply

__all__ = [
    "GenerationSettings",
    "Reply",
    "Row",
    "RowLogitsProcessor",
    "chat_messages",
    "generate",
    "generate_rows",
    "group_rows",
    "prompt_ids",
]
