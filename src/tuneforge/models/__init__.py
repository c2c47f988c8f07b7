"""Resolving model references and loading models: ``default``, folders, ``.gguf`` files, hub ids."""

from tuneforge.models.device import resolve_device, resolve_dtype
from tuneforge.models.loading import (
    LoadedModel,
    check_model_folder,
    list_models,
    load_model,
    resolve_folder,
)
from tuneforge.models.reference import ModelRef, parse_ref

__all__ = [
    "LoadedModel",
    "ModelRef",
    "check_model_folder",
    "list_models",
    "load_model",
    "parse_ref",
    "resolve_device",
    "resolve_dtype",
    "resolve_folder",
]
