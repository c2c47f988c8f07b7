"""The engine's continuous batching: rows join a running batch between decode steps and each
gets its solo answer; a failed step answers the running rows with an error and the engine goes
on serving (tiny random Llama, fp32); and through the server over HTTP, requests on different
adapters join a running reply and each gets ``tuneforge generate``'s answer."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import BASE_NAME, run_server
from tiny import build_llama, build_tokenizer
from tuneforge.adapters import AdapterRegistry
from tuneforge.generation import GenerationSettings, Row, chat_messages, generate_rows, prompt_ids
from tuneforge.serve.engine import Engine

PROMPTS = ["The capital of France is", "Hello!", "Please return the order as JSON", "Hi"]


@pytest.fixture
def registry():
    tokenizer = build_tokenizer()
    model = build_llama(tokenizer, seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # lively weights: rows that got mixed up would differ
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return AdapterRegistry(model, tokenizer)


def row(registry, index: int, limit: int) -> Row:
    ids = prompt_ids(registry.tokenizer, chat_messages(PROMPTS[index]))
    return Row(ids, GenerationSettings(max_new_tokens=limit))


def record_steps(registry, monkeypatch) -> list[int]:
    """Wrap ``registry.step`` to record how many rows each step decoded."""
    active: list[int] = []
    step = registry.step

    def recording(decoder):
        active.append(decoder.active)
        return step(decoder)

    monkeypatch.setattr(registry, "step", recording)
    return active


def test_rows_join_a_running_batch_and_get_their_solo_answers(registry, monkeypatch):
    limits = [40, 8, 12, 6]
    solo = [
        generate_rows(registry.model, registry.tokenizer, [row(registry, i, n)])[0]
        for i, n in enumerate(limits)
    ]
    active = record_steps(registry, monkeypatch)
    engine = Engine(registry, max_batch_size=4, max_queue=8)
    engine.start()

    async def scenario():
        first = engine.submit(row(registry, 0, limits[0]), stream=True)
        kind, _ = await first.events.get()  # the first row is decoding: text came out
        assert kind == "text"
        later = [engine.submit(row(registry, i, limits[i])) for i in (1, 2, 3)]
        replies = [await ticket.result() for ticket in later]
        return [await first.result(), *replies]

    try:
        replies = asyncio.run(scenario())
    finally:
        engine.stop()
    assert [(r.text, r.completion_tokens) for r in replies] == [
        (r.text, r.completion_tokens) for r in solo
    ]
    assert engine.batches == 2 and engine.batched_rows == 4
    assert active[0] == 1 and max(active) == 4  # decoded alone, then the others joined it
    assert len(active) < sum(limits)  # rows shared steps
    assert engine.generated_tokens == sum(limits)


def test_a_failed_step_answers_the_running_rows_and_serving_goes_on(registry, monkeypatch):
    step = registry.step
    calls = []

    def failing_once(decoder):
        calls.append(decoder.active)
        if len(calls) == 3:
            raise RuntimeError("kernel failure")
        return step(decoder)

    monkeypatch.setattr(registry, "step", failing_once)
    engine = Engine(registry, max_batch_size=4, max_queue=8)
    engine.start()

    async def scenario():
        tickets = [engine.submit(row(registry, i, 20)) for i in (0, 1)]
        outcomes = []
        for ticket in tickets:
            try:
                outcomes.append(await ticket.result())
            except RuntimeError as err:
                outcomes.append(err)
        after = await engine.submit(row(registry, 2, 5)).result()
        return outcomes, after

    try:
        outcomes, after = asyncio.run(scenario())
    finally:
        engine.stop()
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert after.completion_tokens == 5


def test_requests_join_a_running_batch_through_the_server(
    tiny_model_dir, adapter_root, reference, monkeypatch
):
    """Over HTTP with the ``openai`` client: a long streamed base reply is decoding when three
    requests (adapters a1, a2 and the base) arrive; they join its batch between two steps, and
    every reply equals ``tuneforge generate``'s for that adapter alone."""
    asks = [  # (prompt, adapter, max_tokens)
        ("The capital of France is", None, 60),
        ("Hello!", "a1", 8),
        ("Please return the order as JSON", "a2", 12),
        ("Hi", None, 6),
    ]
    messages = [[{"role": "user", "content": text}] for text, _, _ in asks]
    expected = [
        reference(m, adapter, limit).text
        for m, (_, adapter, limit) in zip(messages, asks, strict=True)
    ]
    adapters = {"a1": adapter_root / "a1", "a2": adapter_root / "a2"}
    with run_server(tiny_model_dir, adapters, api_key=None, max_batch_size=4) as server:
        registry = server.engine.registry
        active: list[int] = []
        step = registry.step

        def slow_recording_step(decoder):  # 20 ms a step: the later requests arrive mid-reply
            active.append(decoder.active)
            time.sleep(0.02)
            return step(decoder)

        monkeypatch.setattr(registry, "step", slow_recording_step)
        client = server.client()

        def ask(index: int) -> str:
            _, adapter, limit = asks[index]
            reply = client.chat.completions.create(
                model=adapter or BASE_NAME,
                messages=messages[index],
                max_tokens=limit,
                temperature=0,
            )
            return reply.choices[0].message.content

        stream = client.chat.completions.create(
            model=BASE_NAME, messages=messages[0], max_tokens=60, temperature=0, stream=True
        )
        pieces = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                break  # the long reply is decoding: send the others now
        with ThreadPoolExecutor(3) as pool:
            later = list(pool.map(ask, [1, 2, 3]))
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        engine = server.engine
    assert ["".join(pieces), *later] == expected
    assert active[0] == 1 and max(active) == 4  # alone first, then the others joined it
    assert engine.batched_rows == 4 and engine.batches >= 2
