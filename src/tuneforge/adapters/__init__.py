"""Adapters: PEFT-format save/load with a base identity check, merge, hot-swap registry, export.

Heavy modules (registry, merge, export) are imported on first use of their names, so importing
``tuneforge.adapters`` for ``save_adapter`` stays cheap.
"""

from tuneforge.adapters.identity import BaseIdentity, base_identity
from tuneforge.adapters.loading import (
    attach_adapter,
    load_base_for_adapters,
    read_adapter,
    trained_quantization,
)
from tuneforge.adapters.saving import save_adapter

_LAZY = {
    "AdapterRegistry": "tuneforge.adapters.registry",
    "MergeReport": "tuneforge.adapters.merge",
    "merge_adapter": "tuneforge.adapters.merge",
    "merge_lora": "tuneforge.adapters.merge",
    "unmerge_lora": "tuneforge.adapters.merge",
    "lora_deltas": "tuneforge.adapters.merge",
    "ExportReport": "tuneforge.adapters.export",
    "export_gguf": "tuneforge.adapters.export",
    "write_gguf": "tuneforge.export.gguf_file",
}

__all__ = [
    "AdapterRegistry",
    "BaseIdentity",
    "ExportReport",
    "MergeReport",
    "attach_adapter",
    "base_identity",
    "export_gguf",
    "load_base_for_adapters",
    "lora_deltas",
    "merge_adapter",
    "merge_lora",
    "read_adapter",
    "save_adapter",
    "trained_quantization",
    "unmerge_lora",
    "write_gguf",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuneforge.adapters' has no attribute {name!r}")
