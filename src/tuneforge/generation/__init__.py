"""Text generation: the one decoding path for the CLI, the adapter registry, the server and eval.

``settings`` (GenerationSettings, Reply), ``prompts`` (chat messages -> token ids),
``decoding`` (``generate_rows`` for batched rows with per-row adapters, limits, stops, streaming
and logits processors; ``generate`` for one conversation, a one-row call of the same path) and
``constrained`` (JSON-schema grammars: one matcher per row, plugged in as a row's logits
processor). Under ``decoding``: ``batch_decoder`` (the fast path, rows joining and leaving
between steps) with ``slot_cache``, ``packed_linear`` and ``batched_lora``; ``row_progress``
(per-row stops, limits, cancellation, streaming and grammar completion on both paths).
docs/decode.md tells what each piece bought.
"""

from tuneforge.generation.batch_decoder import BatchDecoder, fast_path_blocker
from tuneforge.generation.constrained import (
    ANY_JSON_OBJECT,
    JsonGrammar,
    JsonRowProcessor,
    JsonSchemaCompiler,
    SchemaError,
    read_json_schema,
    validate_json_schema,
)
from tuneforge.generation.decoding import (
    chat_row,
    generate,
    generate_rows,
    group_rows,
    new_batch_decoder,
)
from tuneforge.generation.prompts import chat_messages, prompt_ids
from tuneforge.generation.row_progress import GrammarProcessor, Row, RowLogitsProcessor
from tuneforge.generation.settings import GenerationSettings, Reply

__all__ = [
    "ANY_JSON_OBJECT",
    "BatchDecoder",
    "GenerationSettings",
    "GrammarProcessor",
    "JsonGrammar",
    "JsonRowProcessor",
    "JsonSchemaCompiler",
    "Reply",
    "Row",
    "RowLogitsProcessor",
    "SchemaError",
    "chat_messages",
    "chat_row",
    "fast_path_blocker",
    "generate",
    "generate_rows",
    "group_rows",
    "new_batch_decoder",
    "prompt_ids",
    "read_json_schema",
    "validate_json_schema",
]
