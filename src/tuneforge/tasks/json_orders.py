"""The bundled demo task: turn a short customer message into strict JSON with a fixed schema.

The base model mostly fails the format (it chats, adds prose or invents fields); a few hundred
LoRA steps teach it. The data is generated here, from templates with a fixed seed and varied
phrasing, and shipped as ``tuneforge/assets/json_orders/{train,test}.jsonl`` in the chat
``messages`` shape. ``preference.jsonl`` holds preference pairs for DPO/ORPO derived from the
training split (``preference_record``): the same prompt, the correct reply as ``chosen`` and a
plausible mistake as ``rejected`` (a wrong field value, or the right object wrapped in prose or a
code fence, missing a field, with an extra field or a quoted number). Regenerate it all with::

    python -m tuneforge.tasks.json_orders --out src/tuneforge/assets/json_orders

Example::

    user:      Hi, please cancel my order of 3 wooden chairs. I live in Lyon. ASAP please!
    assistant: {"intent": "cancel", "item": "chair", "quantity": 3, "city": "Lyon", "urgent": true}
"""

from __future__ import annotations

import argparse
import json
import random
from importlib import resources
from pathlib import Path

INTENTS = ("order", "cancel", "return", "track")
ITEMS = ("lamp", "chair", "desk", "kettle", "mug", "rug", "clock", "fan")
FIELDS = ("intent", "item", "quantity", "city", "urgent")
MAX_QUANTITY = 12

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "intent": {"enum": list(INTENTS)},
        "item": {"enum": list(ITEMS)},
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
        "city": {"type": "string", "minLength": 1},
        "urgent": {"type": "boolean"},
    },
    "required": list(FIELDS),
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    'Reply with JSON only: {"intent": order|cancel|return|track, '
    '"item": lamp|chair|desk|kettle|mug|rug|clock|fan, "quantity": integer, '
    '"city": string, "urgent": true|false}'
)

CITIES = (
    "Oslo", "Paris", "Berlin", "Madrid", "Lyon", "Porto", "Vienna", "Prague", "Dublin", "Bergen",
    "Milan", "Zurich", "Ghent", "Krakow", "Seville", "Tallinn", "Riga", "Bristol", "Leeds", "Turku",
    "Malmo", "Aarhus", "Nantes", "Graz", "Bologna", "Utrecht", "Cork", "Basel", "Lille", "Bonn",
)  # fmt: skip
ADJECTIVES = ("", "", "", "red", "small", "wooden", "blue", "large", "black", "white", "steel")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")  # fmt: skip
GREETINGS = ("", "", "", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Dear support, ")

# {n}: quantity and item ("3 red lamps"); intent phrasings, several per intent.
PHRASES = {
    "order": (
        "I'd like to order {n}.", "Please send me {n}.", "Can I buy {n}?", "I want {n}.",
        "Order {n} for me, please.", "Could you ship {n}?", "I need {n}.",
        "Put me down for {n}.", "I'd like to purchase {n}.",
    ),
    "cancel": (
        "Please cancel my order of {n}.", "I no longer need the {n} I ordered.",
        "Cancel the {n}, please.", "Stop my order for {n}.", "Scrap my order of {n}.",
        "I changed my mind about the {n}, cancel it.",
    ),
    "return": (
        "I want to return {n}.", "The {n} arrived broken, I'm sending them back.",
        "How do I return the {n}?", "Refund please for {n}.", "I'd like to send back {n}.",
        "The {n} are not what I expected, I want a return.",
    ),
    "track": (
        "Where are my {n}?", "Any update on the {n} I ordered?", "Track my order of {n}.",
        "When will the {n} arrive?", "What is the status of my {n}?", "Has my order of {n} shipped?",
    ),
}  # fmt: skip
CITY_PHRASES = (
    "Ship to {c}.", "I live in {c}.", "The address is in {c}.", "I'm in {c}.", "Deliver to {c}.",
    "City: {c}.", "It goes to {c}.", "My home is in {c}.",
)  # fmt: skip
URGENT_PHRASES = ("It's urgent.", "ASAP please!", "I need it by tomorrow.", "Rush it, please.",
                  "This is urgent!", "Express delivery please.")  # fmt: skip
CALM_PHRASES = ("", "", "No rush.", "Whenever is fine.", "Thanks!", "Take your time.")


def _quantity_text(rng: random.Random, quantity: int, item: str, determined: bool) -> str:
    """ "3 red lamps", "a lamp", ...; ``determined``: after "the"/"my", so never "a"."""
    adjective = rng.choice(ADJECTIVES)
    noun = f"{adjective} {item}".strip()
    if quantity == 1:
        count = rng.choice(("one", "1") if determined else ("a", "one", "1"))
        if count == "a" and noun[0] in "aeiou":
            count = "an"
        return f"{count} {noun}"
    count = rng.choice((str(quantity), NUMBER_WORDS[quantity - 1]))
    return f"{count} {noun}s"


def make_example(rng: random.Random) -> tuple[str, dict]:
    """One customer message and the JSON object it should become."""
    answer = {
        "intent": rng.choice(INTENTS),
        "item": rng.choice(ITEMS),
        "quantity": rng.choice((1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12, 7, 9, 11)),
        "city": rng.choice(CITIES),
        "urgent": rng.random() < 0.4,
    }
    phrase = rng.choice(PHRASES[answer["intent"]])
    determined = any(f"{word} {{n}}" in phrase for word in ("the", "my", "The"))
    main = phrase.format(n=_quantity_text(rng, answer["quantity"], answer["item"], determined))
    if answer["quantity"] == 1:  # singular verbs and pronouns for one item
        for plural, singular in (("them", "it"), (" are not", " is not"), ("are my", "is my")):
            main = main.replace(plural, singular)
    city = rng.choice(CITY_PHRASES).format(c=answer["city"])
    tone = rng.choice(URGENT_PHRASES if answer["urgent"] else CALM_PHRASES)
    parts = [main, city] if rng.random() < 0.75 else [city, main]
    if tone:
        parts.insert(rng.randrange(len(parts) + 1), tone)
    message = " ".join(parts)
    greeting = rng.choice(GREETINGS)
    if greeting:
        keep_capital = message.startswith(("I ", "I'"))
        message = greeting + (message if keep_capital else message[0].lower() + message[1:])
    return message, answer


def answer_text(answer: dict) -> str:
    """The exact JSON the model must produce (fixed key order, one line)."""
    return json.dumps({key: answer[key] for key in FIELDS})


def chat_record(message: str, answer: dict) -> dict:
    """A training record in the chat ``messages`` shape."""
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": message},
            {"role": "assistant", "content": answer_text(answer)},
        ]
    }


