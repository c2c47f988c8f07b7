"""Text generation: the one decoding path for the CLI, the adapter registry, the server and eval.

``settings`` (GenerationSettings, Reply), ``prompts`` (chat messages -> token ids),
``decoding`` (``generate_rows`` for batched rows with per-row adapters, limits, stops, streaming
and logits processors; ``generate`` for one conversation, a one-row call of the same path) and
``constrained`` (JSON-schema grammars: one matcher per row, plugged in as a row's logits
processor).
"""

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
    GrammarProcessor,
    Row,
    RowLogitsProcessor,
    generate,
    generate_rows,
    group_rows,
)
from tuneforge.generation.prompts import chat_messages, prompt_ids
from tuneforge.generation.settings import GenerationSettings, Reply

__all__ = [
    "ANY_JSON_OBJECT",
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
    "generate",
    "generate_rows",
    "group_rows",
    "prompt_ids",
    "read_json_schema",
    "validate_json_schema",
]
