"""Run a written GGUF file under llama.cpp itself and compare it with the transformers model.

The comparison a user needs before shipping a file to llama.cpp or Ollama: the same prompts
tokenized the same way, the same logits (within the dtype's rounding), the same greedy answers.
It uses llama-cpp-python (``pip install tuneforge[gguf]``) through its C API: the high-level
``Llama`` class cannot switch off llama.cpp's "extra buffer types" (repacked and AMX CPU kernels),
and with them llama.cpp 0.3.36 crashes on every quantized file on AMX-capable CPUs, the upstream
SmolLM2 Q4_1 file included. The reference kernels compute the same function.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tuneforge.errors import ModelError
from tuneforge.generation import GenerationSettings, chat_messages, generate, prompt_ids

SAMPLE_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Order 2 lamps, ship to Oslo.",
)


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot be run here (llama-cpp-python not importable), or None."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:  # OSError too: a wheel built for another machine
        return f"llama-cpp-python is not installed ({err}); pip install 'tuneforge[gguf]'"
    except OSError as err:
        return f"llama-cpp-python's library does not load here ({err})"
    return None


_LOG_CALLBACK = None  # keeps the no-op log callback alive as long as llama.cpp may call it


def _silence_llama_cpp(lib) -> None:
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = lib.llama_log_callback(lambda level, text, data: None)
        lib.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class LlamaCppModel:
    """A GGUF file loaded by llama.cpp (CPU) for tokenizing, logits and greedy decoding.

    Use as a context manager; ``n_ctx`` bounds prompt plus generated tokens.
    """

    def __init__(self, path: Path | str, n_ctx: int = 512, threads: int | None = None) -> None:
        import llama_cpp as lib

        self.lib = lib
        _silence_llama_cpp(lib)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.use_extra_bufts = False  # see the module docstring
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelError(f"{path}: llama.cpp refuses to load this GGUF file")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        context = lib.llama_context_default_params()
        context.n_ctx = context.n_batch = context.n_ubatch = n_ctx
        # An f32 KV cache and plain attention (llama.cpp's defaults round K, V and Q to f16) so
        # the comparison measures the file, not the runtime's caches.
        context.type_k = context.type_v = lib.GGML_TYPE_F32
        context.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if threads:
            context.n_threads = context.n_threads_batch = threads
        self.n_ctx = n_ctx
        self.context = lib.llama_init_from_model(self.model, context)
        if not self.context:
            lib.llama_model_free(self.model)
            raise ModelError(f"{path}: llama.cpp cannot create a context for this file")

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free llama.cpp's context and model."""
        if self.context:
            self.lib.llama_free(self.context)
            self.context = None
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids for ``text`` (special tokens parsed, no BOS added)."""
        data = text.encode("utf-8")
        buffer = (self.lib.llama_token * (len(data) + 8))()
        count = self.lib.llama_tokenize(
            self.vocab, data, len(data), buffer, len(buffer), False, True
        )
        return list(buffer[:count])

    def _decode(self, ids: list[int], start: int, all_logits: bool) -> np.ndarray:
        batch = self.lib.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for index, token in enumerate(ids):
                batch.token[index] = token
                batch.pos[index] = start + index
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = 0
                batch.logits[index] = all_logits or index == len(ids) - 1
            if self.lib.llama_decode(self.context, batch) != 0:
                raise ModelError("llama.cpp failed to evaluate the prompt (llama_decode)")
            rows = range(len(ids)) if all_logits else [len(ids) - 1]
            return np.stack(
                [
                    np.ctypeslib.as_array(
                        self.lib.llama_get_logits_ith(self.context, row), shape=(self.n_vocab,)
                    ).copy()
                    for row in rows
                ]
            )
        finally:
            self.lib.llama_batch_free(batch)

    def _reset(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.context), True)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits ``[len(ids), n_vocab]`` for every position of ``ids``, from a fresh cache."""
        self._reset()
        return self._decode(ids, 0, all_logits=True)

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of ``ids``: up to ``max_new_tokens``, ending at an end token."""
        self._reset()
        last = self._decode(ids, 0, all_logits=False)[-1]
        new: list[int] = []
        while len(new) < max_new_tokens and len(ids) + len(new) < self.n_ctx:
            token = int(np.argmax(last))
            new.append(token)
            if self.lib.llama_vocab_is_eog(self.vocab, token):
                break
            last = self._decode([token], len(ids) + len(new) - 1, all_logits=False)[-1]
        return new


@dataclass
class LlamaCppComparison:
    """The GGUF file under llama.cpp against the transformers model, on the same prompts.

    Attributes:
        prompts: how many chat prompts were compared.
        tokenization_matches: prompts that llama.cpp tokenizes to the same ids.
        max_logit_diff: max |logit difference| over every prompt position and token.
        logit_span: max |logit| of the transformers model (the scale of the difference).
        top1_agreement: fraction of positions whose most likely next token is the same.
        greedy_matches: prompts with the same greedy answer (``max_new_tokens`` tokens).
        answers: ``(prompt, transformers answer, llama.cpp answer)`` per prompt.
    """

    prompts: int
    tokenization_matches: int
    max_logit_diff: float
    logit_span: float
    top1_agreement: float
    greedy_matches: int
    answers: list[tuple[str, str, str]] = field(default_factory=list)


@torch.no_grad()
def compare_with_llama_cpp(
    gguf_path: Path | str,
    model,
    tokenizer,
    prompts: tuple[str, ...] | list[str] = SAMPLE_PROMPTS,
    max_new_tokens: int = 16,
) -> LlamaCppComparison:
    """Run ``gguf_path`` under llama.cpp and compare it with ``model`` on chat ``prompts``.

    Each prompt is rendered with the chat template (as ``tuneforge generate`` does); both models
    see the same token ids, so the logit comparison isolates the weights and architecture, and
    the tokenization check the vocabulary and pre-tokenizer.

    Raises:
        ModelError: llama-cpp-python is missing, or llama.cpp refuses the file.
    """
    missing = llama_cpp_missing()
    if missing:
        raise ModelError(f"cannot run the GGUF file under llama.cpp: {missing}")
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    rows = [(p, prompt_ids(tokenizer, chat_messages(p))) for p in prompts]
    texts = [  # the text prompt_ids tokenized, for llama.cpp to tokenize too
        tokenizer.apply_chat_template(chat_messages(p), add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    n_ctx = max(len(ids) for _, ids in rows) + max_new_tokens + 8
    diffs, spans, agree, positions = [], [], 0, 0
    tokenized = greedy = 0
    answers = []
    with LlamaCppModel(gguf_path, n_ctx=n_ctx) as llama:
        for (prompt, ids), text in zip(rows, texts, strict=True):
            tokenized += llama.tokenize(text) == ids
            expected = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
            actual = llama.logits(ids)[:, : expected.shape[-1]]
            diffs.append(float(np.abs(actual - expected).max()))
            spans.append(float(np.abs(expected).max()))
            agree += int((actual.argmax(-1) == expected.argmax(-1)).sum())
            positions += len(ids)
            ours = generate(model, tokenizer, chat_messages(prompt), settings).text
            theirs = tokenizer.decode(llama.greedy(ids, max_new_tokens), skip_special_tokens=True)
            greedy += ours == theirs
            answers.append((prompt, ours, theirs))
    return LlamaCppComparison(
        prompts=len(rows),
        tokenization_matches=tokenized,
        max_logit_diff=max(diffs),
        logit_span=max(spans),
        top1_agreement=agree / positions,
        greedy_matches=greedy,
        answers=answers,
    )
