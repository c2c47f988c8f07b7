"""Batches for training: padded rows grouped by length, or packed rows of fixed length.

Packed rows concatenate several examples; ``position_ids`` restart at 0 for each one and there is
no ``attention_mask``, so transformers (>= 4.56, ``masking_utils.find_packed_sequence_indices``)
builds a block-diagonal causal mask from the position ids: an example never attends to another.
Call the model with ``use_cache=False`` (a cache disables that detection). Tail padding forms a
separate segment with labels -100.

Padding is masked by ``attention_mask`` and labels, never by comparing ids with the pad id, so a
pad token equal to EOS is harmless and EOS still carries loss.
"""

from __future__ import annotations

import bisect
import random

import torch

from tuneforge.data.tokenization import IGNORE_INDEX, TokenizedExample
from tuneforge.errors import ConfigError

# Unpacked mode sorts examples by length within windows of this many batches, so a batch holds
# similar lengths (little padding) while the order across windows stays random.
_LENGTH_GROUP_BATCHES = 64


class Batch(dict):
    """A batch (``dict`` of tensors) that also knows how many of its tokens are real.

    ``real_tokens`` is an attribute, not a key, so ``model(**batch)`` sees only tensors.
    """

    real_tokens: int = 0

    def to(self, device, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``, keeping ``real_tokens``."""
        moved = Batch(
            {key: value.to(device, non_blocking=non_blocking) for key, value in self.items()}
        )
        moved.real_tokens = self.real_tokens
        return moved


PAD_TOKEN_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<unk>")


def pick_pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token distinct from EOS when one exists in the vocabulary.

    A pad token equal to EOS is the classic trap: masking pads by id then also masks every EOS,
    and the model never learns to stop. We never add a token (that would resize embeddings);
    the data pipeline masks padding by attention, not by id, either way.
    """
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return
    vocab = tokenizer.get_vocab()
    for candidate in PAD_TOKEN_CANDIDATES:
        if candidate in vocab and candidate != eos:
            tokenizer.pad_token = candidate
            return


def ensure_pad_token(tokenizer) -> int:
    """Give ``tokenizer`` a pad token if it has none; return the pad id.

    A token distinct from EOS is preferred (an existing one: never added, which would resize the
    embeddings). If only EOS exists it is used: safe here, since padding is masked by position.
    """
    if tokenizer.pad_token is None:
        pick_pad_token(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer has neither a pad nor an EOS token; set pad_token")
    return tokenizer.pad_token_id


def pack_rows(lengths: list[int], max_length: int, order: list[int]) -> list[list[int]]:
    """Group example indices into rows of at most ``max_length`` tokens (best-fit decreasing).

    Args:
        lengths: token count of each example (each <= max_length).
        max_length: row capacity in tokens.
        order: the example indices to pack; ties in length keep this order.

    Returns:
        Rows, each a list of example indices, in the order they were opened.
    """
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), kept sorted
    for index in sorted(order, key=lambda i: -lengths[i]):
        length = lengths[index]
        at = bisect.bisect_left(free, (length, -1))
        if at < len(free):
            space, row = free.pop(at)
        else:
            space, row = max_length, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - length > 0:
            bisect.insort(free, (space - length, row))
    return rows


def make_batches(
    examples: list[TokenizedExample],
    *,
    batch_size: int,
    max_length: int,
    packing: bool,
    pad_token_id: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    width_multiple: int = 1,
) -> list[Batch]:
    """Turn examples into batches of tensors, deterministically for ``(seed, epoch)``.

    Args:
        examples: tokenized examples; longer than ``max_length`` ones are cut to it.
        batch_size: rows per batch (the last batch may be smaller), >= 1 (validated by the
            training config).
        max_length: packed row length, and the longest unpacked row (tokens), >= 1.
        packing: pack several examples per row (see module docstring) or pad each one.
        pad_token_id: id written into padding (never used to find padding).
        seed, epoch: the shuffle is a function of both.
        shuffle: False keeps a fixed order (unpacked: sorted by length; packed: as packed).
        width_multiple: unpacked batches are padded to a multiple of this many tokens (at
            most ``max_length``): fewer distinct shapes, for kernels made per shape.

    Returns:
        Batches with ``input_ids``, ``labels``, ``position_ids`` (``[B, T]`` long) and, unpacked
        only, ``attention_mask`` (``[B, T]``, 1 real, 0 pad). ``batch.real_tokens`` counts real
        tokens.
    """
    rng = random.Random(f"{seed}:{epoch}")
    lengths = [min(len(example.input_ids), max_length) for example in examples]
    order = list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    if packing:
        rows = pack_rows(lengths, max_length, order)
        if shuffle:
            rng.shuffle(rows)
        groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        return [_packed_batch(examples, group, max_length, pad_token_id) for group in groups]
    groups = length_grouped(order, lengths, batch_size, rng if shuffle else None)
    return [
        _padded_batch(examples, group, max_length, pad_token_id, width_multiple) for group in groups
    ]


def length_grouped(
    order: list[int], lengths: list[int], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """Indexes grouped into batches of similar lengths (little padding).

    With ``rng`` (a shuffled run; ``order`` already shuffled by it): sorted by length within
    windows of ``_LENGTH_GROUP_BATCHES`` batches, and the batches shuffled. Without: sorted by
    length, in a fixed order.
    """
    if rng is not None:
        window = batch_size * _LENGTH_GROUP_BATCHES
        order = [
            index
            for start in range(0, len(order), window)
            for index in sorted(order[start : start + window], key=lambda i: lengths[i])
        ]
    else:
        order = sorted(order, key=lambda i: lengths[i])
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    return groups


def _padded_batch(
    examples, group: list[int], max_length: int, pad_token_id: int, width_multiple: int = 1
) -> Batch:
    width = max(min(len(examples[i].input_ids), max_length) for i in group)
    width = min(max_length, -(-width // width_multiple) * width_multiple)
    ids, labels, mask = [], [], []
    for index in group:
        example = examples[index]
        real = min(len(example.input_ids), max_length)
        pad = width - real
        ids.append(example.input_ids[:real] + [pad_token_id] * pad)
        labels.append(example.labels[:real] + [IGNORE_INDEX] * pad)
        mask.append([1] * real + [0] * pad)
    batch = Batch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        position_ids=torch.arange(width, dtype=torch.long).expand(len(group), width).clone(),
        attention_mask=torch.tensor(mask, dtype=torch.long),
    )
    batch.real_tokens = sum(sum(row) for row in mask)
    return batch


def _packed_batch(examples, rows: list[list[int]], max_length: int, pad_token_id: int) -> Batch:
    ids, labels, positions, real_tokens = [], [], [], 0
    for row in rows:
        row_ids, row_labels, row_positions = [], [], []
        for index in row:
            example = examples[index]
            real = min(len(example.input_ids), max_length)
            row_ids += example.input_ids[:real]
            row_labels += example.labels[:real]
            row_positions += range(real)
        real_tokens += len(row_ids)
        pad = max_length - len(row_ids)
        ids.append(row_ids + [pad_token_id] * pad)
        labels.append(row_labels + [IGNORE_INDEX] * pad)
        positions.append(row_positions + list(range(pad)))  # padding: its own segment
    batch = Batch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
    )
    batch.real_tokens = real_tokens
    return batch


def count_real_tokens(batch: dict) -> int:
    """Non-padding tokens in a batch (for real tokens per second).

    Uses ``attention_mask`` when present, else the count make_batches attached to the batch.

    Raises:
        TypeError: a packed batch that lost its count (e.g. rebuilt as a plain dict).
    """
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if isinstance(batch, Batch):
        return batch.real_tokens
    raise TypeError(
        "count_real_tokens needs the Batch returned by make_batches for packed batches "
        "(count before moving it to a device into a plain dict)"
    )


def packing_efficiency(lengths: list[int], max_length: int) -> float:
    """Real tokens / row slots when examples of these lengths are packed (0..1)."""
    clipped = [min(length, max_length) for length in lengths]
    if not clipped:
        return 0.0
    rows = pack_rows(clipped, max_length, list(range(len(clipped))))
    return sum(clipped) / (len(rows) * max_length)
