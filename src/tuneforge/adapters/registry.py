"""Many LoRA adapters hot-swapped on one loaded base model, and mixed-adapter batches.

The base is loaded once; each adapter adds only its small ``A``/``B`` matrices beside the base
layers (peft keeps them in a dict per layer). A generation names the adapter per row: peft's
mixed-batch forward computes ``base(x)`` for the whole batch and adds ``scaling·B·A·x`` for each
row's own adapter (``__base__`` rows get nothing), so rows with different adapters share one
batch, and each row gets the tokens it would get alone (greedy decoding, left padding).

Thread safety: every method may be called from any thread. Generations and adapter changes are
serialised by one lock (one model, one forward at a time). ``unload`` waits until the requests in
flight on that adapter have finished, and refuses new ones meanwhile; ``in_use(name)`` tells how
many are in flight or queued.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from tuneforge.adapters.identity import BaseIdentity, base_identity
from tuneforge.adapters.loading import check_adapter, load_checked, read_adapter
from tuneforge.errors import AdapterError
from tuneforge.generation import (
    GenerationSettings,
    Reply,
    callback_streamer,
    finish_reply,
    prompt_ids,
    sampling_kwargs,
    stop_token_ids,
)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class AdapterRegistry:
    """Named LoRA adapters on one base model, for generation with any adapter or none.

    Args:
        model: the loaded base model (a plain transformers causal LM), in eval mode.
        tokenizer: its tokenizer (chat template used to render messages).
    """

    def __init__(self, model, tokenizer) -> None:
        from peft import PeftModel

        if isinstance(model, PeftModel):
            raise AdapterError(
                "AdapterRegistry takes the plain base model; load adapters with registry.load()"
            )
        self.tokenizer = tokenizer
        self._base = model.eval()
        self._peft = None  # the PeftModel wrapping the base once an adapter is loaded
        self._dirs: dict[str, Path] = {}
        self._internal: dict[str, str] = {}  # user name -> peft adapter name (a module key)
        self._ids = itertools.count()
        self._identity: BaseIdentity | None = None
        self._model_lock = threading.RLock()
        self._requests = threading.Condition()
        self._in_use: Counter[str] = Counter()
        self._unloading: set[str] = set()

    # -- adapters ----------------------------------------------------------------------------

    @property
    def model(self):
        """The model generation runs on: the base, or the PeftModel wrapping it."""
        return self._peft if self._peft is not None else self._base

    def names(self) -> list[str]:
        """The loaded adapters' names, in load order."""
        return list(self._dirs)

    def adapter_dir(self, name: str) -> Path:
        """The folder adapter ``name`` was loaded from."""
        self._require(name)
        return self._dirs[name]

    def peft_name(self, name: str | None) -> str:
        """The name peft knows adapter ``name`` by (``__base__`` for None), for callers that
        run their own decoding with ``adapter_names=[...]`` on ``self.model``.

        User names may hold characters a peft module key cannot (``.``), so peft gets its own.
        """
        if name is None:
            return BASE
        self._require(name)
        return self._internal[name]

    def in_use(self, name: str) -> int:
        """How many generations on adapter ``name`` are running or waiting to run."""
        with self._requests:
            return self._in_use[name]

    def load(self, name: str, adapter_dir: Path | str) -> None:
        """Load the adapter in ``adapter_dir`` under ``name``.

        Raises:
            AdapterError: the name is taken, or the folder is missing, corrupt, or does not fit
                this base (identity, rank, targets). The registry is then unchanged.
        """
        if not name or name == BASE:
            raise AdapterError(f"adapter name {name!r} is reserved or empty; choose another")
        files = read_adapter(adapter_dir)  # reads and checks files before any lock is taken
        with self._model_lock:
            if name in self._dirs:
                raise AdapterError(
                    f"adapter {name!r} is already loaded (from {self._dirs[name]}); unload it "
                    "first or choose another name"
                )
            if self._identity is None:
                self._identity = base_identity(self._base)
            check_adapter(files, self._base, self._identity)
            internal = f"adapter_{next(self._ids)}"
            if self._peft is None:
                self._peft = load_checked(self._base, files, internal)
            else:
                load_checked(self._peft, files, internal)
            self._dirs[name] = Path(adapter_dir)
            self._internal[name] = internal

    def unload(self, name: str, timeout_s: float | None = None) -> None:
        """Remove adapter ``name``, after the generations in flight on it have finished.

        Args:
            timeout_s: longest wait for in-flight generations (None: wait as long as needed).

        Raises:
            AdapterError: no adapter by that name, or the wait timed out (it stays loaded).
        """
        with self._requests:
            self._require(name)
            self._unloading.add(name)
            try:
                if not self._requests.wait_for(lambda: self._in_use[name] == 0, timeout_s):
                    raise AdapterError(
                        f"adapter {name!r} still has {self._in_use[name]} generations in flight "
                        f"after {timeout_s} s; retry later"
                    )
                with self._model_lock:
                    internal = self._internal.pop(name)
                    del self._dirs[name]
                    if self._internal:
                        if self._peft.active_adapter == internal:  # hand "active" on first
                            self._peft.set_adapter(next(iter(self._internal.values())))
                        self._peft.delete_adapter(internal)
                    else:  # last one: give back the plain base, no LoRA layers left in it
                        self._base = self._peft.unload()
                        if hasattr(self._base, "peft_config"):
                            del self._base.peft_config
                        self._peft = None
            finally:
                self._unloading.discard(name)

    def _require(self, name: str) -> None:
        if name not in self._dirs:
            raise AdapterError(
                f"no adapter named {name!r} is loaded (loaded: {self.names() or 'none'}); "
                "load it first"
            )

    # -- generation --------------------------------------------------------------------------

    def generate(
        self,
        messages: list[dict],
        adapter: str | None = None,
        settings: GenerationSettings | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """Reply to ``messages`` with adapter ``adapter`` (None: the base).

        ``on_text`` receives each new piece of text as it is generated (streaming).
        """
        return self._run([(messages, adapter)], settings, on_text)[0]

    def generate_batch(
        self,
        rows: list[tuple[list[dict], str | None]],
        settings: GenerationSettings | None = None,
    ) -> list[Reply]:
        """Reply to every ``(messages, adapter_name_or_None)`` row in one batch.

        With greedy decoding each row gets the same tokens as ``generate`` on that row alone.
        ``seconds`` of each reply is the whole batch's wall time.
        """
        return self._run(rows, settings, None) if rows else []

    def _run(self, rows, settings, on_text) -> list[Reply]:
        settings = settings or GenerationSettings()
        wanted = [adapter for _, adapter in rows if adapter is not None]
        with self._requests:
            for adapter in wanted:
                if adapter in self._unloading:
                    raise AdapterError(f"adapter {adapter!r} is being unloaded; retry later")
                self._require(adapter)
            self._in_use.update(wanted)
        try:
            with self._model_lock:
                names = [BASE if a is None else self._internal[a] for _, a in rows]
                return self._generate([m for m, _ in rows], names, settings, on_text)
        finally:
            with self._requests:
                self._in_use.subtract(wanted)
                self._requests.notify_all()

    @torch.inference_mode()
    def _generate(self, conversations, adapter_names, settings, on_text) -> list[Reply]:
        tokenizer, model = self.tokenizer, self.model
        prompts = [prompt_ids(tokenizer, messages) for messages in conversations]
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        width = max(len(ids) for ids in prompts)
        device = next(model.parameters()).device
        # Left padding: every row's last prompt token sits in the last column, so new tokens
        # line up; the attention mask hides the pads and generate() derives positions from it.
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        stop_ids = stop_token_ids(tokenizer, model)
        kwargs = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "max_new_tokens": settings.max_new_tokens,
            "eos_token_id": stop_ids,
            "pad_token_id": pad_id,
        }
        if self._peft is not None:
            kwargs["adapter_names"] = adapter_names
        kwargs.update(sampling_kwargs(settings))
        if settings.stop:
            kwargs.update(stop_strings=settings.stop, tokenizer=tokenizer)
        if on_text is not None:
            kwargs["streamer"] = callback_streamer(tokenizer, on_text)
        start = time.perf_counter()
        output = model.generate(**kwargs)
        seconds = time.perf_counter() - start
        return [
            finish_reply(
                tokenizer, output[row, width:].tolist(), len(ids), stop_ids, settings, seconds
            )
            for row, ids in enumerate(prompts)
        ]


def parse_adapter_spec(text: str) -> tuple[str, Path]:
    """``name=DIR`` -> ``(name, DIR)``; a bare ``DIR`` is named after its folder.

    A bare ``runs/json/adapter`` is named ``json`` (the run's name, not ``adapter``).

    Raises:
        AdapterError: the name part is empty.
    """
    name, sep, path = text.partition("=")
    if not sep or "/" in name or Path(text).exists():
        folder = Path(text)
        named = folder.parent if folder.name == "adapter" and folder.parent.name else folder
        return named.name or "adapter", folder
    if not name.strip() or not path.strip():
        raise AdapterError(f"--adapter {text!r}: expected NAME=DIR or DIR")
    return name.strip(), Path(path.strip())
