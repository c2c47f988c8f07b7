"""The one decoding path (no adapters here; see tests/adapters/test_registry.py): batched rows
equal each row alone, per-row limits, stops, cancellation and streaming, the logits-processor
hook, parity of ``generate`` with plain transformers decoding, the pad-token rule. The per-row
contract is checked on both engines under ``generate_rows`` (the ``decode`` fixture)."""

from __future__ import annotations

import pytest
import torch

from tiny import build_tokenizer
from tuneforge.generation import (
    GenerationSettings,
    Row,
    chat_messages,
    generate,
    generate_rows,
    group_rows,
    prompt_ids,
)
from tuneforge.generation.decoding import generate_rows_plain
from tuneforge.generation.row_progress import held_back

PROMPTS = [
    "The capital of France is",
    "Please return the order as JSON with the fields name, city",
    "Hello!",
    "Hi",
]


@pytest.fixture(params=["fast path", "plain path"])
def decode(request):
    """``generate_rows`` (the fast path for this Llama) or the plain ``model.generate`` path."""
    return generate_rows if request.param == "fast path" else generate_rows_plain


def rows_for(tokenizer, limits, stops=None) -> list[Row]:
    stops = stops or [None] * len(limits)
    return [
        Row(
            prompt_ids(tokenizer, chat_messages(text)),
            GenerationSettings(max_new_tokens=limit, stop=stop or []),
        )
        for text, limit, stop in zip(PROMPTS, limits, stops, strict=True)
    ]


def pick_stop(text: str) -> str:
    """Two printable ASCII characters first found at index 3 or later: a stop string that cuts
    ``text`` inside, whatever partial UTF-8 the random model emitted before it."""
    for start in range(3, len(text) - 1):
        stop = text[start : start + 2]
        if stop.isascii() and stop.isprintable() and stop.strip() and text.find(stop) == start:
            return stop
    raise AssertionError(f"no stop string to pick in {text!r}")


def alone(decode, model, tokenizer, rows: list[Row]):
    return [decode(model, tokenizer, [row])[0] for row in rows]


def test_batched_rows_equal_each_row_alone(lm, decode):
    model, tokenizer = lm
    rows = rows_for(tokenizer, [12, 5, 20, 9])
    assert len({len(row.prompt_ids) for row in rows}) == 4  # left padding is exercised
    together = decode(model, tokenizer, rows)
    solo = alone(decode, model, tokenizer, rows)
    assert [r.text for r in together] == [r.text for r in solo]
    assert [r.completion_tokens for r in together] == [12, 5, 20, 9]
    assert [r.finish_reason for r in together] == ["length"] * 4
    assert [r.prompt_tokens for r in together] == [len(row.prompt_ids) for row in rows]
    assert len({r.text for r in together}) == 4


def test_rows_with_their_own_limits_and_stops_finish_independently(lm, decode):
    model, tokenizer = lm
    reference = decode(model, tokenizer, rows_for(tokenizer, [16] * 4))
    stop = pick_stop(reference[1].text)
    rows = rows_for(tokenizer, [16, 16, 3, 16], [None, [stop], None, ["no such text"]])
    replies = decode(model, tokenizer, rows)
    assert replies[1].text == reference[1].text[: reference[1].text.find(stop)]
    assert replies[1].finish_reason == "stop"
    assert replies[1].completion_tokens < 16
    assert replies[2].completion_tokens == 3 and replies[2].finish_reason == "length"
    assert reference[2].text.startswith(replies[2].text)
    assert [replies[i].text for i in (0, 3)] == [reference[i].text for i in (0, 3)]


def test_streamed_pieces_join_to_the_reply_and_stops_are_never_sent(lm, decode):
    model, tokenizer = lm
    reference = decode(model, tokenizer, rows_for(tokenizer, [16] * 4))
    stops = [[pick_stop(reply.text)] for reply in reference[:3]] + [None]
    rows = rows_for(tokenizer, [16] * 4, stops)
    pieces: list[list[str]] = [[] for _ in rows]
    for index, row in enumerate(rows):
        row.on_text = pieces[index].append
    replies = decode(model, tokenizer, rows)
    for got, reply, stop, ref in zip(pieces, replies, stops, reference, strict=True):
        assert got and "".join(got) == reply.text
        if stop:
            assert reply.text == ref.text[: ref.text.find(stop[0])]
            assert reply.finish_reason == "stop"


