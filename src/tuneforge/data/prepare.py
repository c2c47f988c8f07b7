"""The data pipeline in one call: read, validate, dedupe, split, render, tokenize, mask, truncate.

Supervised data becomes ``TokenizedExample``s; preference data (``{"prompt", "chosen",
"rejected"}``) becomes ``TokenizedPair``s (``tuneforge.data.preference``). A caller that needs
one kind says so (``kind``), and a record of the other kind is a ``file:line`` error.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tuneforge.data.config import DataConfig
from tuneforge.data.preference import PairCounts, TokenizedPair, tokenize_pairs
from tuneforge.data.readers import Problems, read_records
from tuneforge.data.rendering import ChatRenderer, Rendered
from tuneforge.data.shapes import (
    PREFERENCE_FORMAT,
    Example,
    InvalidRecord,
    PreferenceExample,
    detect_format,
    to_example,
)
from tuneforge.data.templates import ensure_chat_template
from tuneforge.data.tokenization import (
    IGNORE_INDEX,
    TokenizedExample,
    encode_texts,
    label_rendered,
)
from tuneforge.errors import DataError
from tuneforge.progress import Progress

_CHUNK = 4096  # examples rendered and tokenized per batch call

KINDS = ("supervised", "preference")
"""What a caller may ask ``prepare_data`` for: supervised examples or preference pairs."""


@dataclass
class DataReport:
    """What the pipeline did, in counts of rows, examples and tokens."""

    source: str = ""
    format: str = ""
    template: str = "none"  # where the chat template came from: tokenizer, fallback, file, none
    max_length: int = 0
    rows_read: int = 0
    invalid_skipped: int = 0
    invalid_samples: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_supervised: int = 0
    train_examples: int = 0
    val_examples: int = 0
    tokens: int = 0  # in kept examples, after truncation
    supervised_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)  # before truncation, tokens
    pairs: PairCounts | None = None  # preference data: what the pair truncation rule did

    @property
    def supervised_share(self) -> float:
        """Share of kept tokens that carry loss (0..1)."""
        return self.supervised_tokens / self.tokens if self.tokens else 0.0

    def summary(self) -> str:
        """A few human-readable lines."""
        if self.pairs is not None:
            return self._pair_summary(self.pairs)
        lines = [
            f"source: {self.source} (format {self.format}, chat template: {self.template})",
            f"rows read: {self.rows_read}, invalid skipped: {self.invalid_skipped}, "
            f"duplicates removed: {self.duplicates_removed}",
            f"examples: {self.train_examples} train, {self.val_examples} validation",
            f"longer than max_length={self.max_length}: {self.truncated} truncated, "
            f"{self.dropped_too_long} dropped; dropped with no supervised tokens: "
            f"{self.dropped_no_supervised}",
            f"tokens: {self.tokens}, carrying loss: {self.supervised_tokens} "
            f"({100 * self.supervised_share:.1f}%)",
        ]
        lines += [f"  skipped: {sample}" for sample in self.invalid_samples[:5]]
        return "\n".join(lines)

    def _pair_summary(self, pairs: PairCounts) -> str:
        cut = (
            f"{pairs.truncated} pairs cut (both completions to max_length minus the prompt; "
            f"chosen cut in {pairs.chosen_cut}, rejected in {pairs.rejected_cut}: a cut "
            "completion is scored without its end)"
            if pairs.truncated
            else "0 pairs cut"
        )
        lines = [
            f"source: {self.source} (format {self.format}, chat template: {self.template})",
            f"rows read: {self.rows_read}, invalid skipped: {self.invalid_skipped}, "
            f"duplicates removed: {self.duplicates_removed}",
            f"pairs: {self.train_examples} train, {self.val_examples} validation",
            f"longer than max_length={self.max_length} (prompt + one completion): {cut}, "
            f"{pairs.dropped_too_long} dropped; prompt alone fills max_length (a prompt is "
            f"never cut): {pairs.prompt_too_long} dropped; dropped with no supervised tokens: "
            f"{pairs.dropped_no_supervised}",
            f"tokens (pair rows, prompt once): {self.tokens}, carrying loss: "
            f"{self.supervised_tokens} ({100 * self.supervised_share:.1f}%)",
        ]
        lines += [f"  skipped: {sample}" for sample in self.invalid_samples[:5]]
        return "\n".join(lines)


@dataclass
class PreparedData:
    """Tokenized train and validation examples (or pairs) and the report of how they were made."""

    train: list[TokenizedExample] | list[TokenizedPair]
    val: list[TokenizedExample] | list[TokenizedPair]
    report: DataReport

    @property
    def kind(self) -> str:
        """``preference`` for pairs, else ``supervised``."""
        return "preference" if self.report.pairs is not None else "supervised"


def record_kind(fmt: str) -> str:
    """The kind of data a record shape is: ``preference`` or ``supervised``."""
    return "preference" if fmt == PREFERENCE_FORMAT else "supervised"


def _kind_problem(fmt: str, expected: str) -> str:
    if expected == "preference":
        return (
            f"a {fmt!r} record, but preference training (objective dpo or orpo) reads pairs: "
            '{"prompt": ..., "chosen": ..., "rejected": ...} (strings or lists of turns)'
        )
    return (
        "a preference record (prompt, chosen, rejected): train it with --objective dpo or "
        "orpo, or give supervised records (messages, prompt/completion, ...)"
    )


def load_examples(
    config: DataConfig, report: DataReport, kind: str | None = None
) -> list[Example] | list[PreferenceExample]:
    """Read and validate the records, remove duplicates; counts go into ``report``.

    In ``auto`` format the shape is detected from the first record of each file, and every
    record of that file must have it. The data is all supervised or all preference records.

    Args:
        kind: ``supervised`` or ``preference`` when the caller needs one (a record of the other
            kind is then invalid, reported at its ``file:line``); None takes what the data is.

    Raises:
        ConfigError: no data path given.
        DataError: unreadable input, an invalid record (unless skipping), records of the wrong
            kind, no valid records.
    """
    path = config.require_path()
    problems = Problems(skip=config.skip_invalid)
    auto = config.format == "auto"
    fmt = None if auto else config.format
    formats: list[str] = []  # detected per file in auto mode
    current_file = None
    examples: list = []
    seen: set[tuple] = set()
    shape_invalid = 0
    if kind is None and fmt is not None:
        kind = record_kind(fmt)
    for record in read_records(path, problems):
        report.rows_read += 1
        if auto and record.file != current_file:
            current_file, fmt = record.file, None
        if fmt is None:
            fmt = detect_format(record.data, config.text_field)
            if fmt is None:
                problems.report(
                    record.source,
                    f"unknown record shape (fields {sorted(record.data)[:8]}); expected "
                    "'messages', 'conversations', 'instruction'+'output', 'prompt'+'completion', "
                    f"'prompt'+'chosen'+'rejected' or {config.text_field!r}, or force one with "
                    "--format",
                )
                shape_invalid += 1
                continue
            kind = kind or record_kind(fmt)
            if record_kind(fmt) != kind:  # the data is one kind: the caller's, or the first file's
                problems.report(record.source, _kind_problem(fmt, kind))
                shape_invalid += 1
                fmt = None  # the file's next record is detected afresh
                continue
            if fmt not in formats:
                formats.append(fmt)
        try:
            example = to_example(record.source, record.data, fmt, config.text_field)
        except InvalidRecord as err:
            problems.report(record.source, str(err))
            shape_invalid += 1
            continue
        if not config.keep_duplicates:
            key = _identity(example)  # exact, hashed in C
            if key in seen:
                report.duplicates_removed += 1
                continue
            seen.add(key)
        examples.append(example)
    # Rows the reader rejected (bad JSON, bad UTF-8) never became records: count them as read.
    report.rows_read += problems.count - shape_invalid
    report.format = "+".join(formats) if auto and formats else config.format
    report.invalid_skipped = problems.count
    report.invalid_samples = problems.samples
    if not examples:
        raise DataError(
            f"{config.path}: no valid examples ({report.rows_read} rows read, "
            f"{problems.count} invalid){': ' + problems.samples[0] if problems.samples else ''}"
        )
    return examples


def _identity(example: Example | PreferenceExample) -> tuple:
    if isinstance(example, PreferenceExample):
        return (example.prompt, example.chosen, example.rejected)
    return (example.messages, example.text)


def split_examples(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A deterministic train/validation split (file order kept within each part)."""
    if val_fraction <= 0 or len(examples) < 2:
        return examples, []
    count = min(len(examples) - 1, max(1, round(len(examples) * val_fraction)))
    shuffled = list(range(len(examples)))
    random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:count])
    train = [ex for index, ex in enumerate(examples) if index not in held]
    val = [ex for index, ex in enumerate(examples) if index in held]
    return train, val


