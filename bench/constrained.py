"""Constrained decoding: grammar engines compared, then the chosen one in the decoding path.

Side by side in one run, on SmolLM2-135M-Instruct (fp32, CPU) and its tokenizer (49k tokens):

1. **engines** (xgrammar, llguidance, outlines-core; each one installed is measured): tokenizer
   conversion (s), schema compile time (ms), per-token engine time (mask + advance, µs) replaying
   the bundled JSON task's held-out answers at batch 1 and in lockstep at batch 16, for the task
   schema and for "any JSON object"; and schema coverage: for each feature a valid and an
   invalid instance, "enforces" (accepts the valid, rejects the invalid), "IGNORES" (accepts
   both: the keyword is silently dropped) or "refuses" (compile error);
2. **decoding path** (``tuneforge.generation`` with llguidance, one matcher per row): ms per
   decode step of the same prompts unconstrained vs constrained at batch 1 and batch 16, the
   free arm given exactly the constrained arm's step count, repeats interleaved; plus the time
   spent inside the row processors, measured directly (robust on a busy machine);
3. **quality** on the held-out set: valid JSON, schema-valid and field accuracy of the base,
   base + constrained, and with ``--adapter DIR`` (a LoRA fine-tuned on the task) fine-tuned
   and fine-tuned + constrained.

The load average is printed beside each section: ratios within the run are what count.

Run: ``.venv/bin/python bench/constrained.py`` (``--quick`` for a short smoke run;
``--adapter runs/json/adapter`` adds the fine-tuned arms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report

VOCAB_BYTES_NOTE = "outlines-core gets the byte-level vocabulary decoded by hand (no tokenizer API)"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


# ---- engines ---------------------------------------------------------------------------------


class Engine:
    """One grammar engine behind a common face: compile a schema, make a matcher per row."""

    name = ""
    package = ""

    def version(self) -> str:
        return metadata.version(self.package)

    def setup(self, tokenizer, vocab_size: int, stop_ids: list[int]) -> None:
        raise NotImplementedError

    def compile(self, schema: dict):
        raise NotImplementedError

    def matcher(self, compiled):
        """An object with ``fill(mask)`` (int32 numpy bitmask), ``accept(token) -> bool`` and
        ``complete() -> bool``."""
        raise NotImplementedError


class XGrammar(Engine):
    name, package = "xgrammar", "xgrammar"

    def setup(self, tokenizer, vocab_size, stop_ids):
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids
        )
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1)

    def compile(self, schema):
        # The compact format tuneforge uses: ", " and ": ", no free whitespace.
        return self.compiler.compile_json_schema(schema, any_whitespace=False)

    def matcher(self, compiled):
        xgr = self.xgr

        class Matcher:
            def __init__(self):
                self.m = xgr.GrammarMatcher(compiled)

            def fill(self, mask):
                self.m.fill_next_token_bitmask(torch.from_numpy(mask).view(1, -1))

            def accept(self, token):
                return self.m.accept_token(token)

            def complete(self):
                return self.m.is_completed()

        return Matcher()


class LLGuidance(Engine):
    name, package = "llguidance", "llguidance"

    def setup(self, tokenizer, vocab_size, stop_ids):
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=stop_ids
        )

    def compile(self, schema):
        from llguidance import LLMatcher

        from tuneforge.generation.constrained import JSON_FORMAT

        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_FORMAT)
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if failed:
            raise ValueError(messages[0])
        return LLMatcher(self.tokenizer, grammar, log_level=0)

    def matcher(self, compiled):
        class Matcher:
            def __init__(self):
                self.m = compiled.deep_copy()

            def fill(self, mask):
                self.m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)

            def accept(self, token):
                return self.m.consume_token(token)

            def complete(self):
                return self.m.is_accepting()

        return Matcher()


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a BPE token shows -> its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


class OutlinesCore(Engine):
    name, package = "outlines-core", "outlines_core"

    def setup(self, tokenizer, vocab_size, stop_ids):
        import outlines_core

        self.oc = outlines_core
        decoder = _byte_decoder()
        special = set(tokenizer.all_special_ids)
        tokens: dict[bytes, list[int]] = {}
        for text, token in tokenizer.get_vocab().items():
            if token not in special:
                tokens.setdefault(bytes(decoder[c] for c in text), []).append(token)
        self.vocabulary = outlines_core.Vocabulary(stop_ids[0], tokens)

    def compile(self, schema):
        from outlines_core.json_schema import build_regex_from_schema

        # outlines-core has no fixed separators: one optional space is the closest format.
        regex = build_regex_from_schema(json.dumps(schema), r"[ ]?")
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled):
        oc = self.oc

        class Matcher:
            def __init__(self):
                self.m = oc.Guide(compiled)

            def fill(self, mask):
                self.m.write_mask_into(mask.ctypes.data, mask.size, 4)

            def accept(self, token):
                try:
                    self.m.advance(token, return_tokens=False)
                except ValueError:
                    return False
                return True

            def complete(self):
                return self.m.is_finished()

        return Matcher()


ENGINES = (XGrammar, LLGuidance, OutlinesCore)


def coverage_cases(task_schema: dict) -> list[tuple[str, dict, str | None, str | None]]:
    """(feature, schema, valid instance, invalid instance); None: a malformed schema."""

    def obj(props: dict, required=None) -> dict:
        return {
            "type": "object",
            "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": False,
        }

    node = {
        "type": "object",
        "properties": {
            "v": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
        },
        "required": ["v", "next"],
        "additionalProperties": False,
    }
    return [
        ("bundled task schema (json_orders)", task_schema,
         '{"intent": "cancel", "item": "lamp", "quantity": 8, "city": "Ghent", "urgent": false}',
         '{"intent": "cancel", "item": "lamp", "quantity": 13, "city": "Ghent", "urgent": false}'),
        ("enum", obj({"c": {"enum": ["red", "green"]}}), '{"c": "red"}', '{"c": "blue"}'),
        ("const", obj({"v": {"const": 3}}), '{"v": 3}', '{"v": 4}'),
        ("nested objects", obj({"a": obj({"b": obj({"c": {"type": "boolean"}})})}),
         '{"a": {"b": {"c": true}}}', '{"a": {"b": {"c": 1}}}'),
        ("array minItems / maxItems",
         obj({"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}}),
         '{"xs": [1, 2]}', '{"xs": [1, 2, 3, 4]}'),
        ("integer minimum / maximum", obj({"n": {"type": "integer", "minimum": 1, "maximum": 12}}),
         '{"n": 12}', '{"n": 13}'),
        ("number exclusiveMinimum", obj({"x": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}),
         '{"x": 0.5}', '{"x": 0}'),
        ("multipleOf", obj({"n": {"type": "integer", "multipleOf": 5}}), '{"n": 10}', '{"n": 7}'),
        ("string pattern", obj({"id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}}),
         '{"id": "AB-123"}', '{"id": "ab-123"}'),
        ("minLength / maxLength", obj({"s": {"type": "string", "minLength": 2, "maxLength": 4}}),
         '{"s": "abc"}', '{"s": "abcdef"}'),
        ("format date", obj({"d": {"type": "string", "format": "date"}}),
         '{"d": "2024-05-01"}', '{"d": "May 1"}'),
        ("format email", obj({"e": {"type": "string", "format": "email"}}),
         '{"e": "a@b.io"}', '{"e": "not an email"}'),
        ("anyOf", obj({"v": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}),
         '{"v": null}', '{"v": "x"}'),
        ("oneOf", obj({"v": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}),
         '{"v": "x"}', '{"v": true}'),
        ("$ref / $defs",
         {**obj({"it": {"$ref": "#/$defs/item"}}), "$defs": {"item": obj({"n": {"type": "integer"}})}},
         '{"it": {"n": 1}}', '{"it": {"m": 1}}'),
        ("recursive $ref", {"$defs": {"node": node}, "$ref": "#/$defs/node"},
         '{"v": 1, "next": {"v": 2, "next": null}}', '{"v": 1, "next": {"v": "2", "next": null}}'),
        ("optional property", obj({"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a"]),
         '{"a": 1}', '{"b": 1}'),
        ("additionalProperties schema", {"type": "object", "additionalProperties": {"type": "integer"}},
         '{"k": 1, "j": 2}', '{"k": "x"}'),
        ("minProperties", {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
         '{"a": 1, "b": 2}', '{"a": 1}'),
        ("uniqueItems", obj({"xs": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}),
         '{"xs": [1, 2]}', '{"xs": [1, 1]}'),
        ("not", obj({"v": {"not": {"type": "string"}}}), '{"v": 1}', '{"v": "x"}'),
        ("if / then", {"type": "object", "properties": {"a": {"type": "integer"}},
                       "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
         '{"a": 2}', '{"a": 1}'),
        ("any JSON object (json_object)", {"type": "object"}, '{"any": [1, {"x": null}]}', "[1, 2]"),
        ("malformed: unknown type", obj({"a": {"type": "strnig"}}), None, None),
        ("malformed: minimum > maximum", obj({"a": {"type": "integer", "minimum": 5, "maximum": 1}}),
         None, None),
    ]  # fmt: skip


def _accepts(engine: Engine, compiled, tokenizer, text: str) -> bool:
    matcher = engine.matcher(compiled)
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if not matcher.accept(token):
            return False
    return matcher.complete()


def bench_coverage(engines: list[Engine], tokenizer, task_schema: dict) -> str:
    rows = []
    for feature, schema, good, bad in coverage_cases(task_schema):
        row = [feature]
        for engine in engines:
            try:
                compiled = engine.compile(schema)
            except Exception as err:  # each engine raises its own types; all mean "refused"
                row.append(f"refuses ({str(err).strip().splitlines()[0][:60]})")
                continue
            if good is None:
                row.append("compiles (accepts a malformed schema)")
                continue
            ok, wrong = (
                _accepts(engine, compiled, tokenizer, good),
                _accepts(engine, compiled, tokenizer, bad),
            )
            row.append("enforces" if ok and not wrong else "IGNORES" if ok else "rejects valid")
        rows.append(row)
    return markdown_table(["feature", *[e.name for e in engines]], rows)


def bench_engine_speed(engines, tokenizer, vocab_size, answers, schemas, rounds: int) -> str:
    """Per-token engine time replaying the held-out answers (token ids), batch 1 and 16."""
    from tuneforge.generation.constrained import _keep_only

    rows = []
    words = (vocab_size + 31) // 32
    scores = torch.zeros(vocab_size)
    for label, schema in schemas:
        for engine in engines:
            start = time.perf_counter()
            try:
                compiled = engine.compile(schema)
            except Exception as err:  # each engine raises its own types; reported, not hidden
                rows.append([label, engine.name, f"refused: {err}", "", "", ""])
                continue
            compile_ms = (time.perf_counter() - start) * 1000
            per_token, per_step16, apply_us = [], [], []
            for _ in range(rounds):
                # Batch 1: one answer at a time.
                masks, tokens = 0.0, 0
                applied = 0.0
                for ids in answers:
                    matcher, mask = engine.matcher(compiled), np.zeros(words, dtype=np.int32)
                    for position in range(len(ids) + 1):  # the last fill allows the stop token
                        t0 = time.perf_counter()
                        matcher.fill(mask)
                        if position < len(ids) and not matcher.accept(ids[position]):
                            raise RuntimeError(f"{engine.name} refused its own answer {ids}")
                        t1 = time.perf_counter()
                        allowed = np.unpackbits(
                            mask.view(np.uint8), count=vocab_size, bitorder="little"
                        )
                        _keep_only(scores, allowed.view(bool))
                        applied += time.perf_counter() - t1
                        masks += t1 - t0
                        tokens += 1
                per_token.append(masks / tokens * 1e6)
                apply_us.append(applied / tokens * 1e6)
                # Batch 16: 16 rows in lockstep, a finished row skipped (as the decoding path does).
                steps, spent = 0, 0.0
                for first in range(0, len(answers) - 15, 16):
                    group = answers[first : first + 16]
                    matchers = [engine.matcher(compiled) for _ in group]
                    masks16 = [np.zeros(words, dtype=np.int32) for _ in group]
                    for position in range(max(len(ids) for ids in group) + 1):
                        t0 = time.perf_counter()
                        for ids, matcher, mask in zip(group, matchers, masks16, strict=True):
                            if position <= len(ids):
                                matcher.fill(mask)
                                if position < len(ids):
                                    matcher.accept(ids[position])
                        spent += time.perf_counter() - t0
                        steps += 1
                if steps:
                    per_step16.append(spent / steps * 1e6)
            rows.append(
                [
                    label,
                    engine.name,
                    f"{compile_ms:.1f}",
                    f"{statistics.median(per_token):.1f}",
                    f"{statistics.median(per_step16):.0f}" if per_step16 else "",
                    f"{statistics.median(apply_us):.1f}",
                ]
            )
    return markdown_table(
        [
            "schema",
            "engine",
            "compile ms",
            "engine µs / token (batch 1)",
            "engine µs / step (batch 16)",
            "mask apply µs / row (shared numpy code)",
        ],
        rows,
    )


# ---- the decoding path -----------------------------------------------------------------------


class StepClock:
    """A row processor that notes when each decode step reaches it, and the time spent in the
    wrapped grammar processor (``inner``; None: a free row, the scores pass unchanged).

    The gap between two calls is one decode step (forward, sampling, bookkeeping): timing
    every step, not whole calls, lets the median shrug off the bursts of a busy machine.
    """

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.stamps: list[float] = []
        self.inside = 0.0

    def __call__(self, new_ids, scores):
        self.stamps.append(time.perf_counter())
        if self.inner is None:
            return scores
        out = self.inner(new_ids, scores)
        self.inside += time.perf_counter() - self.stamps[-1]
        return out

    def steps_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


class GrammarStepClock(StepClock):
    """``StepClock`` around a grammar: still decides the row's finish reason."""

    def is_complete(self, new_ids):
        return self.inner.is_complete(new_ids)


