"""Adapters: LoRA/QLoRA configuration, PEFT-format save/load, merge, hot-swap registry."""

from tuneforge.adapters.loading import attach_adapter
from tuneforge.adapters.saving import save_adapter

__all__ = ["attach_adapter", "save_adapter"]
