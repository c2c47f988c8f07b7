"""Preference pairs (DPO, ORPO): tokens, loss masks, the truncation rule and prefix-shared rows.

A pair is rendered with the chat template as two conversations, prompt + chosen and prompt +
rejected. The supervised characters are the completions' assistant turns, each with its
end-of-turn token, located from the template exactly as for supervised data
(``rendering.ChatRenderer``): the prompt carries no loss in either conversation.

Each conversation is tokenized whole. The pair's *prompt tokens* are the longest common token
prefix of the two, ending before the first supervised token (tokens that merge across the
prompt/reply boundary stay with the completion they belong to, so both conversations are
exactly their own tokenization).

**Truncation.** ``max_length`` bounds each conversation (prompt + one completion), as TRL's
``max_length`` does. The prompt is never cut:

- a pair whose prompt alone leaves no room for a completion token is dropped and counted
  (``prompt_too_long`` in the report), whatever ``truncation`` says;
- ``truncation: truncate`` cuts *both* completions to the same budget, ``max_length`` minus the
  prompt tokens, so chosen and rejected are scored under one rule; the report counts the pairs
  cut and which side was (a cut completion loses its end-of-turn token, so its log-probability
  covers a prefix of the reply), and training prints it;
- ``truncation: drop`` drops every pair with a conversation over ``max_length``, counted.

**Batches.** A row holds the prompt tokens once, then the chosen tokens, then the rejected ones
(prefix sharing; Wang et al. 2024, "Accelerating Direct Preference Optimization with Prefix
Sharing"). ``position_ids`` restart the rejected tokens where the chosen ones started, and
``branch_ids`` (0 prompt, 1 chosen, 2 rejected, -1 padding) let the loss build the attention
mask under which rejected tokens never see chosen ones: each completion is scored exactly as in
its own conversation, and the prompt is computed once instead of twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tuneforge.data.batching import Batch, length_grouped
from tuneforge.data.readers import Problems
from tuneforge.data.rendering import ChatRenderer, Rendered
from tuneforge.data.shapes import InvalidRecord, PreferenceExample
from tuneforge.data.tokenization import (
    IGNORE_INDEX,
    TokenizedExample,
    encode_texts,
    label_rendered,
)

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, -1
"""The ``branch_ids`` of a pair row's tokens."""

_CHUNK = 2048  # pairs rendered and tokenized per batch call


