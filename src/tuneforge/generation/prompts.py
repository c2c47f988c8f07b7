"""Chat messages and the token ids a model is prompted with."""

from __future__ import annotations

from tuneforge.data.templates import ensure_chat_template


def chat_messages(
    prompt: str, system: str | None = None, history: list[dict] | None = None
) -> list[dict]:
    """Build a messages list: optional system turn, prior turns, then the user prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, *(history or []), {"role": "user", "content": prompt}]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Render ``messages`` with the chat template (adding the assistant prefix) into token ids."""
    ensure_chat_template(tokenizer)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]
