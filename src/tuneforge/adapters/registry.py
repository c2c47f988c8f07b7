"""Many LoRA adapters hot-swapped on one loaded base model, and mixed-adapter batches.

The base is loaded once; each adapter adds only its small ``A``/``B`` matrices beside the base
layers (peft keeps them in a dict per layer). Decoding is ``tuneforge.generation.generate_rows``
with each row's adapter passed as peft's ``adapter_names`` (``__base__`` rows get no LoRA), so
rows on different adapters share a batch and each row gets the tokens it would get alone
(greedy decoding): on the fast path every LoRA layer serves all rows in one batched product
(``generation.batched_lora``), on the plain path peft runs one pass per adapter.

Continuous batching (the server): ``new_decoder`` gives a ``BatchDecoder`` that rows ``join``
and leave between ``step``s; each call holds the model lock for one forward only, so adapter
loads and unloads happen between two steps, and the registry tells its decoders when the
model's layers changed.

Thread safety: every method may be called from any thread. Decoding and adapter changes are
serialised by one model lock (one model, one forward at a time). Draining before an unload is
done here and nowhere else: a request ``reserve``s its adapters when it is accepted (queued or
running) and ``release``s them when it has finished; ``unload`` refuses new reservations, waits
until the reserved ones are released, then detaches the adapter under the model lock.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from tuneforge.adapters.identity import BaseIdentity, base_identity
from tuneforge.adapters.loading import check_adapter, load_checked, read_adapter
from tuneforge.errors import AdapterError
from tuneforge.generation import (
    BatchDecoder,
    GenerationSettings,
    Reply,
    Row,
    fast_path_blocker,
    generate_rows,
    new_batch_decoder,
    prompt_ids,
)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


def _read_trained_prompt(adapter_dir: Path | str) -> dict | None:
    """The folder's retrieval prompt record (None: it has none).

    Raises:
        AdapterError: the record is unreadable or invalid (the message names the file).
    """
    from tuneforge.errors import ConfigError
    from tuneforge.rag.raft import trained_prompt

    try:
        return trained_prompt(adapter_dir)
    except ConfigError as err:
        raise AdapterError(str(err)) from err


class AdapterRegistry:
    """Named LoRA adapters on one base model, for generation with any adapter or none.

    Args:
        model: the loaded base model (a plain transformers causal LM), in eval mode.
        tokenizer: its tokenizer; its chat template and pad token are set here, once, so
            decoding threads never change it (``data.ensure_chat_template``/``ensure_pad_token``).
    """

    def __init__(self, model, tokenizer) -> None:
        from peft import PeftModel

        from tuneforge.data import ensure_chat_template, ensure_pad_token

        if isinstance(model, PeftModel):
            raise AdapterError(
                "AdapterRegistry takes the plain base model; load adapters with registry.load()"
            )
        ensure_chat_template(tokenizer)
        ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        self._base = model.eval()
        self._peft = None  # the PeftModel wrapping the base once an adapter is loaded
        self._dirs: dict[str, Path] = {}
        self._prompts: dict[str, dict | None] = {}  # name -> its retrieval prompt record
        self._internal: dict[str, str] = {}  # user name -> peft adapter name (a module key)
        self._ids = itertools.count()
        self._identity: BaseIdentity | None = None
        # Lock order: _model_lock may be held while taking _requests, never the other way.
        self._model_lock = threading.RLock()
        self._requests = threading.Condition()  # guards _dirs, _reserved, _unloading
        self._reserved: Counter[str] = Counter()
        self._unloading: set[str] = set()
        self._decoders: weakref.WeakSet[BatchDecoder] = weakref.WeakSet()  # from new_decoder

    # -- adapters ----------------------------------------------------------------------------

    @property
    def model(self):
        """The model decoding runs on: the base, or the PeftModel wrapping it."""
        return self._peft if self._peft is not None else self._base

    def folders(self) -> dict[str, Path]:
        """The usable adapters (loaded, not being unloaded) and their folders, in load order."""
        with self._requests:
            return {n: d for n, d in self._dirs.items() if n not in self._unloading}

    def names(self) -> list[str]:
        """The usable adapters' names (loaded, not being unloaded), in load order."""
        return list(self.folders())

    def trained_prompt(self, name: str | None) -> dict | None:
        """The retrieval prompt adapter ``name`` was trained with (``tuneforge.rag.raft``'s
        ``rag_prompt.json``), read once when it was loaded; None for the base (``name`` None),
        an adapter without one, or a name not loaded."""
        with self._requests:
            return self._prompts.get(name) if name is not None else None

    def in_use(self, name: str) -> int:
        """How many reserved requests (running or queued) use adapter ``name``."""
        with self._requests:
            return self._reserved[name]

    def load(self, name: str, adapter_dir: Path | str) -> None:
        """Load the adapter in ``adapter_dir`` under ``name`` (waits for a running decode).

        Raises:
            AdapterError: the name is taken, or the folder is missing, corrupt, or does not fit
                this base (identity, rank, targets). The registry is then unchanged.
        """
        if not name or name == BASE:
            raise AdapterError(f"adapter name {name!r} is reserved or empty; choose another")
        files = read_adapter(adapter_dir)  # reads and checks files before any lock is taken
        prompt = _read_trained_prompt(adapter_dir)
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
            self._internal[name] = internal
            self._layers_changed()
            with self._requests:
                self._dirs[name] = Path(adapter_dir)
                self._prompts[name] = prompt

    def unload(self, name: str, timeout_s: float | None = None) -> None:
        """Remove adapter ``name`` once the requests reserved on it have been released.

        From the call on, ``reserve`` refuses ``name``; the reserved requests still decode.

        Args:
            timeout_s: longest wait for reserved requests (seconds; None: as long as needed).

        Raises:
            AdapterError: no adapter by that name, it is being unloaded already, or the wait
                timed out (it then stays loaded and usable).
        """
        with self._requests:
            self._check_usable(name)
            self._unloading.add(name)
            if not self._requests.wait_for(lambda: self._reserved[name] == 0, timeout_s):
                self._unloading.discard(name)
                raise AdapterError(
                    f"adapter {name!r} still has {self._reserved[name]} requests in flight "
                    f"after {timeout_s} s; retry later"
                )
        # The model lock is taken after _requests is let go: a reserve() must never wait
        # for a batch to finish decoding.
        try:
            with self._model_lock:
                self._detach(name)
        finally:
            with self._requests:
                self._unloading.discard(name)

    def _detach(self, name: str) -> None:
        internal = self._internal.pop(name)
        with self._requests:
            del self._dirs[name]
            del self._prompts[name]
        if self._internal:
            if self._peft.active_adapter == internal:  # hand "active" on first
                self._peft.set_adapter(next(iter(self._internal.values())))
            self._peft.delete_adapter(internal)
        else:  # last one: give back the plain base, no LoRA layers left in it
            self._base = self._peft.unload()
            if hasattr(self._base, "peft_config"):
                del self._base.peft_config
            self._peft = None
        self._layers_changed()

    def _layers_changed(self) -> None:
        """Call holding the model lock, after adapter layers were added or removed."""
        for decoder in self._decoders:
            decoder.forget_model()

    def _check_usable(self, name: str) -> None:
        """Call holding ``_requests``."""
        if name in self._unloading:
            raise AdapterError(f"adapter {name!r} is being unloaded; retry later")
        if name not in self._dirs:
            loaded = [n for n in self._dirs if n not in self._unloading]
            raise AdapterError(
                f"no adapter named {name!r} is loaded (loaded: {loaded or 'none'}); load it first"
            )

    # -- requests ----------------------------------------------------------------------------

    def reserve(self, adapters: Iterable[str | None]) -> None:
        """Count a request on each of ``adapters`` (None: the base, not counted) until
        ``release``, so that ``unload`` waits for it. All or nothing.

        Raises:
            AdapterError: an adapter is not loaded, or is being unloaded.
        """
        wanted = [name for name in adapters if name is not None]
        with self._requests:
            for name in wanted:
                self._check_usable(name)
            self._reserved.update(wanted)

    def release(self, adapters: Iterable[str | None]) -> None:
        """End the reservations ``reserve(adapters)`` made."""
        wanted = [name for name in adapters if name is not None]
        with self._requests:
            self._reserved.subtract(wanted)
            self._requests.notify_all()

    def decode(self, rows: list[Row]) -> list[Reply]:
        """Decode ``rows`` (each on its ``Row.adapter``) under the model lock.

        Reserve the rows' adapters first so that an unload waits for them.

        Raises:
            AdapterError: a row names an adapter that is not loaded.
        """
        with self._model_lock:
            names = [BASE if row.adapter is None else self._peft_name(row.adapter) for row in rows]
            adapter_names = names if self._peft is not None else None
            return generate_rows(self.model, self.tokenizer, rows, adapter_names)

    def new_decoder(self) -> BatchDecoder | None:
        """A ``BatchDecoder`` on this registry's model for ``join``/``step`` (continuous
        batching), or None when the base model needs the plain path (use ``decode`` then)."""
        with self._model_lock:
            decoder = new_batch_decoder(self.model, self.tokenizer)
            if decoder is not None:
                self._decoders.add(decoder)
            return decoder

    def join(self, decoder: BatchDecoder, rows: list[Row]) -> tuple[list, list[Row]]:
        """Add ``rows`` (each on its ``Row.adapter``, reserved first) to ``decoder``.

        Returns:
            ``(finished, refused)``: ``(row, Reply)`` pairs of rows that finished at once, and
            the rows whose adapter the fast path cannot decode (a LoRA variant such as DoRA):
            decode those with ``decode``.

        Raises:
            AdapterError: a row names an adapter that is not loaded.
        """
        with self._model_lock:
            verdicts: dict[tuple[str, ...], bool] = {}
            joining, adapters, refused = [], [], []
            for row in rows:
                names = () if row.adapter is None else (self._peft_name(row.adapter),)
                if names not in verdicts:
                    verdicts[names] = fast_path_blocker(self.model, names) is None
                if verdicts[names]:
                    joining.append(row)
                    adapters.append(names)
                else:
                    refused.append(row)
            finished = decoder.join(self.model, joining, adapters) if joining else []
            return finished, refused

    def step(self, decoder: BatchDecoder) -> list:
        """One token for every row of ``decoder``; ``(row, Reply)`` of the rows that finished."""
        with self._model_lock:
            return decoder.step(self.model)

    def _peft_name(self, name: str) -> str:
        # User names may hold characters a peft module key cannot (``.``), so peft gets its own.
        if name not in self._internal:
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {self.names()})")
        return self._internal[name]

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
        settings = settings or GenerationSettings()
        row = Row(prompt_ids(self.tokenizer, messages), settings, adapter, on_text=on_text)
        return self._reserved_decode([row])[0]

    def generate_batch(
        self,
        rows: list[tuple[list[dict], str | None]],
        settings: GenerationSettings | None = None,
    ) -> list[Reply]:
        """Reply to every ``(messages, adapter_name_or_None)`` row in one batch.

        Each row gets the same tokens as ``generate`` on that row alone (greedy, or sampled with
        a seed). ``seconds`` of each reply is the whole batch's wall time.
        """
        settings = settings or GenerationSettings()
        decode_rows = [
            Row(prompt_ids(self.tokenizer, messages), settings, adapter)
            for messages, adapter in rows
        ]
        return self._reserved_decode(decode_rows)

    def _reserved_decode(self, rows: list[Row]) -> list[Reply]:
        adapters = [row.adapter for row in rows]
        self.reserve(adapters)
        try:
            return self.decode(rows)
        finally:
            self.release(adapters)