def bench_decoding(model, tokenizer, grammar, prompts: list[list[int]], repeats: int, log_) -> str:
    """ms per decode step, free vs constrained, at batch 1 and 16.

    Every row carries a ``StepClock``: a free row's passes the scores unchanged (a Python call
    per step, counted against the constrained arm's gain if anything). Each case runs free and
    constrained back to back in alternating order (ABBA); per run, the median step time; the
    ratio is taken per pair, so load that drifts over minutes hits both arms of a pair alike.
    """
    from tuneforge.generation import GenerationSettings, Row, generate_rows

    def run(ids_list, constrained: bool, limit: int) -> tuple[float, float, int]:
        clocks = [
            GrammarStepClock(grammar.row_processor()) if constrained else StepClock()
            for _ in ids_list
        ]
        rows = [
            Row(ids, GenerationSettings(max_new_tokens=limit), logits_processor=clock)
            for ids, clock in zip(ids_list, clocks, strict=True)
        ]
        generate_rows(model, tokenizer, rows)
        # The longest-lived row's clock sees every step of the batch (a finished row's
        # processor is no longer called; the batch still decodes it).
        longest = max(clocks, key=lambda clock: len(clock.stamps))
        steps = longest.steps_ms()
        inside = sum(clock.inside for clock in clocks) / len(longest.stamps) * 1000
        return statistics.median(steps), inside, len(steps)

    cases = {"1": [[ids] for ids in prompts[:4]], "16": [prompts[:16]]}
    out = []
    for label, runs in cases.items():
        per_step = {False: [], True: []}
        ratios, hook, counted = [], [], 0
        for repeat in range(repeats):
            for ids_list in runs:
                order = (False, True) if repeat % 2 == 0 else (True, False)
                pair = {}
                for constrained in order:
                    step_ms, inside, steps = run(ids_list, constrained, 40)
                    pair[constrained] = step_ms
                    per_step[constrained].append(step_ms)
                    counted += steps
                    if constrained:
                        hook.append(inside)
                ratios.append(pair[True] / pair[False])
            log_(f"batch {label} repeat {repeat + 1}: ratios {[f'{r:.3f}' for r in ratios]}")
        free = statistics.median(per_step[False])
        out.append(
            [
                label,
                f"{len(ratios)} ({counted} steps)",
                f"{free:.1f}",
                f"{statistics.median(per_step[True]):.1f}",
                f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f})",
                f"{statistics.median(hook):.2f} ({statistics.median(hook) / free:.1%})",
            ]
        )
    return markdown_table(
        [
            "batch",
            "pairs (steps timed)",
            "free ms / step",
            "constrained ms / step",
            "constrained / free, median of pairs (min–max)",
            "inside the grammar processors, ms / step (share of a free step)",
        ],
        out,
    )


