"""Record shapes: detect them and turn each record into a chat (``messages``) or raw text.

Supported shapes (one per file, detected from the first record or forced with ``format``):

==================  =====================================================================
``messages``        ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}]}``
``sharegpt``        ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}``
``alpaca``          ``{"instruction": str, "input": str (optional), "output": str}``
``prompt_completion`` ``{"prompt": str | messages, "completion": str | messages}``
``text``            ``{"text": str}`` (continued pre-training: every token carries loss)
``preference``      ``{"prompt": str | messages, "chosen": str | messages,
                    "rejected": str | messages}`` (DPO, ORPO: TRL's conventional and
                    conversational shapes)
==================  =====================================================================

Alpaca records become one user turn (instruction, a blank line, then the input when there is
one) and one assistant turn (output); an optional ``system`` field becomes a system turn.
Prompt/completion strings become one user and one assistant turn. A preference record becomes a
``PreferenceExample``: the prompt's turns (a string is one user turn; a list must end with a user
turn) and two completions (a string is one assistant turn; a list starts with an assistant turn),
each of which must make a valid conversation with the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}


class InvalidRecord(ValueError):
    """A record that does not fit its shape; the message says what is wrong."""


@dataclass(frozen=True)
class Example:
    """One normalised example: a chat (``messages``) or raw ``text``, and where it came from."""

    source: str
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    text: str | None = None  # (messages, text) identifies duplicates exactly


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair: a prompt's turns and the preferred and dispreferred completions.

    ``chosen`` and ``rejected`` continue ``prompt`` (each starts with an assistant turn).
    """

    source: str
    prompt: tuple[tuple[str, str], ...]
    chosen: tuple[tuple[str, str], ...]
    rejected: tuple[tuple[str, str], ...]


PREFERENCE_FORMAT = "preference"


def detect_format(data: dict, text_field: str = "text") -> str | None:
    """The shape of one record, or None when no known shape fits."""
    if "chosen" in data and "rejected" in data:
        return PREFERENCE_FORMAT
    if "messages" in data:
        return "messages"
    if "conversations" in data:
        return "sharegpt"
    if "instruction" in data and "output" in data:
        return "alpaca"
    if "prompt" in data and "completion" in data:
        return "prompt_completion"
    if text_field in data:
        return "text"
    return None


def to_example(
    source: str, data: dict, fmt: str, text_field: str = "text"
) -> Example | PreferenceExample:
    """Convert a record of shape ``fmt`` into an Example (a PreferenceExample for preference).

    Raises:
        InvalidRecord: a missing field, a wrong type, a wrong role order, an empty turn.
    """
    if fmt == PREFERENCE_FORMAT:
        return to_preference_example(source, data)
    if fmt == "text":
        text = _field(data, text_field, fmt)
        if not text.strip():
            raise InvalidRecord(f"field {text_field!r} is empty")
        return Example(source, text=text)
    if fmt == "messages":
        turns = _turns(_field_list(data, "messages", fmt), "role", "content", None)
    elif fmt == "sharegpt":
        turns = _turns(_field_list(data, "conversations", fmt), "from", "value", _SHAREGPT_ROLES)
    elif fmt == "alpaca":
        instruction = _field(data, "instruction", fmt)
        extra = data.get("input") or ""
        if not isinstance(extra, str):
            raise InvalidRecord(f"field 'input' must be a string, got {type(extra).__name__}")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        turns = [("user", user), ("assistant", _field(data, "output", fmt))]
        system = data.get("system")
        if isinstance(system, str) and system.strip():
            turns.insert(0, ("system", system))
    elif fmt == "prompt_completion":
        turns = _prompt_completion(data)
    else:
        raise InvalidRecord(f"unknown format {fmt!r}")
    check_turns(turns)
    return Example(source, messages=tuple(turns))


def check_turns(turns: list[tuple[str, str]]) -> None:
    """Check the role order: an optional system turn, then user/assistant alternating, ending
    with a non-empty assistant turn.

    Raises:
        InvalidRecord: naming the turn at fault (1-based).
    """
    if not turns:
        raise InvalidRecord("the conversation has no turns")
    start = 1 if turns[0][0] == "system" else 0
    if start == len(turns):
        raise InvalidRecord("the conversation has only a system turn; add user/assistant turns")
    for index, (role, content) in enumerate(turns[start:], start=start):
        expected = "user" if (index - start) % 2 == 0 else "assistant"
        if role != expected:
            raise InvalidRecord(
                f"wrong role order: turn {index + 1} is {role!r}, expected {expected!r} "
                "(an optional system turn, then user and assistant alternating)"
            )
        if role == "assistant" and not content.strip():
            raise InvalidRecord(f"empty assistant turn (turn {index + 1})")
    if turns[-1][0] != "assistant":
        raise InvalidRecord(
            f"wrong role order: the last turn is {turns[-1][0]!r}; a conversation must end "
            "with an assistant turn (nothing to learn otherwise)"
        )