def generate_splits(
    train_size: int = 1200, test_size: int = 240, seed: int = 1234
) -> tuple[list[dict], list[dict]]:
    """Distinct train and held-out records (no user message appears in both)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: list[list[dict]] = [[], []]
    for split, size in zip(splits, (train_size, test_size), strict=True):
        while len(split) < size:
            message, answer = make_example(rng)
            if message.lower() in seen:
                continue
            seen.add(message.lower())
            split.append(chat_record(message, answer))
    return splits[0], splits[1]


def check(text: str) -> tuple[bool, dict | None, list[str]]:
    """Check a model reply against the schema.

    Returns:
        ``(valid, parsed, errors)``: valid is True only for one JSON object (surrounding
        whitespace allowed, nothing else) that satisfies SCHEMA; parsed is the decoded JSON
        (None when it does not parse); errors are human-readable problems.
    """
    from jsonschema import Draft202012Validator

    try:
        parsed = json.loads(text.strip())
    except json.JSONDecodeError as err:
        return False, None, [f"not JSON: {err.msg} at column {err.colno}"]
    errors = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(Draft202012Validator(SCHEMA).iter_errors(parsed), key=str)
    ]
    return not errors, parsed, errors


REJECTION_KINDS = ("wrong_value", "prose", "fence", "missing_field", "extra_field", "quoted_number")
"""How a ``rejected`` reply goes wrong; half of the pairs get a wrong value (valid JSON that a
field-accuracy metric scores down), the other half a format error (a schema-invalid reply)."""

_PROSE = (
    ("Sure! Here is the JSON: ", ""),
    ("", " Let me know if there is anything else."),
    ("Here you go:\n", ""),
)
_WRONG_QUANTITY = {1: 2, 2: 1, 12: 11}


def _wrong_value(rng: random.Random, answer: dict) -> dict:
    """``answer`` with one field changed to a plausible wrong value."""
    wrong = dict(answer)
    field = rng.choice(FIELDS)
    if field == "intent":
        wrong["intent"] = rng.choice([i for i in INTENTS if i != answer["intent"]])
    elif field == "item":
        wrong["item"] = rng.choice([i for i in ITEMS if i != answer["item"]])
    elif field == "quantity":
        quantity = answer["quantity"]
        wrong["quantity"] = _WRONG_QUANTITY.get(quantity, quantity + rng.choice((-1, 1)))
    elif field == "city":
        wrong["city"] = rng.choice([c for c in CITIES if c != answer["city"]])
    else:
        wrong["urgent"] = not answer["urgent"]
    return wrong


def rejected_reply(rng: random.Random, answer: dict) -> tuple[str, str]:
    """A plausible wrong reply to the request whose correct JSON is ``answer``.

    Returns:
        (the reply text, its kind: one of REJECTION_KINDS).
    """
    if rng.random() < 0.5:
        return answer_text(_wrong_value(rng, answer)), "wrong_value"
    kind = rng.choice(REJECTION_KINDS[1:])
    text = answer_text(answer)
    if kind == "prose":
        before, after = rng.choice(_PROSE)
        return before + text + after, kind
    if kind == "fence":
        return f"```json\n{text}\n```", kind
    if kind == "missing_field":
        dropped = rng.choice(FIELDS)
        return json.dumps({key: answer[key] for key in FIELDS if key != dropped}), kind
    if kind == "extra_field":
        return json.dumps({**{key: answer[key] for key in FIELDS}, "note": "thanks"}), kind
    return text.replace(
        f'"quantity": {answer["quantity"]}', f'"quantity": "{answer["quantity"]}"'
    ), kind


def preference_record(record: dict, rng: random.Random) -> dict:
    """A preference pair (TRL's conversational shape) from a ``messages`` training record."""
    system, user, assistant = record["messages"]
    rejected, _ = rejected_reply(rng, json.loads(assistant["content"]))
    return {
        "prompt": [system, user],
        "chosen": [assistant],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def preference_pairs(train: list[dict], seed: int = 1234) -> list[dict]:
    """One preference pair per training record, deterministic for ``seed``."""
    rng = random.Random(f"preference:{seed}")
    return [preference_record(record, rng) for record in train]


SPLITS = ("train", "test", "preference")


def asset_path(split: str) -> Path:
    """The shipped JSONL file of ``split`` (``train``, ``test`` or ``preference``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(str(resources.files("tuneforge") / "assets" / "json_orders" / f"{split}.jsonl"))


def load_records(split: str = "test") -> list[dict]:
    """The shipped examples as ``{"system", "prompt", "answer", "expected"}`` dicts.

    ``prompt`` is the user message, ``answer`` the exact target JSON text, ``expected`` its
    decoded object.
    """
    records = []
    for line in asset_path(split).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        messages = json.loads(line)["messages"]
        answer = messages[2]["content"]
        records.append(
            {
                "system": messages[0]["content"],
                "prompt": messages[1]["content"],
                "answer": answer,
                "expected": json.loads(answer),
            }
        )
    return records


DEMO_DATA_NAMES = {
    "demo": "train",
    "demo:train": "train",
    "demo:test": "test",
    "demo:preference": "preference",
}


def resolve_demo_data(path: str) -> str:
    """``demo``, ``demo:train``, ``demo:test`` and ``demo:preference`` name this task's shipped
    files; others pass.

    A local file or folder of that name wins. The CLI resolves these names before the data
    package sees a path (the data package knows no task).
    """
    if path in DEMO_DATA_NAMES and not Path(path).exists():
        return str(asset_path(DEMO_DATA_NAMES[path]))
    return path


def write_splits(out_dir: Path, train_size: int = 1200, test_size: int = 240, seed: int = 1234):
    """Generate and write ``train.jsonl``, ``test.jsonl`` and ``preference.jsonl`` (pairs
    derived from the training split) into ``out_dir`` (atomically)."""
    from tuneforge.atomic import write_text

    train, test = generate_splits(train_size, test_size, seed)
    pairs = preference_pairs(train, seed)
    for name, records in (("train", train), ("test", test), ("preference", pairs)):
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        write_text(Path(out_dir) / f"{name}.jsonl", text)
    return len(train), len(test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the json_orders demo data set.")
    parser.add_argument("--out", type=Path, default=asset_path("train").parent)
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--test-size", type=int, default=240)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    counts = write_splits(args.out, args.train_size, args.test_size, args.seed)
    print(
        f"wrote {counts[0]} train and {counts[1]} test examples, and {counts[0]} preference "
        f"pairs, to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
