"""Which of llama.cpp's pre-tokenizers a byte-level BPE tokenizer needs (``tokenizer.ggml.pre``).

llama.cpp splits text with a fixed set of regular expressions chosen by the name in
``tokenizer.ggml.pre``; it refuses a name it does not know and tokenizes wrongly with the wrong
one. Its converter (``convert_hf_to_gguf.py``, ``get_vocab_base_pre``) picks the name by encoding a
fixed check text with the model's tokenizer and hashing the token ids: a hash it knows names the
pre-tokenizer. We do the same, with the table below, and fall back to the tokenizer's own
``pre_tokenizer`` definition (the regexes a name stands for, from llama.cpp's ``llama-vocab.cpp``):
a tokenizer whose vocabulary was extended or retrained hashes differently but splits text the same
way. Anything else is refused by name; a wrong guess would load and then answer badly.

Refreshing the table: llama.cpp's ``convert_hf_to_gguf_update.py`` downloads each listed model's
tokenizer and regenerates ``get_vocab_base_pre`` in ``conversion/base.py`` (older checkouts:
``convert_hf_to_gguf.py``); copy the ``chkhsh``/``res`` pairs for the pre-tokenizers of the
families in ``tuneforge.export.families`` from there. The hashes below were taken from the
converter shipped in llama-cpp-python 0.3.36's vendored llama.cpp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256

from tuneforge.errors import ModelError

# The converter's check text, byte for byte (``chktxt`` in get_vocab_base_pre).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(tokenizer.encode(CHECK_TEXT))) -> (llama.cpp pre-tokenizer name, reference model).
KNOWN_CHECK_HASHES: dict[str, tuple[str, str]] = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": (
        "smollm",
        "HuggingFaceTB/SmolLM-135M",
    ),
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": (
        "llama-bpe",
        "meta-llama/Meta-Llama-3-8B",
    ),
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": (
        "smaug-bpe",
        "abacusai/Smaug-Llama-3-70B-Instruct",
    ),
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": (
        "qwen2",
        "Qwen/Qwen1.5-7B",
    ),
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": (
        "qwen2",
        "Qwen/Qwen3-Embedding-0.6B",
    ),
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": (
        "deepseek-r1-qwen",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    ),
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": (
        "tekken",
        "mistralai/Mistral-Nemo-Base-2407",
    ),
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": (
        "gpt-2",
        "openai-community/gpt2",
    ),
}

# The tokenizer.json regexes that llama.cpp's pre-tokenizers implement (the "original regex from
# tokenizer.json" comments in llama-vocab.cpp).
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTES_AFTER_SPLIT = ("ByteLevel", False, False)  # (type, add_prefix_space, use_regex)
_GPT2_BYTES = ("ByteLevel", False, True)  # ByteLevel with its own GPT-2 regex

# A pre-tokenizer's signature (see ``pretokenizer_signature``) -> llama.cpp name.
KNOWN_SIGNATURES: dict[tuple, str] = {
    (_GPT2_BYTES,): "gpt-2",
    (("Digits", True), _GPT2_BYTES): "smollm",
    (("Split", _LLAMA3_REGEX, "Isolated", False), _BYTES_AFTER_SPLIT): "llama-bpe",
    (("Split", _QWEN2_REGEX, "Isolated", False), _BYTES_AFTER_SPLIT): "qwen2",
    (("Split", _TEKKEN_REGEX, "Isolated", False), _BYTES_AFTER_SPLIT): "tekken",
}


@dataclass(frozen=True)
class PreTokenizer:
    """The pre-tokenizer name written to ``tokenizer.ggml.pre`` and how it was found.

    Attributes:
        name: llama.cpp's name (``smollm``, ``llama-bpe``, ``qwen2`` ...).
        source: ``check-text hash (like <model>)`` or ``tokenizer.json pre_tokenizer``.
        check_hash: the sha256 of the check text's token ids.
    """

    name: str
    source: str
    check_hash: str


def check_hash(tokenizer) -> str:
    """The converter's hash: sha256 of ``str(tokenizer.encode(CHECK_TEXT))``."""
    return sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def _step_signature(step: dict) -> tuple:
    kind = step.get("type")
    if kind == "ByteLevel":
        return (kind, bool(step.get("add_prefix_space")), bool(step.get("use_regex", True)))
    if kind == "Digits":
        return (kind, bool(step.get("individual_digits")))
    if kind == "Split":
        pattern = step.get("pattern") or {}
        regex = pattern.get("Regex", pattern.get("String"))
        return (kind, regex, step.get("behavior"), bool(step.get("invert")))
    return (kind, json.dumps(step, sort_keys=True))


def pretokenizer_signature(spec: dict | None) -> tuple:
    """The parts of a tokenizer.json ``pre_tokenizer`` block that decide how text is split.

    Offsets (``trim_offsets``) do not change token ids and are left out.
    """
    if not spec:
        return ()
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    return tuple(_step_signature(step) for step in steps)


def _describe(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path", "") or "(unnamed)"
    return f"{name} ({type(tokenizer).__name__})"


def identify_pretokenizer(tokenizer) -> PreTokenizer:
    """llama.cpp's pre-tokenizer name for a fast byte-level BPE tokenizer.

    Args:
        tokenizer: a transformers fast tokenizer.

    Returns:
        The name, and whether the check-text hash or the ``pre_tokenizer`` definition found it.

    Raises:
        ModelError: neither is known; the message names the tokenizer, its hash and its
            pre-tokenizer, so the table can be extended after checking llama.cpp supports it.
    """
    digest = check_hash(tokenizer)
    if digest in KNOWN_CHECK_HASHES:
        name, reference = KNOWN_CHECK_HASHES[digest]
        return PreTokenizer(name, f"check-text hash, like {reference}", digest)
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer")
    signature = pretokenizer_signature(spec)
    if signature in KNOWN_SIGNATURES:
        return PreTokenizer(KNOWN_SIGNATURES[signature], "tokenizer.json pre_tokenizer", digest)
    raise ModelError(
        f"GGUF export: the pre-tokenizer of tokenizer {_describe(tokenizer)} is not one llama.cpp "
        f"is known to implement (check-text hash {digest}; pre_tokenizer "
        f"{json.dumps(spec)[:300]}). Known: {', '.join(sorted(set(KNOWN_SIGNATURES.values())))}. "
        "Writing a guess would load in llama.cpp and tokenize wrongly; if llama.cpp's "
        "convert_hf_to_gguf.py knows this tokenizer, add its hash to "
        "tuneforge/export/pretokenizer.py"
    )