# ---- quality ---------------------------------------------------------------------------------


def bench_quality(arms: list[tuple[str, Callable, int]], records, batch: int, log_) -> str:
    """Each arm ``(name, decode, how many records)``; field accuracy also on the records every
    arm answered, for a like-for-like comparison."""
    from tuneforge.evaluate.metrics import score_json
    from tuneforge.tasks import json_orders

    common = min(count for _, _, count in arms)
    rows = []
    for name, decode, count in arms:
        scores, lengths, truncated, seconds = [], [], 0, 0.0
        for first in range(0, count, batch):
            chunk = records[first : min(first + batch, count)]
            start = time.perf_counter()
            replies = decode(chunk)
            seconds += time.perf_counter() - start
            for record, reply in zip(chunk, replies, strict=True):
                scores.append(
                    score_json(reply.text.strip(), json_orders.SCHEMA, record["expected"])
                )
                lengths.append(reply.completion_tokens)
                truncated += reply.finish_reason == "length"
        rows.append(
            [
                name,
                count,
                f"{sum(s.valid_json for s in scores) / count:.1%}",
                f"{sum(s.schema_valid for s in scores) / count:.1%}",
                f"{statistics.fmean(s.field_accuracy for s in scores):.1%}",
                f"{statistics.fmean(s.field_accuracy for s in scores[:common]):.1%}",
                f"{sum(s.field_accuracy == 1.0 for s in scores) / count:.1%}",
                truncated,
                f"{statistics.fmean(lengths):.1f}",
                f"{seconds / count:.2f}",
            ]
        )
        log_(f"quality {name}: {rows[-1]}")
    return markdown_table(
        [
            "arm",
            "replies",
            "valid JSON",
            "schema-valid",
            "field accuracy",
            f"field accuracy, first {common}",
            "all 5 fields right",
            "cut by max_new_tokens",
            "tokens / reply",
            "s / reply (batch)",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer answers, repeats and records")
    parser.add_argument("--adapter", default=None, help="a LoRA fine-tuned on the JSON task")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats")
    parser.add_argument(
        "--limit", type=int, default=None, help="held-out records for the constrained arms"
    )
    parser.add_argument(
        "--free-limit", type=int, default=None, help="held-out records for the free arms"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 4)

    from tuneforge.generation import (
        GenerationSettings,
        JsonSchemaCompiler,
        Row,
        chat_messages,
        generate_rows,
        prompt_ids,
    )
    from tuneforge.generation.decoding import stop_token_ids
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model
    from tuneforge.tasks import json_orders

    model_dir = ensure_default_model(DEFAULT_HOME, progress=False)
    loaded = load_model(str(model_dir), dtype="float32", device="cpu", progress=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    vocab_size = model.get_output_embeddings().weight.shape[0]
    stops = stop_token_ids(tokenizer, model)
    records = json_orders.load_records("test")
    sections = []

    # 1. Engines.
    engines = []
    setup_rows = []
    for kind in ENGINES:
        engine = kind()
        try:
            start = time.perf_counter()
            engine.setup(tokenizer, vocab_size, stops)
            setup_rows.append([engine.name, engine.version(), f"{time.perf_counter() - start:.2f}"])
            engines.append(engine)
        except ImportError:
            setup_rows.append([engine.name, "not installed", ""])
    log(f"engines: {[e.name for e in engines]}; {load_average()}")
    answers = [
        tokenizer(r["answer"], add_special_tokens=False)["input_ids"]
        for r in records[: 32 if args.quick else 96]
    ]
    schemas = [("task schema", json_orders.SCHEMA), ("any JSON object", {"type": "object"})]
    speed = bench_engine_speed(
        engines, tokenizer, vocab_size, answers, schemas, 1 if args.quick else 3
    )
    coverage = bench_coverage(engines, tokenizer, json_orders.SCHEMA)
    sections.append(
        "### 1. Grammar engines on the default model's tokenizer "
        f"({vocab_size} tokens)\n\n{load_average()}\n\n"
        + markdown_table(["engine", "version", "tokenizer conversion s"], setup_rows)
        + f"\n\nReplaying {len(answers)} held-out answers of the bundled JSON task "
        "(token by token, the mask filled before each token and once more for the stop token); "
        "batch 16 = 16 answers in lockstep, one matcher each, as the per-row processors run. "
        f"The mask is applied by the same numpy code for every engine. {VOCAB_BYTES_NOTE}.\n\n"
        + speed
        + "\n\nSchema coverage (a valid and an invalid instance per feature, fed as tokens):\n\n"
        + coverage
    )

    # 2. The decoding path.
    compiler = JsonSchemaCompiler.for_model(model, tokenizer)
    grammar = compiler.compile(json_orders.SCHEMA)
    prompts = [prompt_ids(tokenizer, chat_messages(r["prompt"], r["system"])) for r in records[:16]]
    log(f"decoding path; {load_average()}")
    decoding = bench_decoding(model, tokenizer, grammar, prompts, repeats, log)
    sections.append(
        "### 2. In the decoding path: constrained vs free (greedy, the task's prompts, at most "
        f"40 new tokens, {repeats} interleaved repeats; target ≤ 1.10×)\n\n{load_average()}\n\n"
        + decoding
        + "\n\nEvery decode step is timed (the gap between two calls of the row's processor: "
        "forward, sampling, bookkeeping and, constrained, the mask); a run's value is its "
        "median step, so prefill is left out and the arms compare step for step although "
        "their replies differ in length. Batch 1: 4 prompts one at a time; batch 16: one "
        "batch of 16 prompts."
    )

    # 3. Quality on the held-out set. The free arms are the slow ones (the base rarely stops)
    # and only a reference here: fewer records by default.
    limit = args.limit or (32 if args.quick else len(records))
    free_limit = min(limit, args.free_limit or (16 if args.quick else 48))
    settings = GenerationSettings(max_new_tokens=64)

    def decoder(decode_model, constrained: bool):
        def decode(chunk):
            rows = [
                Row(
                    prompt_ids(tokenizer, chat_messages(r["prompt"], r["system"])),
                    settings,
                    logits_processor=grammar.row_processor() if constrained else None,
                )
                for r in chunk
            ]
            return generate_rows(decode_model, tokenizer, rows)

        return decode

    arms = [
        ("base", decoder(model, False), free_limit),
        ("base + constrained", decoder(model, True), limit),
    ]
    if args.adapter:
        from tuneforge.adapters import attach_adapter

        tuned = attach_adapter(
            load_model(str(model_dir), dtype="float32", device="cpu", progress=False).model,
            args.adapter,
        )
        arms += [
            ("fine-tuned", decoder(tuned, False), free_limit),
            ("fine-tuned + constrained", decoder(tuned, True), limit),
        ]
    log(f"quality on {limit} held-out records; {load_average()}")
    quality = bench_quality(arms, records, 16, log)
    sections.append(
        f"### 3. The bundled JSON task's held-out set (of {len(records)} records: {limit} for "
        f"the constrained arms, {free_limit} for the free ones; greedy, 64 new tokens, batches "
        f"of 16)\n\n{load_average()}\n\n"
        + quality
        + ("" if args.adapter else "\n\nFine-tuned arms: run with `--adapter DIR`.")
    )
    report(
        "constrained", "Constrained decoding: engines, overhead, validity", "\n\n".join(sections)
    )


if __name__ == "__main__":
    main()