def test_generate_streams_the_text_it_returns(lm):
    model, tokenizer = lm
    pieces: list[str] = []
    settings = GenerationSettings(max_new_tokens=15)
    reply = generate(model, tokenizer, chat_messages(PROMPTS[0]), settings, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == reply.text
    plain = generate(model, tokenizer, chat_messages(PROMPTS[0]), settings)
    assert (plain.text, plain.completion_tokens) == (reply.text, reply.completion_tokens)


def test_generate_equals_plain_transformers_greedy_decoding(lm):
    model, tokenizer = lm
    messages = chat_messages(PROMPTS[1], system="you are a helpful assistant.")
    reply = generate(model, tokenizer, messages, GenerationSettings(max_new_tokens=20))
    ids = torch.tensor([prompt_ids(tokenizer, messages)])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=20,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[0, ids.shape[1] :].tolist()
    assert reply.text == tokenizer.decode(new, skip_special_tokens=True)
    assert reply.completion_tokens == len(new) and reply.prompt_tokens == ids.shape[1]


def test_logits_processor_constrains_its_row_and_leaves_the_others_alone(lm, decode):
    model, tokenizer = lm
    target = tokenizer(' {"city": "Oslo"}', add_special_tokens=False)["input_ids"]
    target.append(tokenizer.eos_token_id)
    seen: list[list[int]] = []

    def force_target(new_ids: list[int], scores: torch.Tensor) -> torch.Tensor:
        seen.append(new_ids)
        allowed = torch.full_like(scores, float("-inf"))
        allowed[target[len(new_ids)]] = 0.0
        return scores + allowed

    free = rows_for(tokenizer, [12, 12, 12, 12])
    solo = alone(decode, model, tokenizer, free[:2])
    rows = rows_for(tokenizer, [12, 12, 12, 12])[:2]
    rows[1].logits_processor = force_target
    replies = decode(model, tokenizer, rows)
    assert replies[0].text == solo[0].text  # the free row is untouched
    assert replies[1].text == ' {"city": "Oslo"}' != solo[1].text
    assert replies[1].finish_reason == "stop"
    assert replies[1].completion_tokens == len(target)
    # called once per token of its row, with that row's own tokens so far, never after its end
    assert seen == [target[:n] for n in range(len(target))]


def test_cancelled_row_stops_early_without_disturbing_the_others(lm, decode):
    model, tokenizer = lm
    solo = alone(decode, model, tokenizer, rows_for(tokenizer, [10] * 4))
    rows = rows_for(tokenizer, [10] * 4)
    rows[1].cancelled.set()
    replies = decode(model, tokenizer, rows)
    assert replies[1].completion_tokens == 1
    assert [replies[i].text for i in (0, 2, 3)] == [solo[i].text for i in (0, 2, 3)]


def test_seeded_sampling_repeats_and_a_seeded_row_decodes_as_alone(lm, decode):
    model, tokenizer = lm
    seeded = GenerationSettings(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    ids = prompt_ids(tokenizer, chat_messages(PROMPTS[2]))
    first = decode(model, tokenizer, [Row(ids, seeded)])[0]
    assert decode(model, tokenizer, [Row(ids, seeded)])[0].text == first.text
    rows = rows_for(tokenizer, [10] * 4)
    rows[2].settings = seeded
    replies = decode(model, tokenizer, rows)
    assert replies[2].text == first.text


def test_rows_get_the_pad_token_of_the_data_package(lm, decode):
    """A tokenizer without a pad token gets the one ``data.ensure_pad_token`` picks (a token
    other than EOS), and left-padded rows still equal each row alone."""
    model, _ = lm
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    rows = rows_for(tokenizer, [6, 6, 6, 6])
    together = decode(model, tokenizer, rows)
    assert tokenizer.pad_token == "<|endoftext|>"
    assert [r.text for r in together] == [r.text for r in alone(decode, model, tokenizer, rows)]


def test_grouping_greedy_together_seeded_alone():
    def row(temperature, seed=None, top_p=1.0):
        settings = GenerationSettings(temperature=temperature, seed=seed, top_p=top_p)
        return Row([1], settings)

    rows = [row(0), row(0.7), row(0), row(0.7, seed=1), row(0.7), row(0.7, top_p=0.5)]
    assert group_rows(rows) == [[0, 2], [1, 4], [3], [5]]


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [("hello", [], 0), ("hello wor", ["world"], 3), ("abc\ufffd", [], 1), ("ab", ["xyz"], 0)],
)
def test_held_back_suffix(text, stops, held):
    assert held_back(text, stops) == held
