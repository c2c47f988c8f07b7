"""The tokenizer as llama.cpp reads it from GGUF: tokens, types, merges or scores, special ids.

Two tokenizer kinds cover the supported families, both read from a transformers fast tokenizer
(``tokenizer.json``):

- **byte-level BPE** (GPT-2 style: SmolLM, Llama 3, Qwen, Mistral Nemo) becomes llama.cpp's
  ``gpt2`` model: the token strings, the merges, and the pre-tokenizer name
  (``tuneforge.export.pretokenizer``);
- **SentencePiece-style BPE** (byte fallback, ``▁`` for spaces: Llama 2, Mistral 7B, Gemma)
  becomes llama.cpp's ``llama`` model, which merges the adjacent pair whose concatenation has the
  highest score. The score of a token is minus the rank of the merge that makes it, so the
  earliest merge wins as in BPE. (llama.cpp's converter reads the scores from
  ``tokenizer.model``; a model folder saved by transformers has only ``tokenizer.json``, whose
  merge order carries the same information.)

The embedding matrix may have more rows than the tokenizer has tokens (padded vocabularies, such
as Qwen's): llama.cpp needs one token per row, so the rest are written as unused ``[PADn]``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tuneforge.errors import ModelError
from tuneforge.export.pretokenizer import PreTokenizer, identify_pretokenizer

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class GgufVocabulary:
    """Everything ``tokenizer.ggml.*`` holds for one model.

    Attributes:
        model: llama.cpp's tokenizer model, ``gpt2`` (byte-level BPE) or ``llama``
            (SentencePiece-style).
        tokens: one string per embedding row, in id order.
        types: ``gguf.TokenType`` values, one per token.
        merges: BPE merges ``"a b"`` (``gpt2`` only).
        scores: one per token (``llama`` only).
        pre: the pre-tokenizer (``gpt2`` only).
        add_space_prefix: whether a space is prepended before tokenizing (``llama`` only).
        special_ids: ``bos``/``eos``/``pad``/``unk`` -> token id, for those the tokenizer has.
        add_bos, add_eos: whether encoding adds BOS / EOS.
        chat_template: the Jinja chat template, or None.
    """

    model: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    scores: list[float]
    pre: PreTokenizer | None
    add_space_prefix: bool
    special_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _tokenizer_json(tokenizer) -> dict:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"GGUF export needs a fast tokenizer (tokenizer.json); {type(tokenizer).__name__} "
            f"of {tokenizer.name_or_path!r} is not one"
        )
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _steps(block: dict | None, key: str) -> list[dict]:
    if not block:
        return []
    return block.get(key, []) if block.get("type") == "Sequence" else [block]


def _tokenizer_model(spec: dict, tokenizer) -> str:
    """``gpt2`` or ``llama``, or a ModelError naming what the tokenizer is."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelError(
            f"GGUF export supports BPE tokenizers (byte-level as in SmolLM, Llama 3, Qwen; or "
            f"SentencePiece-style as in Mistral, Gemma); the tokenizer of "
            f"{tokenizer.name_or_path!r} is {model.get('type')!r}"
        )
    kinds = [s.get("type") for s in _steps(spec.get("pre_tokenizer"), "pretokenizers")]
    kinds += [s.get("type") for s in _steps(spec.get("decoder"), "decoders")]
    if "ByteLevel" in kinds:
        return "gpt2"
    if model.get("byte_fallback"):
        return "llama"
    raise ModelError(
        f"GGUF export: the BPE tokenizer of {tokenizer.name_or_path!r} is neither byte-level "
        "(no ByteLevel step) nor SentencePiece-style (no byte_fallback); llama.cpp reads neither"
    )


def _adds_space_prefix(spec: dict) -> bool:
    """True when the tokenizer prepends ``▁`` to the text (Llama 2, Mistral; not Gemma)."""
    for step in _steps(spec.get("normalizer"), "normalizers"):
        if step.get("type") == "Prepend":
            return True
    for step in _steps(spec.get("pre_tokenizer"), "pretokenizers"):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") != "never"
    return False


def _merge_strings(model: dict) -> list[str]:
    return [" ".join(m) if isinstance(m, list) else m for m in model.get("merges", [])]


def _merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """Minus the rank of the merge producing each token; 0 for tokens no merge makes."""
    rank: dict[str, int] = {}
    for index, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", ""), index)
    return [-float(rank[t]) if t in rank else 0.0 for t in tokens]


def probe_adds(tokenizer) -> tuple[bool, bool]:
    """Whether encoding a text adds (BOS at the start, EOS at the end)."""
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return (bool(ids) and bos is not None and ids[0] == bos), (
        len(ids) > 1 and eos is not None and ids[-1] == eos
    )


def read_vocabulary(tokenizer, rows: int) -> GgufVocabulary:
    """Read the vocabulary llama.cpp needs from a fast tokenizer.

    Args:
        tokenizer: a transformers fast tokenizer (``tokenizer.json``).
        rows: the model's embedding rows (``config.vocab_size``); the token list is padded to it.

    Raises:
        ModelError: the tokenizer is of a kind llama.cpp cannot read, its pre-tokenizer is
            unknown, or it has more tokens than the model has embedding rows.
    """
    import gguf

    spec = _tokenizer_json(tokenizer)
    kind = _tokenizer_model(spec, tokenizer)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= rows:
        raise ModelError(
            f"GGUF export: the tokenizer has token id {max(by_id)} but the model only "
            f"{rows} embedding rows; resize the embeddings to the tokenizer before exporting"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(rows):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if index in added:
            special = added[index].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif kind == "llama" and _BYTE_TOKEN.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        elif kind == "llama" and index == tokenizer.unk_token_id:
            types.append(gguf.TokenType.UNKNOWN)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = _merge_strings(spec["model"])
    special_ids = {
        role: int(value)
        for role, value in (
            ("bos", tokenizer.bos_token_id),
            ("eos", tokenizer.eos_token_id),
            ("pad", tokenizer.pad_token_id),
            ("unk", tokenizer.unk_token_id),
        )
        if value is not None
    }
    add_bos, add_eos = probe_adds(tokenizer)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return GgufVocabulary(
        model=kind,
        tokens=tokens,
        types=[int(t) for t in types],
        merges=merges if kind == "gpt2" else [],
        scores=_merge_scores(tokens, merges) if kind == "llama" else [],
        pre=identify_pretokenizer(tokenizer) if kind == "gpt2" else None,
        add_space_prefix=_adds_space_prefix(spec) if kind == "llama" else False,
        special_ids=special_ids,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=template,
    )


def add_vocabulary(writer, vocabulary: GgufVocabulary) -> None:
    """Write ``vocabulary`` into a ``gguf.GGUFWriter`` as ``tokenizer.ggml.*`` fields."""
    writer.add_tokenizer_model(vocabulary.model)
    if vocabulary.pre is not None:
        writer.add_tokenizer_pre(vocabulary.pre.name)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    if vocabulary.model == "gpt2":
        writer.add_token_merges(vocabulary.merges)
    else:
        writer.add_token_scores(vocabulary.scores)
        writer.add_add_space_prefix(vocabulary.add_space_prefix)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "pad": writer.add_pad_token_id,
        "unk": writer.add_unk_token_id,
    }
    for role, token_id in vocabulary.special_ids.items():
        adders[role](token_id)
    writer.add_add_bos_token(vocabulary.add_bos)
    writer.add_add_eos_token(vocabulary.add_eos)
    if vocabulary.chat_template:
        writer.add_chat_template(vocabulary.chat_template)