def tokenize_examples(
    examples: list[Example],
    tokenizer,
    config: DataConfig,
    report: DataReport,
    renderer: ChatRenderer | None = None,
    problems: Problems | None = None,
) -> Iterator[tuple[Example, Rendered, TokenizedExample]]:
    """Render, tokenize and mask examples in chunks; apply the truncation policy.

    The Rust tokenizer encodes chunk ``k`` in a worker thread while Python renders chunk
    ``k + 1`` and labels chunk ``k - 1`` (two cores busy instead of one).

    Yields the kept examples with their rendering; counts (truncated, dropped, tokens) go into
    ``report``. A record the chat template refuses is reported through ``problems``.
    """
    problems = problems or Problems(skip=config.skip_invalid)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: list = []
        for start in range(0, len(examples), _CHUNK):
            groups = _render_chunk(
                examples[start : start + _CHUNK], tokenizer, config, renderer, problems
            )
            submitted = [
                (
                    group,
                    special,
                    pool.submit(encode_texts, tokenizer, [r.text for _, r in group], special),
                )
                for group, special in groups
            ]
            yield from _finish(pending, tokenizer, config, report)
            pending = submitted
        yield from _finish(pending, tokenizer, config, report)
    report.invalid_skipped = max(report.invalid_skipped, problems.count)


