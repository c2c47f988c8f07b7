"""Adapters: LoRA/QLoRA configuration, PEFT-format save/load, merge, hot-swap registry."""

from tuneforge.adapters.loading import attach_adapter

__all__ = ["attach_adapter"]