def _field(data: dict, name: str, fmt: str) -> str:
    if name not in data or data[name] is None:
        raise InvalidRecord(f"missing field {name!r} (format {fmt})")
    value = data[name]
    if not isinstance(value, str):
        raise InvalidRecord(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _field_list(data: dict, name: str, fmt: str) -> list:
    if name not in data or data[name] is None:
        raise InvalidRecord(f"missing field {name!r} (format {fmt})")
    value = data[name]
    if isinstance(value, str):  # CSV cells hold JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InvalidRecord(f"field {name!r} is not a JSON list ({err.msg})") from err
    if not isinstance(value, list):
        raise InvalidRecord(f"field {name!r} must be a list of turns, got {type(value).__name__}")
    return value


def _turns(
    items: list, role_key: str, content_key: str, role_map: dict[str, str] | None
) -> list[tuple[str, str]]:
    turns = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InvalidRecord(f"turn {number} must be an object, got {type(item).__name__}")
        if role_key not in item:
            raise InvalidRecord(f"turn {number} has no {role_key!r} field")
        if content_key not in item or item[content_key] is None:
            raise InvalidRecord(f"turn {number} has no {content_key!r} field")
        raw_role, content = item[role_key], item[content_key]
        role = role_map.get(str(raw_role).lower()) if role_map else raw_role
        if role not in ROLES:
            known = sorted(role_map) if role_map else list(ROLES)
            raise InvalidRecord(f"turn {number} has unknown role {raw_role!r} (use {known})")
        if not isinstance(content, str):
            raise InvalidRecord(
                f"turn {number}: {content_key!r} must be a string, got {type(content).__name__}"
            )
        turns.append((role, content))
    return turns


def _prompt_completion(data: dict) -> list[tuple[str, str]]:
    prompt, completion = data.get("prompt"), data.get("completion")
    for name, value in (("prompt", prompt), ("completion", completion)):
        if value is None:
            raise InvalidRecord(f"missing field {name!r} (format prompt_completion)")
    if isinstance(prompt, str):
        turns = [("user", prompt)]
    elif isinstance(prompt, list):
        turns = _turns(prompt, "role", "content", None)
    else:
        raise InvalidRecord(f"field 'prompt' must be a string or a list of turns, got {prompt!r}")
    if isinstance(completion, str):
        turns.append(("assistant", completion))
    elif isinstance(completion, list):
        turns += _turns(completion, "role", "content", None)
    else:
        raise InvalidRecord(
            f"field 'completion' must be a string or a list of turns, got {completion!r}"
        )
    return turns


def to_preference_example(source: str, data: dict) -> PreferenceExample:
    """Convert a ``{"prompt", "chosen", "rejected"}`` record (strings or turn lists).

    Raises:
        InvalidRecord: a missing prompt (TRL's implicit-prompt shape), a wrong type, a wrong role
            order, an empty completion, or chosen equal to rejected.
    """
    for name in ("chosen", "rejected"):
        if data.get(name) is None:
            raise InvalidRecord(f"missing field {name!r} (format preference)")
    if data.get("prompt") is None:
        raise InvalidRecord(
            "missing field 'prompt' (format preference): give the shared beginning of the "
            "conversation as 'prompt' and only the replies as 'chosen' and 'rejected' (TRL's "
            "implicit-prompt records, whole conversations in chosen/rejected, are not read)"
        )
    prompt = _preference_turns(data["prompt"], "prompt", "user")
    if prompt[-1][0] != "user":
        raise InvalidRecord(
            f"field 'prompt' ends with a {prompt[-1][0]!r} turn; it must end with a user turn "
            "(the completions are the assistant's reply)"
        )
    chosen = _preference_turns(data["chosen"], "chosen", "assistant")
    rejected = _preference_turns(data["rejected"], "rejected", "assistant")
    for name, completion in (("chosen", chosen), ("rejected", rejected)):
        if completion[0][0] != "assistant":
            raise InvalidRecord(
                f"field {name!r} starts with a {completion[0][0]!r} turn; a completion starts "
                "with the assistant's reply"
            )
        try:
            check_turns(list(prompt + completion))
        except InvalidRecord as err:
            raise InvalidRecord(f"prompt + {name}: {err}") from err
    if chosen == rejected:
        raise InvalidRecord(
            "'chosen' and 'rejected' are identical: the pair prefers nothing; fix or remove it"
        )
    return PreferenceExample(source, prompt, chosen, rejected)


def _preference_turns(value, name: str, role: str) -> tuple[tuple[str, str], ...]:
    """A string as one ``role`` turn, or a list of ``{"role", "content"}`` turns."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRecord(f"field {name!r} is empty")
        return ((role, value),)
    if isinstance(value, list):
        if not value:
            raise InvalidRecord(f"field {name!r} is an empty list of turns")
        try:
            return tuple(_turns(value, "role", "content", None))
        except InvalidRecord as err:
            raise InvalidRecord(f"field {name!r}: {err}") from err
    raise InvalidRecord(
        f"field {name!r} must be a string or a list of turns, got {type(value).__name__}"
    )
