"""Tiny random-weight models of each exported family, with tokenizers built offline.

Each family gets a tokenizer of the kind its real checkpoints ship: byte-level BPE with the
family's own pre-tokenizer (SmolLM's digit split, Llama 3's and Qwen2's split regexes) or a
SentencePiece-style BPE with byte fallback (Mistral, Gemma), trained in a second on a small
corpus, plus the family's chat template and special tokens. Weights are drawn with std 0.2 and
norms around 1 (Gemma's around 0, as it stores ``weight - 1``) so that every tensor, transform and
offset changes the logits: a missed one fails the comparison under llama.cpp.
"""

from __future__ import annotations

import torch

CORPUS = [
    "The capital of France is Paris. The capital of Norway is Oslo. What is the capital of Spain?",
    "Please return the order as JSON with the fields name, quantity and city: 2 lamps, 33 chairs.",
    "Write one sentence about the sea. The sea is wide, blue and 1234 metres deep in places.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>-_=+*/",
    "I've been told he's there, you're sure? We'll see; they'd like some tea.",
]

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == "
    "'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] "
    "+ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}"
    "{% endif %}"
)

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level_pre(kind: str):
    from tokenizers import Regex, pre_tokenizers

    if kind == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    regex = {"llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}[kind]
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def byte_level_tokenizer(kind: str, specials: list[str], template: str, **roles):
    """A byte-level BPE tokenizer whose pre-tokenizer is llama.cpp's ``kind``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = _byte_level_pre(kind)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 10, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **roles)
    tokenizer.chat_template = template
    return tokenizer


def sentencepiece_style_tokenizer(
    specials: list[str], template: str, add_space_prefix: bool, **roles
):
    """A Llama-2-style BPE: ``▁`` for spaces, byte fallback tokens ``<0x00>``..``<0xFF>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    steps = [normalizers.Prepend("▁")] if add_space_prefix else []
    normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False)
    trained.train_from_iterator(CORPUS * 10, trainer=trainer)
    learned = trained.get_vocab()
    merges = [tuple(m) for m in __import__("json").loads(trained.to_str())["model"]["merges"]]
    # Real SentencePiece vocabularies: special tokens, then the 256 byte tokens, then pieces.
    vocab = {token: index for index, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token, _ in sorted(learned.items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=specials[0])
    )
    core.normalizer = normalizer
    strip = [decoders.Strip(" ", 1, 0)] if add_space_prefix else []
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **roles)
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = template
    return tokenizer


CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_ROLES = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def family_tokenizer(family: str):
    """The offline tokenizer for ``family`` (llama, llama3, mistral, qwen2, qwen3, gemma2/3)."""
    if family == "llama":  # SmolLM
        return byte_level_tokenizer("smollm", CHATML_SPECIALS, CHATML, **CHATML_ROLES)
    if family in ("qwen2", "qwen3"):
        return byte_level_tokenizer("qwen2", CHATML_SPECIALS, CHATML, **CHATML_ROLES)
    if family == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>"]
        specials += ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        tokenizer = byte_level_tokenizer(
            "llama-bpe", specials, LLAMA3, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
        )
        tokenizer.pad_token = "<|end_of_text|>"
        return _with_bos_post_processor(tokenizer)
    if family == "mistral":
        return sentencepiece_style_tokenizer(
            ["<unk>", "<s>", "</s>"],
            MISTRAL,
            True,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
        )
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    return sentencepiece_style_tokenizer(
        specials,
        GEMMA,
        False,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


def _with_bos_post_processor(tokenizer):
    """Make ``tokenizer`` add its BOS on encode (Llama 3, Mistral and Gemma do)."""
    from tokenizers import processors

    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tokenizer.bos_token_id)],
    )
    return tokenizer


def family_config(family: str, tokenizer):
    """A tiny transformers config of ``family`` (width 64: whole quantization blocks)."""
    import transformers

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=True)
    if family == "llama3":
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,  # small, so the factors act on tiny prompts
        }
        return transformers.LlamaConfig(**common, tie_word_embeddings=False, rope_parameters=rope)
    if family == "mistral":
        return transformers.MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
    if family == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=True)
    if family == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=32, tie_word_embeddings=True)
    if family == "gemma2":
        return transformers.Gemma2Config(
            **common, head_dim=16, query_pre_attn_scalar=16, sliding_window=64
        )
    return transformers.Gemma3TextConfig(
        **common, head_dim=16, query_pre_attn_scalar=16, sliding_window=64
    )


FAMILIES = ("llama", "llama3", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")


def family_model(family: str, seed: int = 0):
    """``(model, tokenizer)``: a tiny random ``family`` model whose every weight matters."""
    from transformers import AutoModelForCausalLM

    tokenizer = family_tokenizer(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, tokenizer)).eval()
    generator = torch.Generator().manual_seed(seed)
    gemma = family.startswith("gemma")
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("norm.weight"):
                param.copy_((0.0 if gemma else 1.0) + 0.2 * noise)
            else:
                param.copy_(0.2 * noise)
    return model, tokenizer