@dataclass
class TokenizedPair:
    """One preference pair as tokens: the shared prompt, then each completion with its labels.

    Labels are unshifted as for supervised examples (``labels[t] == ids[t]`` where token t
    carries loss, -100 elsewhere). The prompt tokens carry no loss.

    Attributes:
        prompt_ids: the tokens both conversations start with.
        chosen_ids, chosen_labels: the rest of prompt + chosen.
        rejected_ids, rejected_labels: the rest of prompt + rejected.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]

    @property
    def row_length(self) -> int:
        """Tokens of the pair's batch row: the prompt once, then both completions."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def sequence_tokens(self) -> int:
        """Tokens of the two conversations (the prompt counted twice): what a trainer without
        prefix sharing processes, and what tokens/s counts."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def supervised_tokens(self) -> int:
        """Tokens that carry loss, in both completions."""
        labels = self.chosen_labels + self.rejected_labels
        return len(labels) - labels.count(IGNORE_INDEX)


@dataclass
class PairCounts:
    """What the truncation rule did to a set of pairs (see the module docstring)."""

    truncated: int = 0  # pairs with a completion cut to the budget
    chosen_cut: int = 0
    rejected_cut: int = 0
    dropped_too_long: int = 0  # truncation: drop
    prompt_too_long: int = 0  # the prompt leaves no room: never cut, always dropped
    dropped_no_supervised: int = 0


def render_pair(renderer: ChatRenderer, example: PreferenceExample) -> tuple[Rendered, Rendered]:
    """Render prompt + chosen and prompt + rejected; spans cover the completions' replies only.

    Raises:
        InvalidRecord: the template refuses a conversation.
    """
    prompt_replies = sum(role == "assistant" for role, _ in example.prompt)
    rendered = []
    for completion in (example.chosen, example.rejected):
        whole = renderer.render(example.prompt + completion)
        rendered.append(Rendered(whole.text, whole.spans[prompt_replies:]))
    return rendered[0], rendered[1]


def split_pair(chosen: TokenizedExample, rejected: TokenizedExample) -> TokenizedPair:
    """Two tokenized conversations as a pair: their common prefix before any supervised token,
    then each one's remaining tokens."""
    limit = min(len(chosen.input_ids), len(rejected.input_ids))
    for labels in (chosen.labels, rejected.labels):
        first = next((t for t, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        limit = min(limit, first)
    shared = 0
    while shared < limit and chosen.input_ids[shared] == rejected.input_ids[shared]:
        shared += 1
    return TokenizedPair(
        chosen.input_ids[:shared],
        chosen.input_ids[shared:],
        chosen.labels[shared:],
        rejected.input_ids[shared:],
        rejected.labels[shared:],
    )


def apply_pair_truncation(
    pair: TokenizedPair, max_length: int, truncation: str, counts: PairCounts
) -> TokenizedPair | None:
    """The truncation rule (module docstring): the pair as kept, or None when it is dropped.

    Args:
        max_length: the longest conversation (prompt + one completion), tokens.
        truncation: ``truncate`` or ``drop``.
        counts: updated with what happened.
    """
    prompt = len(pair.prompt_ids)
    budget = max_length - prompt  # completion tokens each conversation may keep
    if budget < 1:
        counts.prompt_too_long += 1
        return None
    chosen_cut, rejected_cut = len(pair.chosen_ids) > budget, len(pair.rejected_ids) > budget
    if chosen_cut or rejected_cut:
        if truncation == "drop":
            counts.dropped_too_long += 1
            return None
        counts.truncated += 1
        counts.chosen_cut += chosen_cut
        counts.rejected_cut += rejected_cut
        pair = TokenizedPair(
            pair.prompt_ids,
            pair.chosen_ids[:budget],
            pair.chosen_labels[:budget],
            pair.rejected_ids[:budget],
            pair.rejected_labels[:budget],
        )
    if any(all(label == IGNORE_INDEX for label in labels) for labels in _completions(pair)):
        counts.dropped_no_supervised += 1
        return None
    return pair


def _completions(pair: TokenizedPair) -> tuple[list[int], list[int]]:
    return pair.chosen_labels, pair.rejected_labels


def tokenize_pairs(
    examples: list[PreferenceExample],
    tokenizer,
    renderer: ChatRenderer,
    max_length: int,
    truncation: str,
    report,
    problems: Problems,
) -> list[tuple[PreferenceExample, TokenizedPair]]:
    """Render, tokenize and mask pairs, then apply the truncation rule.

    Args:
        report: a ``DataReport`` whose ``pairs`` counts (``PairCounts``) and ``lengths`` (each
            pair's longer conversation, before truncation) are updated.

    Returns:
        ``(example, pair)`` for every kept pair; a pair the chat template refuses is reported
        through ``problems``.
    """
    kept = []
    for start in range(0, len(examples), _CHUNK):
        rendered, chunk = [], []
        for example in examples[start : start + _CHUNK]:
            try:
                rendered += render_pair(renderer, example)
            except InvalidRecord as err:
                problems.report(example.source, str(err))
                continue
            chunk.append(example)
        encodings = encode_texts(tokenizer, [item.text for item in rendered], False)
        tokenized = label_rendered(tokenizer, rendered, encodings, False)
        for index, example in enumerate(chunk):
            chosen, rejected = tokenized[2 * index], tokenized[2 * index + 1]
            report.lengths.append(max(len(chosen.input_ids), len(rejected.input_ids)))
            pair = apply_pair_truncation(
                split_pair(chosen, rejected), max_length, truncation, report.pairs
            )
            if pair is not None:
                kept.append((example, pair))
    return kept


def make_pair_batches(
    pairs: list[TokenizedPair],
    *,
    batch_size: int,
    pad_token_id: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    index_offset: int = 0,
) -> list[Batch]:
    """Pair rows (prompt, chosen, rejected; see the module docstring), deterministic per
    ``(seed, epoch)``; rows of similar length share a batch.

    Args:
        pairs: tokenized pairs (already truncated).
        batch_size: pairs per batch (the last may hold fewer).
        pad_token_id: written into padding (never used to find it).
        seed, epoch: the shuffle is a function of both; ``shuffle=False`` sorts by length.
        index_offset: added to each pair's index in ``pairs`` for ``pair_index`` (so train and
            validation pairs can share one table of precomputed reference log-probs).

    Returns:
        Batches of ``input_ids``, ``position_ids``, ``branch_ids``, ``chosen_targets`` and
        ``rejected_targets`` (``[B, T]`` long; a target at position t is the token that the
        model's output at t must predict for that completion, -100 elsewhere: the prompt's last
        position predicts the first token of both) and ``pair_index`` (``[B]``).
        ``batch.real_tokens`` counts the tokens of both conversations of every pair.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(pairs)))
    lengths = [pair.row_length for pair in pairs]
    if shuffle:
        rng.shuffle(order)
    groups = length_grouped(order, lengths, batch_size, rng if shuffle else None)
    return [_pair_batch(pairs, group, pad_token_id, index_offset) for group in groups]


def _pair_batch(pairs, group: list[int], pad_token_id: int, index_offset: int) -> Batch:
    width = max(pairs[i].row_length for i in group)
    shape = (len(group), width)
    ids = torch.full(shape, pad_token_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    branches = torch.full(shape, PADDING, dtype=torch.long)
    targets = {
        CHOSEN: torch.full(shape, IGNORE_INDEX, dtype=torch.long),
        REJECTED: torch.full(shape, IGNORE_INDEX, dtype=torch.long),
    }
    real_tokens = 0
    for row, index in enumerate(group):
        pair = pairs[index]
        prompt = len(pair.prompt_ids)
        cursor = 0
        for branch, tokens, labels in (
            (PROMPT, pair.prompt_ids, None),
            (CHOSEN, pair.chosen_ids, pair.chosen_labels),
            (REJECTED, pair.rejected_ids, pair.rejected_labels),
        ):
            span = slice(cursor, cursor + len(tokens))
            ids[row, span] = torch.tensor(tokens, dtype=torch.long)
            branches[row, span] = branch
            start = 0 if branch == PROMPT else prompt  # completions continue the prompt
            positions[row, span] = torch.arange(start, start + len(tokens))
            if labels is not None:
                # The token at position j of the completion is predicted by the output at its
                # previous token: the prompt's last one for j = 0, else the completion's j - 1.
                for j, label in enumerate(labels):
                    if label == IGNORE_INDEX or (j == 0 and prompt == 0):
                        continue
                    source = prompt - 1 if j == 0 else cursor + j - 1
                    targets[branch][row, source] = label
            cursor += len(tokens)
        real_tokens += pair.sequence_tokens
    batch = Batch(
        input_ids=ids,
        position_ids=positions,
        branch_ids=branches,
        chosen_targets=targets[CHOSEN],
        rejected_targets=targets[REJECTED],
        pair_index=torch.tensor([index_offset + i for i in group], dtype=torch.long),
    )
    batch.real_tokens = real_tokens
    return batch
