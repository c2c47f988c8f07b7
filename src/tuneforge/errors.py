"""The one exception family for problems a user can cause and fix.

Every message names the thing at fault (a path, a ``file:line``, a field) and what to do about it.
The CLI prints the message on one line without a traceback and exits with code 2.
"""

from __future__ import annotations


class TuneforgeError(Exception):
    """A problem with user input: a path, a file's content, a config field, an option."""


class ModelError(TuneforgeError):
    """A model reference that cannot be resolved or loaded."""


class DataError(TuneforgeError):
    """A data file or example that cannot be read or used for training."""


class ConfigError(TuneforgeError):
    """A configuration field with an invalid or missing value."""


class AdapterError(TuneforgeError):
    """An adapter folder that is missing, corrupt, or does not fit the base model."""


class RunDirError(TuneforgeError):
    """A run directory that would be overwritten, or cannot be resumed."""


class StoreError(TuneforgeError):
    """A retrieval store that is missing, corrupt, or built with another embedding model."""
