"""Chat templates: the tokenizer's own, a documented fallback, or a user's template file.

The fallback is ChatML, the format SmolLM2, Qwen and many others use::

    <|im_start|>system
    You are ...<|im_end|>
    <|im_start|>user
    Hi<|im_end|>
    <|im_start|>assistant
    Hello!<|im_end|>

It is used only when a tokenizer has no template and the user gave none; the tokens ``<|im_start|>``
and ``<|im_end|>`` are then plain text for that tokenizer unless it already knows them.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import DataError

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer, template_file: Path | None = None) -> str:
    """Make sure ``tokenizer.chat_template`` is set; return where it came from.

    Args:
        tokenizer: a transformers tokenizer; modified in place.
        template_file: a Jinja chat template file that overrides the tokenizer's own.

    Returns:
        ``"file"``, ``"tokenizer"`` or ``"fallback"``.
    """
    if template_file is not None:
        path = Path(template_file)
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read the chat template file ({err})") from err
        return "file"
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return "fallback"
