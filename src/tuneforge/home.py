"""Where tuneforge keeps its cache: ``$TUNEFORGE_HOME``, default ``~/.cache/tuneforge``.

This is the only place the environment is read for paths; everything else takes a ``home``
argument so tests and callers can point it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """The cache root: ``$TUNEFORGE_HOME`` if set, else ``~/.cache/tuneforge``."""
    env = os.environ.get("TUNEFORGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneforge"
