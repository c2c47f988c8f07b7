"""Constrained decoding: replies that follow a JSON schema by construction.

A grammar engine, llguidance (chosen by measurement against xgrammar and outlines-core:
docs/constrained.md, bench/results/constrained.md), compiles a JSON schema for the model's
tokenizer (``JsonSchemaCompiler.compile``, cached per schema). Each row then gets its own
matcher (``JsonGrammar.row_processor``): a ``RowLogitsProcessor`` that, before every new token
of its row, feeds the matcher the row's tokens it has not seen yet and sets the score of every
token the schema forbids to ``-inf``. The state is per row, so one batch mixes constrained and
free rows, and rows on different adapters (``decoding`` applies each row's own processor).

How a constrained row ends (``JsonRowProcessor.is_complete``, read by ``decoding``):

- once the JSON is complete, the matcher allows only the model's stop tokens, so the row stops
  with ``finish_reason`` ``"stop"``;
- a row cut by ``max_new_tokens`` (or a stop string) before the JSON closes is reported
  ``"length"``: truncated, never passed off as valid.

The output is compact JSON: ``", "`` and ``": "`` between items (``json.dumps``' defaults, the
bundled task's format) and no other whitespace outside strings, so a model cannot spend its
budget on newlines. Keywords the engine does not implement (``uniqueItems``, ``not``,
``if``/``then``) are refused with a ``SchemaError`` naming them, never silently ignored.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from tuneforge.errors import ConfigError, DataError, TuneforgeError

log = logging.getLogger("tuneforge.generation")

ANY_JSON_OBJECT: dict = {"type": "object"}
"""The schema of ``--json`` and of ``response_format: {"type": "json_object"}``: any object."""

# llguidance's JSON compile options: the separators json.dumps writes, no free whitespace.
JSON_FORMAT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# Compiled schemas kept per compiler (a server sees the same few schemas again and again).
DEFAULT_CACHE_SIZE = 64


class SchemaError(TuneforgeError):
    """A JSON schema that is not valid JSON Schema, or that the grammar engine cannot compile."""


def read_json_schema(path: Path | str) -> dict:
    """Read a JSON schema file (``--json-schema FILE``).

    Raises:
        DataError: the file is missing or is not a JSON object.
    """
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file; pass a JSON schema file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the JSON schema ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}: not JSON ({err.msg} at column {err.colno}); fix the schema file"
        ) from err
    if not isinstance(schema, dict):
        raise DataError(f"{path}: a JSON schema is a JSON object, got {type(schema).__name__}")
    return schema


def validate_json_schema(schema: Mapping) -> str:
    """Check that ``schema`` can be enforced, without a model (microseconds).

    First against the JSON Schema meta-schema (its ``$schema``, else draft 2020-12), then by
    the grammar engine: a keyword it does not implement, a reference to nothing or an
    unsatisfiable schema is refused here, before any model loads.

    Returns:
        the engine's grammar for ``schema`` (compact JSON format, ``JSON_FORMAT``).

    Raises:
        SchemaError: naming the first problem and where it is (``properties/a/type: ...``).
    """
    from jsonschema import exceptions, validators
    from llguidance import LLMatcher

    try:
        validator = validators.validator_for(schema, default=validators.Draft202012Validator)
        validator.check_schema(schema)
    except exceptions.SchemaError as err:
        where = "/".join(str(part) for part in err.absolute_path) or "(root)"
        raise SchemaError(f"invalid JSON schema at {where}: {err.message}") from None
    try:
        grammar = LLMatcher.grammar_from_json_schema(dict(schema), defaults=JSON_FORMAT)
    except ValueError as err:
        raise SchemaError(f"the JSON schema cannot be compiled: {_one_line(str(err))}") from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise SchemaError(f"the JSON schema cannot be compiled: {_one_line(messages[0])}")
    for warning in messages:
        log.warning("JSON schema: %s", _one_line(warning))
    return grammar


class JsonRowProcessor:
    """One row's matcher: masks the row's next-token scores to what the schema allows.

    A ``RowLogitsProcessor`` (``Row.logits_processor``) with ``is_complete``; use a fresh one
    per row (``JsonGrammar.row_processor``). Not thread-safe: one row, one decoding thread.

    Attributes:
        error: the matcher's error if it failed (a token outside the grammar, an engine
            limit); the row is then ended and reported truncated. None while all is well.
    """

    def __init__(self, matcher, vocab_size: int, stop_ids: Sequence[int]) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._stop_ids = list(stop_ids)
        self._consumed = 0  # how many of the row's new tokens the matcher has seen
        # The allowed-token bitmask the engine writes: bit i of word i // 32 is token i.
        self._mask = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        self.error: str | None = None

    def __call__(self, new_ids: list[int], scores: torch.Tensor) -> torch.Tensor:
        """Mask ``scores`` (shape ``[vocab]``) to the tokens allowed after ``new_ids``."""
        self._consume(new_ids)
        if self.error is None:
            self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
            allowed = np.unpackbits(
                self._mask.view(np.uint8), count=self._vocab_size, bitorder="little"
            ).view(bool)
        else:  # end the row: only a stop token may follow (it is then reported truncated)
            allowed = np.zeros(self._vocab_size, dtype=bool)
            allowed[self._stop_ids] = True
        return _keep_only(scores, allowed)

    def is_complete(self, new_ids: list[int]) -> bool:
        """Whether ``new_ids`` (the row's whole reply) form JSON that satisfies the schema."""
        self._consume(new_ids)
        return self.error is None and (self._matcher.is_stopped() or self._matcher.is_accepting())

    def _consume(self, new_ids: list[int]) -> None:
        for token in new_ids[self._consumed :]:
            if self.error is not None or self._matcher.is_stopped():
                break
            if not self._matcher.consume_token(token):
                self.error = self._matcher.get_error() or f"token {token} is outside the grammar"
                log.warning("constrained row ended: %s", self.error)
        self._consumed = len(new_ids)


def _keep_only(scores: torch.Tensor, allowed: np.ndarray) -> torch.Tensor:
    """Set ``scores`` to ``-inf`` wherever ``allowed`` (shape ``[vocab]``, bool) is False.

    A model head wider than the tokenizer's vocabulary has padding tokens: never allowed.
    Works in place with numpy on CPU (one thread: torch's pool stalls on a busy machine for a
    49k-wide mask), with torch elsewhere.
    """
    width = min(scores.shape[-1], allowed.shape[0])
    forbidden = ~allowed[:width]
    if scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.is_contiguous():
        values = scores.numpy()
        np.copyto(values[:width], -np.inf, where=forbidden)
        values[width:] = -np.inf
    else:
        scores[:width].masked_fill_(torch.from_numpy(forbidden).to(scores.device), float("-inf"))
        scores[width:] = float("-inf")
    return scores


class JsonGrammar:
    """A JSON schema compiled for one tokenizer; hands out one matcher per row.

    Attributes:
        schema: the schema it was compiled from.
    """

    def __init__(self, schema: dict, prototype, vocab_size: int, stop_ids: Sequence[int]) -> None:
        self.schema = schema
        self._prototype = prototype  # a matcher at the start, copied for every row
        self._vocab_size = vocab_size
        self._stop_ids = list(stop_ids)
        self._lock = threading.Lock()

    def row_processor(self) -> JsonRowProcessor:
        """A fresh matcher for one row (copying the compiled start state: microseconds)."""
        with self._lock:
            matcher = self._prototype.deep_copy()
        return JsonRowProcessor(matcher, self._vocab_size, self._stop_ids)


class JsonSchemaCompiler:
    """Compiles JSON schemas into ``JsonGrammar``s for one model and tokenizer, with a cache.

    The tokenizer is converted for the engine on the first ``compile`` (about 1 s for a 49k
    vocabulary), so building a compiler costs nothing. Thread-safe.

    Args:
        tokenizer: a fast (``tokenizers``-backed) Hugging Face tokenizer.
        vocab_size: width of the model's next-token scores (tokens; may exceed the tokenizer's).
        stop_ids: the token ids that end a reply (``decoding.stop_token_ids``); the only tokens
            allowed once the JSON is complete.
        cache_size: compiled schemas kept (least recently used dropped first).
    """

    def __init__(
        self,
        tokenizer,
        vocab_size: int,
        stop_ids: Sequence[int],
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if not stop_ids:
            raise ConfigError("constrained decoding needs at least one stop token id")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = sorted(set(stop_ids))
        self.cache_size = cache_size
        self._engine_tokenizer = None
        self._cache: OrderedDict[str, JsonGrammar] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, model, tokenizer, cache_size: int = DEFAULT_CACHE_SIZE):
        """A compiler for ``model`` (plain or peft-wrapped) and its tokenizer."""
        from tuneforge.generation.decoding import stop_token_ids

        head = model.get_output_embeddings()
        vocab_size = head.weight.shape[0] if head is not None else len(tokenizer)
        return cls(tokenizer, vocab_size, stop_token_ids(tokenizer, model), cache_size)

    def compile(self, schema: Mapping | None = None) -> JsonGrammar:
        """The grammar of ``schema`` (None: any JSON object), compiled once and cached.

        Raises:
            SchemaError: the schema is not valid JSON Schema, uses a keyword the engine does
                not implement, or cannot be satisfied; the message names the problem.
            ConfigError: the tokenizer is not a fast tokenizer.
        """
        schema = dict(ANY_JSON_OBJECT if schema is None else schema)
        try:
            # Not sorted: property order is the order the reply writes them in.
            key = json.dumps(schema, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise SchemaError(f"the JSON schema is not JSON data ({err})") from None
        with self._lock:
            grammar = self._cache.get(key)
            if grammar is not None:
                self._cache.move_to_end(key)
                return grammar
        grammar = self._compile(schema, validate_json_schema(schema))
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return grammar

    def _compile(self, schema: dict, grammar: str) -> JsonGrammar:
        from llguidance import LLMatcher

        prototype = LLMatcher(self._tokenizer_for_engine(), grammar, log_level=0)
        if prototype.is_error():
            raise SchemaError(
                f"the JSON schema cannot be compiled: {_one_line(prototype.get_error())}"
            )
        return JsonGrammar(schema, prototype, self.vocab_size, self.stop_ids)

    def _tokenizer_for_engine(self):
        with self._lock:
            if self._engine_tokenizer is None:
                import llguidance.hf

                try:
                    self._engine_tokenizer = llguidance.hf.from_tokenizer(
                        self.tokenizer, n_vocab=self.vocab_size, eos_token=self.stop_ids
                    )
                except ValueError as err:
                    raise ConfigError(
                        f"constrained decoding needs a fast (tokenizers-backed) tokenizer: {err}"
                    ) from None
            return self._engine_tokenizer


def _one_line(message: str) -> str:
    """The engine's message on one line (a regex error spans several: text, caret, reason)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or "no reason"