def _render_chunk(chunk, tokenizer, config, renderer, problems) -> list:
    """Render a chunk: ``[(chat pairs, False), (text pairs, True)]`` (empty groups left out)."""
    chats, texts = [], []
    for example in chunk:
        if example.text is not None:
            texts.append((example, _render_text(example.text, tokenizer)))
            continue
        try:
            rendered = renderer.render(example.messages)
        except InvalidRecord as err:
            problems.report(example.source, str(err))
            continue
        if config.train_on_inputs:
            rendered = Rendered(rendered.text, ((0, len(rendered.text)),))
        chats.append((example, rendered))
    return [(group, special) for group, special in ((chats, False), (texts, True)) if group]


def _finish(pending: list, tokenizer, config: DataConfig, report: DataReport):
    for group, special, future in pending:
        rendered = [r for _, r in group]
        tokenized = label_rendered(tokenizer, rendered, future.result(), special)
        for (example, item_rendered), item in zip(group, tokenized, strict=True):
            kept = _apply_truncation(item, config, report)
            if kept is not None:
                yield example, item_rendered, kept


def _render_text(text: str, tokenizer) -> Rendered:
    """Raw text ends with EOS (so documents are separated) and is supervised everywhere."""
    full = text + (tokenizer.eos_token or "")
    return Rendered(full, ((0, len(full)),))


