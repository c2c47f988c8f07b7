"""Fixtures for the training tests: a tiny model wide enough for 4-bit blocks, small chat data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tiny import save_tiny_model

ITEMS = ["lamp", "chair", "desk", "mug"]
CITIES = ["Oslo", "Paris", "Lima", "Rome"]


@pytest.fixture(scope="session")
def tiny64_dir(tmp_path_factory) -> Path:
    """A tiny Llama with hidden size 64: bitsandbytes quantizes in blocks of 64 inputs."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny64"), hidden_size=64)


def write_chat_data(path: Path, count: int, seed: int = 0) -> Path:
    """``count`` short chat records (system, user, assistant JSON answer) as JSONL."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        item, city, qty = rng.choice(ITEMS), rng.choice(CITIES), rng.randint(1, 9)
        answer = json.dumps({"item": item, "quantity": qty, "city": city})
        record = {
            "messages": [
                {"role": "user", "content": f"{qty} {item} to {city} #{index}"},
                {"role": "assistant", "content": answer},
            ]
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    """64 short chat examples."""
    return write_chat_data(tmp_path_factory.mktemp("data") / "train.jsonl", 64)


def write_preference_data(path: Path, count: int, seed: int = 0) -> Path:
    """``count`` preference pairs (TRL's conversational shape): the right JSON answer against a
    wrong quantity or a chatty one, as JSONL."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        item, city, qty = rng.choice(ITEMS), rng.choice(CITIES), rng.randint(1, 9)
        answer = {"item": item, "quantity": qty, "city": city}
        wrong = json.dumps({**answer, "quantity": qty + 1}) if index % 2 else "Sure! " + city
        record = {
            "prompt": [{"role": "user", "content": f"{qty} {item} to {city} #{index}"}],
            "chosen": [{"role": "assistant", "content": json.dumps(answer)}],
            "rejected": [{"role": "assistant", "content": wrong}],
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def preference_data(tmp_path_factory) -> Path:
    """40 short preference pairs."""
    return write_preference_data(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", 40)
