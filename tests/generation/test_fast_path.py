"""The fast path (``BatchDecoder`` + ``LlamaForward``) against the plain path (``model.generate``)
on tiny random models of every family it covers (fp32): same greedy tokens, alone, batched,
with rows joining a running batch, with shared prompt prefixes, past a cache block; the
models it refuses fall back to the plain path with the same answers."""

from __future__ import annotations

import pytest
import torch

from tiny import build_tokenizer
from tuneforge.generation import (
    GenerationSettings,
    Row,
    chat_messages,
    fast_path_blocker,
    generate_rows,
    new_batch_decoder,
    prompt_ids,
)
from tuneforge.generation.decoding import decode_all, generate_rows_plain
from tuneforge.generation.slot_cache import COLUMN_BLOCK

PROMPTS = [
    "The capital of France is",
    "Please return the order as JSON with the fields name, city",
    "Hello!",
    "Hi",
]
SYSTEM = "You are a helpful assistant. Answer in one short sentence, and cite sources [1] [2]."


def lively(model, seed: int):
    """Weights drawn with std 0.2 (at the default init a tiny model repeats one token, which
    would let mixed-up rows pass by accident)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 1 and param.numel() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def build(family: str, tokenizer, seed: int = 3, **extra):
    """A tiny random causal LM of ``family`` (2 layers, width 32, 4 heads, 2 kv heads)."""
    import transformers

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kinds = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
        "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    }
    config_name, model_name, specific = kinds[family]
    config = getattr(transformers, config_name)(**common, **{**specific, **extra})
    torch.manual_seed(seed)
    return lively(getattr(transformers, model_name)(config), seed)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2", "qwen3"])
def family_model(request, tokenizer):
    return build(request.param, tokenizer)


def rows_for(tokenizer, limits, system=None, prompts=PROMPTS) -> list[Row]:
    return [
        Row(
            prompt_ids(tokenizer, chat_messages(text, system)),
            GenerationSettings(max_new_tokens=limit),
        )
        for text, limit in zip(prompts, limits, strict=True)
    ]


def texts(replies) -> list[tuple[str, int, str]]:
    return [(r.text, r.completion_tokens, r.finish_reason) for r in replies]


def test_each_family_decodes_on_the_fast_path_as_model_generate(family_model, tokenizer):
    assert fast_path_blocker(family_model) is None
    rows = rows_for(tokenizer, [12, 5, 20, 9])
    fast = generate_rows(family_model, tokenizer, rows)
    plain = generate_rows_plain(family_model, tokenizer, rows)
    assert texts(fast) == texts(plain)
    assert len({r.text for r in fast}) == 4  # the rows really differ
    alone = [generate_rows(family_model, tokenizer, [row])[0] for row in rows]
    assert texts(alone) == texts(fast)


def test_rows_joining_a_running_batch_get_their_solo_tokens(tokenizer):
    model = build("llama", tokenizer)
    solo = [
        generate_rows_plain(model, tokenizer, [row])[0] for row in rows_for(tokenizer, [15] * 4)
    ]
    rows = rows_for(tokenizer, [15] * 4)
    decoder = new_batch_decoder(model, tokenizer)
    replies = {}
    for row, reply in decoder.join(model, rows[:1]):
        replies[id(row)] = reply
    for joining in ([rows[1], rows[2]], [rows[3]]):
        for _ in range(4):  # the earlier rows advance, then others join them
            for row, reply in decoder.step(model):
                replies[id(row)] = reply
        assert decoder.active >= 1
        for row, reply in decoder.join(model, joining):
            replies[id(row)] = reply
    while decoder.active:
        for row, reply in decoder.step(model):
            replies[id(row)] = reply
    assert texts([replies[id(row)] for row in rows]) == texts(solo)
    assert not decoder.cache.keys[0].requires_grad  # no autograd graph grows across steps


def test_a_joining_rows_logits_processor_runs_once_per_step_on_its_own_row(tokenizer):
    """The constrained-decoding contract on continuous batching: a row that joins a running
    batch has its ``logits_processor`` called before each of its tokens, with its own tokens
    so far and its own scores, and the rows around it keep their solo tokens."""
    model = build("llama", tokenizer)
    solo_rows = rows_for(tokenizer, [20, 8], prompts=[PROMPTS[0], PROMPTS[2]])
    solo = generate_rows_plain(model, tokenizer, solo_rows)
    forced = tokenizer(" Oslo, Norway", add_special_tokens=False)["input_ids"][:4]
    calls: list[tuple[list[int], int]] = []

    def force(new_ids: list[int], scores: torch.Tensor) -> torch.Tensor:
        calls.append((list(new_ids), scores.shape[-1]))
        allowed = torch.full_like(scores, float("-inf"))
        allowed[forced[len(new_ids) % len(forced)]] = 0.0
        return scores + allowed

    free, constrained, other = rows_for(tokenizer, [20, 8, 8], prompts=PROMPTS[:3])
    constrained.prompt_ids = free.prompt_ids[:-1] + constrained.prompt_ids[-1:]  # joins, shares
    constrained.logits_processor = force
    decoder = new_batch_decoder(model, tokenizer)
    replies = {}

    def keep(finished) -> None:
        replies.update((id(row), reply) for row, reply in finished)

    keep(decoder.join(model, [free]))
    for _ in range(3):
        keep(decoder.step(model))
    keep(decoder.join(model, [constrained, other]))
    while decoder.active:
        keep(decoder.step(model))
    assert replies[id(free)].text == solo[0].text  # untouched by its constrained neighbour
    assert replies[id(other)].text == solo[1].text
    # the constrained row copied its prompt but the last token from the free row's slot
    assert decoder.prompt_tokens_computed == len(free.prompt_ids) + 1 + len(other.prompt_ids)
    done = replies[id(constrained)]
    assert done.completion_tokens == 8
    expected = [(forced * 2)[:n] for n in range(8)]
    assert calls == [(ids, len(tokenizer)) for ids in expected]  # once per token, its own ids
    assert done.text == tokenizer.decode(forced * 2, skip_special_tokens=True)


def test_a_shared_system_prompt_is_computed_once_and_changes_nothing(tokenizer):
    model = build("qwen2", tokenizer)
    rows = rows_for(tokenizer, [10] * 4, system=SYSTEM)
    decoder = new_batch_decoder(model, tokenizer)
    batched = decode_all(decoder, model, rows)
    solo = [generate_rows_plain(model, tokenizer, [row])[0] for row in rows]
    assert texts(batched) == texts(solo)
    first = rows[0].prompt_ids
    shared = [_common(row.prompt_ids, first) for row in rows[1:]]
    assert min(shared) > len(prompt_ids(tokenizer, chat_messages("", SYSTEM))) // 2
    # the first row computes the system prompt; the three others copy it from its slot
    expected = len(first) + sum(
        len(row.prompt_ids) - n for row, n in zip(rows[1:], shared, strict=True)
    )
    assert decoder.prompt_tokens_computed == expected


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_rows_longer_than_a_cache_block_grow_the_cache(tokenizer):
    model = build("llama", tokenizer)
    rows = rows_for(tokenizer, [COLUMN_BLOCK + 40, 3], prompts=PROMPTS[:2])
    fast = generate_rows(model, tokenizer, rows)
    assert fast[0].completion_tokens == COLUMN_BLOCK + 40  # the tiny model never says EOS here
    assert texts(fast) == texts(generate_rows_plain(model, tokenizer, rows))


@pytest.mark.parametrize(
    ("family", "extra", "reason"),
    [
        ("mistral", {"sliding_window": 64}, "sliding-window"),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 0}, "sliding-window"),
    ],
)  # fmt: skip
def test_models_the_fast_path_refuses_use_the_plain_path(tokenizer, family, extra, reason):
    model = build(family, tokenizer, **extra)
    assert reason in fast_path_blocker(model)
    assert new_batch_decoder(model, tokenizer) is None
    rows = rows_for(tokenizer, [6, 6, 6, 6])
    assert texts(generate_rows(model, tokenizer, rows)) == texts(
        generate_rows_plain(model, tokenizer, rows)
    )


def test_a_generation_config_with_more_processors_uses_the_plain_path(tokenizer):
    model = build("llama", tokenizer)
    model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in fast_path_blocker(model)
    rows = rows_for(tokenizer, [8, 8, 8, 8])
    assert texts(generate_rows(model, tokenizer, rows)) == texts(
        generate_rows_plain(model, tokenizer, rows)
    )


def test_a_model_with_forward_hooks_uses_the_plain_path_which_runs_them(tokenizer):
    model = build("llama", tokenizer)
    steps = []
    hook = model.register_forward_pre_hook(lambda *_: steps.append(1))
    try:
        assert fast_path_blocker(model) == (
            "the model has forward hooks, which the fast path's own forward would not run"
        )
        rows = rows_for(tokenizer, [6, 6, 6, 6])
        replies = generate_rows(model, tokenizer, rows)
        assert len(steps) >= 6  # the hook saw every decoding step
    finally:
        hook.remove()
    assert fast_path_blocker(model) is None
    assert texts(replies) == texts(generate_rows(model, tokenizer, rows))
    layer_hook = model.model.layers[1].mlp.register_forward_hook(lambda *_: None)
    assert "model.layers.1.mlp has forward hooks" in fast_path_blocker(model)
    layer_hook.remove()


def test_other_families_use_the_plain_path(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256)
    model = GPT2LMHeadModel(config).eval()
    assert "gpt2" in fast_path_blocker(model)
    rows = rows_for(tokenizer, [5, 5, 5, 5])
    assert texts(generate_rows(model, tokenizer, rows)) == texts(
        generate_rows_plain(model, tokenizer, rows)
    )


def test_seeded_sampling_on_the_fast_path_repeats_and_ignores_its_batch(tokenizer):
    model = build("llama", tokenizer)
    seeded = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=11)
    row = Row(prompt_ids(tokenizer, chat_messages(PROMPTS[0])), seeded)
    first = generate_rows(model, tokenizer, [row])[0].text
    again = Row(row.prompt_ids, seeded)
    others = rows_for(tokenizer, [12, 12, 12], prompts=PROMPTS[1:])
    batched = generate_rows(model, tokenizer, [others[0], again, others[1], others[2]])
    assert batched[1].text == first
    assert generate_rows(model, tokenizer, [Row(row.prompt_ids, seeded)])[0].text == first
