"""Text generation from a loaded model: chat template, sampling settings, streaming."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tuneforge.data.templates import ensure_chat_template
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
    """A generated reply with its token counts (tokens) and wall time (seconds)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str


def chat_messages(
    prompt: str, system: str | None = None, history: list[dict] | None = None
) -> list[dict]:
    """Build a messages list: optional system turn, prior turns, then the user prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, *(history or []), {"role": "user", "content": prompt}]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Render ``messages`` with the chat template (adding the assistant prefix) into token ids."""
    ensure_chat_template(tokenizer)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def callback_streamer(tokenizer, on_text: Callable[[str], None]):
    """A transformers streamer that feeds decoded text pieces to ``on_text`` as tokens arrive."""
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def stop_token_ids(tokenizer, model) -> list[int]:
    """EOS ids of the tokenizer and the generation config (end-of-turn tokens included)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(value)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.get_vocab().get(token)
        if token_id is not None:
            ids.add(token_id)
    return sorted(ids)


def sampling_kwargs(settings: GenerationSettings) -> dict:
    """``model.generate`` keyword arguments for greedy or sampled decoding.

    Seeds torch's RNG when ``settings.seed`` is set and sampling is on.
    """
    if settings.temperature > 0:
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def finish_reply(
    tokenizer,
    new_ids: list[int],
    prompt_len: int,
    stop_ids: list[int],
    settings: GenerationSettings,
    seconds: float,
) -> Reply:
    """Cut a row's new tokens at its first stop token (later columns are padding) and stop string."""
    finish = "length"
    for index, token in enumerate(new_ids):
        if token in stop_ids:
            new_ids, finish = new_ids[: index + 1], "stop"
            break
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    for stop in settings.stop:
        if stop in text:
            text, finish = text.split(stop, 1)[0], "stop"
    return Reply(
        text=text,
        prompt_tokens=prompt_len,
        completion_tokens=len(new_ids),
        seconds=seconds,
        finish_reason=finish,
    )


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    messages: list[dict],
    settings: GenerationSettings | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """Generate the assistant's reply to ``messages``.

    Args:
        model: a causal LM (plain or peft-wrapped).
        tokenizer: its tokenizer.
        messages: chat messages (``role``/``content`` dicts) ending with a user turn.
        settings: sampling settings (default: greedy, 256 new tokens).
        on_text: called with each new piece of text as it is generated (streaming).
    """
    settings = settings or GenerationSettings()
    ids = prompt_ids(tokenizer, messages)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id
    kwargs = {
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": stop_ids,
        "pad_token_id": pad_id if pad_id is not None else tokenizer.eos_token_id,
        "attention_mask": torch.ones_like(input_ids),
        **sampling_kwargs(settings),
    }
    if settings.stop:
        kwargs.update(stop_strings=settings.stop, tokenizer=tokenizer)
    if on_text is not None:
        kwargs["streamer"] = callback_streamer(tokenizer, on_text)
    start = time.perf_counter()
    output = model.generate(input_ids=input_ids, **kwargs)
    seconds = time.perf_counter() - start
    new_ids = output[0, input_ids.shape[1] :].tolist()
    return finish_reply(tokenizer, new_ids, len(ids), stop_ids, settings, seconds)