def _apply_truncation(
    item: TokenizedExample, config: DataConfig, report: DataReport
) -> TokenizedExample | None:
    report.lengths.append(len(item.input_ids))
    if len(item.input_ids) > config.max_length:
        if config.truncation == "drop":
            report.dropped_too_long += 1
            return None
        report.truncated += 1
        item = TokenizedExample(
            item.input_ids[: config.max_length], item.labels[: config.max_length]
        )
    supervised = len(item.labels) - item.labels.count(IGNORE_INDEX)
    if supervised == 0:
        report.dropped_no_supervised += 1
        return None
    report.tokens += len(item.input_ids)
    report.supervised_tokens += supervised
    return item


def prepare_data(
    config: DataConfig, tokenizer, progress: bool = False, kind: str | None = None
) -> PreparedData:
    """Turn the data at ``config.path`` into tokenized train/validation examples or pairs.

    Args:
        config: what to read and how (see DataConfig).
        tokenizer: the model's tokenizer; its chat template is set if missing (see
            ensure_chat_template).
        progress: show a progress bar while tokenizing.
        kind: ``supervised`` or ``preference`` when the caller needs one (see load_examples).

    Raises:
        DataError: unreadable input, invalid records (unless ``skip_invalid``), records of the
            wrong kind, nothing left.
    """
    report = DataReport(source=config.path, max_length=config.max_length)
    examples = load_examples(config, report, kind)
    if isinstance(examples[0], PreferenceExample):
        return _prepare_pairs(examples, tokenizer, config, report)
    renderer = None
    if any(example.messages is not None for example in examples):
        report.template = ensure_chat_template(tokenizer, config.template_file)
        renderer = ChatRenderer(tokenizer)
    train_examples, val_examples = split_examples(examples, config.val_fraction, config.seed)
    problems = Problems(
        skip=config.skip_invalid, count=report.invalid_skipped, samples=report.invalid_samples
    )
    parts = []
    bar = Progress("tokenizing", len(examples), "example", enabled=progress)
    for part in (train_examples, val_examples):
        kept = []
        for _, _, item in tokenize_examples(part, tokenizer, config, report, renderer, problems):
            kept.append(item)
            bar.update(1)
        parts.append(kept)
    bar.close()
    report.train_examples, report.val_examples = len(parts[0]), len(parts[1])
    if not parts[0]:
        raise DataError(f"{config.path}: no trainable examples left\n{report.summary()}")
    return PreparedData(train=parts[0], val=parts[1], report=report)


def _prepare_pairs(
    examples: list[PreferenceExample], tokenizer, config: DataConfig, report: DataReport
) -> PreparedData:
    """``prepare_data`` for preference pairs (rules: ``tuneforge.data.preference``)."""
    if config.train_on_inputs:
        raise DataError(
            f"{config.path}: data.train_on_inputs puts loss on the prompt, which preference "
            "training never does (the completions are compared); leave it off"
        )
    report.template = ensure_chat_template(tokenizer, config.template_file)
    report.pairs = PairCounts()
    renderer = ChatRenderer(tokenizer)
    problems = Problems(
        skip=config.skip_invalid, count=report.invalid_skipped, samples=report.invalid_samples
    )
    parts = []
    for part in split_examples(examples, config.val_fraction, config.seed):
        kept = tokenize_pairs(
            part, tokenizer, renderer, config.max_length, config.truncation, report, problems
        )
        for _, pair in kept:
            report.tokens += pair.row_length
            report.supervised_tokens += pair.supervised_tokens
        parts.append([pair for _, pair in kept])
    report.invalid_skipped = max(report.invalid_skipped, problems.count)
    counts = report.pairs
    report.truncated, report.dropped_too_long = counts.truncated, counts.dropped_too_long
    report.dropped_no_supervised = counts.dropped_no_supervised
    report.train_examples, report.val_examples = len(parts[0]), len(parts[1])
    if not parts[0]:
        raise DataError(f"{config.path}: no trainable pairs left\n{report.summary()}")
    return PreparedData(train=parts[0], val=parts[1], report=report)
