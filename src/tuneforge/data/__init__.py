"""Data: user files in, token ids, loss masks and packed batches out."""

from tuneforge.data.templates import FALLBACK_CHAT_TEMPLATE, ensure_chat_template

__all__ = ["FALLBACK_CHAT_TEMPLATE", "ensure_chat_template"]
