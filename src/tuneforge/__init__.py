"""tuneforge: adapt open LLMs to your task and knowledge on the hardware you have."""

__version__ = "0.1.0"

from tuneforge.errors import TuneforgeError

__all__ = ["TuneforgeError", "__version__"]
