"""What a caller asks of a generation (``GenerationSettings``) and what it gets back (``Reply``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tuneforge.errors import ConfigError


@dataclass
class GenerationSettings:
    """How to sample a reply.

    Attributes:
        max_new_tokens: upper bound on generated tokens.
        temperature: 0 means greedy decoding (deterministic); > 0 samples.
        top_p: nucleus sampling mass, in (0, 1].
        seed: RNG seed for sampling (None: not reseeded).
        stop: strings that end the reply (not included in it).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Reply:
    """A generated reply with its token counts (tokens) and wall time (seconds).

    ``finish_reason`` is ``"stop"`` (a stop token or stop string ended it) or ``"length"``
    (it reached ``max_new_tokens``, or its request was cancelled).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str


def sampling_kwargs(settings: GenerationSettings) -> dict:
    """``model.generate`` keyword arguments for greedy or sampled decoding.

    Seeds torch's RNG when ``settings.seed`` is set and sampling is on.
    """
    if settings.temperature > 0:
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
