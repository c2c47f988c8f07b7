"""The fast decoding path: rows in cache slots, joining and leaving between steps.

``BatchDecoder`` keeps the rows being decoded, each in its own ``SlotCache`` slot at its own
positions, and advances them one token per ``step``. ``join`` adds rows at any time (continuous
batching: the server's new requests join a running batch between two steps instead of waiting
for it to end); a row leaves as soon as it finishes, and its slot is reused. Per forward:

- ``llama_forward`` computes the model's layers with few kernels: bf16 weights packed on CPU,
  q/k/v and gate/up fused (``packed_linear``), each row's own LoRA adapter in one batched
  product per layer (``batched_lora``), keys and values in the row's slot (``slot_cache``);
- a new row whose prompt starts with tokens another row of the batch already holds (a shared
  system prompt, the RAG instruction) copies those keys and values from that row's slot and
  computes only the rest of its prompt.

Per row, as on the plain path: ``Row.logits_processor`` sees the row's new tokens and its
float32 scores before each of its tokens, greedy rows take the best token, sampled rows apply
temperature, top-k (the model's generation config; 50 if unset, as transformers does) and
top-p, then draw from their own generator when seeded (so a seeded row draws the same tokens
alone or in a batch). Stops, limits, cancellation and streaming are ``RowProgress``'s.

``fast_path_blocker`` says which models this path does not decode (``decoding`` then uses
``model.generate``): families other than the Llama-style ones tested here, sliding-window
attention, generation configs with logits processors beyond sampling, LoRA variants, modules
with forward hooks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tuneforge.generation.batched_lora import LoraBank, lora_layers, peft_base_model
from tuneforge.generation.compiled_step import compiled_step_for
from tuneforge.generation.llama_forward import FAMILIES, LlamaForward
from tuneforge.generation.row_progress import RowProgress
from tuneforge.generation.slot_cache import SlotCache

# A new row copies a shared prompt prefix from another row's slot when it is at least this long
# (tokens); shorter ones cost more to look up and copy than to compute.
MIN_SHARED_PREFIX = 16
# generation_config fields that add logits processors to model.generate, with their neutral
# values: any other value sends the model to the plain path, which applies them.
_NEUTRAL_GENERATION = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "remove_invalid_values": (None, False),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "min_p": (None, 0.0),
}


def fast_path_blocker(model, adapters: tuple[str, ...] | None = None) -> str | None:
    """Why ``BatchDecoder`` cannot decode rows on ``adapters`` (peft adapter names; None: the
    ones ``model`` applies to every row) with ``model``, or None. ``model.generate`` decodes
    what it cannot."""
    base = peft_base_model(model)
    config = getattr(base, "config", None)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        return f"model family {family!r} is not one of {', '.join(FAMILIES)}"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        if any(kind != "full_attention" for kind in layer_types):
            return "some layers use sliding-window attention"
    elif getattr(config, "sliding_window", None) is not None:
        return "the model uses sliding-window attention"
    hooked = _hooked_module(model)
    if hooked is not None:
        return f"{hooked} has forward hooks, which the fast path's own forward would not run"
    generation_config = getattr(base, "generation_config", None)
    for name, neutral in _NEUTRAL_GENERATION.items():
        if getattr(generation_config, name, None) not in neutral:
            return f"its generation config sets {name}"
    if lora_layers(base):
        return LoraBank.blocker(model, active_adapters(model) if adapters is None else adapters)
    return None


def _hooked_module(model) -> str | None:
    """The name of a module of ``model`` with forward hooks (``"the model"`` for ``model``
    itself), or None. ``LlamaForward`` reads the modules' weights without calling most of them,
    so a hook someone registered (instrumentation, a test slowing each step) would be skipped
    silently; such a model decodes on the plain path, which calls them."""
    for name, module in model.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return name or "the model"
    return None


def active_adapters(model) -> tuple[str, ...]:
    """The adapters peft applies to every row of ``model`` (none for a plain model)."""
    layers = lora_layers(peft_base_model(model))
    if not layers or any(layer.disable_adapters for _, layer in layers):
        return ()
    return tuple(model.active_adapters)


@dataclass
class _Entry:
    """A row being decoded; ``BatchDecoder.entries[i]`` lives in cache slot ``i``."""

    progress: RowProgress
    adapters: tuple[str, ...]  # peft adapter names applied to this row (empty: the base)
    generator: torch.Generator | None  # a seeded sampled row's own RNG
    started: float  # perf_counter() when it joined (seconds)
    length: int = 0  # tokens whose keys and values its slot holds
    last: int = 0  # its newest token, fed at the next step

    @property
    def tokens(self) -> list[int]:
        """The tokens its slot holds, in order."""
        ids = self.progress.row.prompt_ids + self.progress.new_ids
        return ids[: self.length]


class BatchDecoder:
    """Rows decoding together on one model; rows ``join`` and leave between ``step``s.

    Each call takes the model to run on (a plain causal LM, or a peft model with LoRA
    adapters): the server's model may gain a peft wrapper when its first adapter loads, while
    the cached keys and values (the base model's) stay valid.

    Args:
        tokenizer: decodes each row's new tokens.
        stop_ids: token ids that end a reply.
    """

    def __init__(self, tokenizer, stop_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.entries: list[_Entry] = []
        self.cache: SlotCache | None = None
        self._bank: LoraBank | None = None
        self._bank_model: int | None = None  # id() of the model the bank was built from
        self._forwards: dict[int, tuple[LlamaForward, bool]] = {}  # id(model) -> (forward, LoRA?)
        self.forwards = 0  # model forwards run (prefills and steps)
        self.prompt_tokens_computed = 0  # prompt tokens run through the model (shared: copied)

    @property
    def active(self) -> int:
        """Rows decoding now."""
        return len(self.entries)

    @torch.inference_mode()
    def join(
        self, model, rows: list, adapters: list[tuple[str, ...]] | None = None
    ) -> list[tuple[object, object]]:
        """Add ``rows`` (``Row`` objects) and compute their prompts and first tokens.

        Rows whose prompt shares a long prefix with an earlier row of the same call are
        computed in a second forward, after that row, so they can copy the prefix.

        Args:
            model: the model to run on.
            rows: the new rows.
            adapters: each row's peft adapter names (empty tuple: the base); None gives every
                row the adapters the model applies to all rows (``active_adapters``).

        Returns:
            ``(row, Reply)`` for the rows that finished already (a one-token limit, a stop).
        """
        if adapters is None:
            adapters = [active_adapters(model)] * len(rows)
        started = time.perf_counter()
        new = []
        for row, names in zip(rows, adapters, strict=True):
            seeded = row.settings.temperature > 0 and row.settings.seed is not None
            generator = torch.Generator().manual_seed(row.settings.seed) if seeded else None
            progress = RowProgress(self.tokenizer, row, self.stop_ids)
            new.append(_Entry(progress, tuple(names), generator, started))
        first_wave, second_wave = [], []
        for index, entry in enumerate(new):
            prompt = entry.progress.row.prompt_ids
            holds = self._shared_prefix(entry)[1] > 0
            earlier = [
                o.progress.row.prompt_ids for o in new[:index] if o.adapters == entry.adapters
            ]
            shares = any(_common_prefix(prompt, other) >= MIN_SHARED_PREFIX for other in earlier)
            (second_wave if shares and not holds else first_wave).append(entry)
        finished = []
        for wave in (first_wave, second_wave):
            if wave:
                finished += self._prefill(model, wave)
        return finished

    @torch.inference_mode()
    def step(self, model) -> list[tuple[object, object]]:
        """One new token for every row; returns ``(row, Reply)`` for the rows that finished."""
        if not self.entries:
            return []
        cache = self._cache_for(model)
        entries = self.entries
        cache.place(0, [[entry.length] for entry in entries])
        input_ids = torch.tensor([[entry.last] for entry in entries], device=cache.device)
        for entry in entries:
            entry.length += 1
        logits = self._logits(model, input_ids, entries, [0] * len(entries))
        return self._advance(model, entries, logits)

    def model_forwards(self) -> list[LlamaForward]:
        """The forwards of the models this decoder has run, in first-use order (each one's
        ``compiled`` is its compiled single-row step, or None where steps do not compile)."""
        return [forward for forward, _ in self._forwards.values()]

    def forget_model(self) -> None:
        """Drop what was derived from the model's modules (call after adapters changed)."""
        self._forwards.clear()
        self._bank = None

    # -- internals ---------------------------------------------------------------------------

    def _prefill(self, model, new: list[_Entry]) -> list:
        """Put ``new`` rows into the next slots, compute their prompts, pick first tokens."""
        cache = self._cache_for(model)
        first = len(self.entries)
        shared = [self._shared_prefix(entry) for entry in new]
        prompts = [entry.progress.row.prompt_ids for entry in new]
        width = max(len(prompt) - start for prompt, (_, start) in zip(prompts, shared, strict=True))
        cache.reserve(first + len(new), max(start for _, start in shared) + width)
        input_ids, positions, last = [], [], []
        for offset, (entry, prompt, (source, start)) in enumerate(
            zip(new, prompts, shared, strict=True)
        ):
            cache.copy_slot(source, first + offset, start)
            rest = prompt[start:]
            input_ids.append(rest + [rest[-1]] * (width - len(rest)))  # padding: never seen
            positions.append(list(range(start, start + width)))
            last.append(len(rest) - 1)
            entry.length = len(prompt)
            self.prompt_tokens_computed += len(rest)
        cache.place(first, positions)
        self.entries.extend(new)
        logits = self._logits(model, torch.tensor(input_ids, device=cache.device), new, last)
        return self._advance(model, new, logits)

    def _cache_for(self, model) -> SlotCache:
        if self.cache is None:
            base = peft_base_model(model)
            parameter = next(base.parameters())
            self.cache = SlotCache.for_model(base.config, parameter.dtype, parameter.device)
        return self.cache

    def _shared_prefix(self, new: _Entry) -> tuple[int, int]:
        """``(slot, length)`` of the longest prefix of ``new``'s prompt that a decoding row on
        the same adapters holds (keys and values depend on the adapters), at most all but the
        prompt's last token (whose scores ``new`` needs); ``(0, 0)`` when under
        ``MIN_SHARED_PREFIX``."""
        prompt = new.progress.row.prompt_ids
        best, best_length = 0, 0
        for slot, entry in enumerate(self.entries):
            if entry.adapters != new.adapters:
                continue
            length = _common_prefix(entry.tokens, prompt[:-1])
            if length > best_length:
                best, best_length = slot, length
        return (best, best_length) if best_length >= MIN_SHARED_PREFIX else (0, 0)

    def _logits(self, model, input_ids, entries: list[_Entry], last: list[int]) -> torch.Tensor:
        """float32 next-token scores ``[rows, vocab]`` at position ``last[b]`` of each row's
        input ``input_ids`` (``[rows, q]``), the inputs' keys and values written to the cache."""
        key = id(model)
        if key not in self._forwards:
            forward = LlamaForward(model)
            forward.compiled = compiled_step_for(forward)
            self._forwards[key] = (forward, bool(lora_layers(peft_base_model(model))))
        forward, has_lora = self._forwards[key]
        bank = None
        # rows all on the base read the base layers' weights only: no LoRA terms to add
        if has_lora and any(entry.adapters for entry in entries):
            row_adapters = [entry.adapters for entry in entries]
            wanted = tuple(sorted({name for names in row_adapters for name in names}))
            if self._bank is None or self._bank.adapters != wanted or self._bank_model != key:
                self._bank = LoraBank(model, wanted)
                self._bank_model = key
            self._bank.set_rows(row_adapters)
            bank = self._bank
        self.forwards += 1
        hidden = forward.hidden(input_ids, self.cache, bank)
        if hidden.shape[1] == 1:  # a decode step: each row's one token
            picked = hidden[:, 0]
        else:
            picked = hidden[torch.arange(len(entries)), torch.tensor(last)]
        return forward.logits(picked, bank)

    def _advance(self, model, entries: list[_Entry], scores: torch.Tensor) -> list:
        """Pick each row's next token from its scores, hand it to the row, retire the rows
        that finished."""
        generation_config = getattr(peft_base_model(model), "generation_config", None)
        top_k = getattr(generation_config, "top_k", None)
        tokens = self._pick(entries, scores, 50 if top_k is None else top_k)
        for entry, token in zip(entries, tokens, strict=True):
            entry.last = token
            entry.progress.advance(token)
        return self._retire()

    def _pick(self, entries: list[_Entry], scores: torch.Tensor, top_k: int) -> list[int]:
        """Each row's next token from its float32 scores ``[rows, vocab]``; ``top_k`` applies
        to sampled rows (0: none), as in ``model.generate``."""
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        for index, entry in enumerate(entries):
            processor = entry.progress.row.logits_processor
            if processor is not None:
                scores[index] = processor(list(entry.progress.new_ids), scores[index])
        tokens = scores.argmax(dim=-1).tolist()
        for index, entry in enumerate(entries):
            settings = entry.progress.row.settings
            if settings.temperature == 0:
                continue
            warpers = [TemperatureLogitsWarper(settings.temperature)]
            if top_k:
                warpers.append(TopKLogitsWarper(top_k))
            warpers.append(TopPLogitsWarper(settings.top_p))
            row_scores = scores[index : index + 1]
            for warper in warpers:
                row_scores = warper(None, row_scores)
            probs = torch.softmax(row_scores, dim=-1)
            tokens[index] = int(torch.multinomial(probs, 1, generator=entry.generator))
        return tokens

    def _retire(self) -> list:
        """Remove finished rows (the last row moves into a freed slot); their replies."""
        finished = []
        index = 0
        while index < len(self.entries):
            entry = self.entries[index]
            if entry.progress.finish is None:
                index += 1
                continue
            finished.append(entry)
            last = self.entries.pop()
            if last is not entry:
                self.cache.copy_slot(len(self.entries), index, last.length)
                self.entries[index] = last
        now = time.perf_counter()
        replies = []
        for entry in finished:
            entry.progress.close()
            replies.append((entry.progress.row, entry.progress.reply(now - entry.started)))
        return replies


def _common_prefix(first: list[int], second: list[int]) -> int:
    """How many leading tokens ``first`` and ``second`` share."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length
