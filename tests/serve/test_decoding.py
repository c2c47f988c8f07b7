"""Batched decoding (no HTTP): rows with different adapters, lengths, limits and stops in one
batch get exactly what they get alone; streamed pieces join to the reply."""

from __future__ import annotations

import pytest

from tuneforge.generation import GenerationSettings, prompt_ids
from tuneforge.serve.decoding import Row, _held_back, group_rows

MESSAGES = [
    [{"role": "user", "content": "The capital of France is"}],
    [{"role": "user", "content": "Please return the order as JSON with the fields name, city"}],
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "you are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ],
]


@pytest.fixture(scope="module")
def host(tiny_model_dir, adapter_root):
    from tuneforge.models import load_model
    from tuneforge.serve import ModelHost

    loaded = load_model(str(tiny_model_dir))
    host = ModelHost(loaded.model, loaded.tokenizer)
    host.load("a1", adapter_root / "a1")
    host.load("a2", adapter_root / "a2")
    return host


def rows_for(host, adapters, max_tokens, stops=None):
    return [
        Row(
            prompt_ids(host.tokenizer, messages),
            GenerationSettings(max_new_tokens=limit, stop=stop or []),
            adapter,
        )
        for messages, adapter, limit, stop in zip(
            MESSAGES, adapters, max_tokens, stops or [None] * len(MESSAGES), strict=True
        )
    ]


def test_mixed_batch_equals_each_row_alone(host):
    rows = rows_for(host, [None, "a1", "a2", "a1"], [12, 5, 20, 9])
    together = host.generate(rows)
    alone = [host.generate([row])[0] for row in rows]
    assert [reply.text for reply in together] == [reply.text for reply in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    assert [r.completion_tokens for r in together] == [12, 5, 20, 9]


def test_streamed_pieces_join_to_the_reply_and_stops_are_never_sent(host):
    reference = host.generate(rows_for(host, [None, "a1", "a2", None], [16] * 4))
    stops = [[reply.text[4:6]] if len(reply.text) > 6 else None for reply in reference]
    rows = rows_for(host, [None, "a1", "a2", None], [16] * 4, stops)
    pieces: list[list[str]] = [[] for _ in rows]
    for index, row in enumerate(rows):
        row.on_text = pieces[index].append
    replies = host.generate(rows)
    for got, reply, stop, ref in zip(pieces, replies, stops, reference, strict=True):
        assert "".join(got) == reply.text
        if stop:
            assert reply.text == ref.text[: ref.text.find(stop[0])]
            assert reply.finish_reason == "stop"


def test_cancelled_row_stops_early_without_disturbing_the_others(host):
    rows = rows_for(host, [None, "a1", None, "a2"], [10] * 4)
    alone = [host.generate([row])[0].text for row in rows]
    rows = rows_for(host, [None, "a1", None, "a2"], [10] * 4)
    rows[1].cancelled.set()
    replies = host.generate(rows)
    assert replies[1].completion_tokens == 1
    assert [replies[i].text for i in (0, 2, 3)] == [alone[i] for i in (0, 2, 3)]


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
    assert _held_back(text, stops) == held
