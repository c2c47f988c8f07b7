"""The fast forward's own numerical pieces against transformers' (bit for bit, fp32 and bf16),
and the per-forward state ``SlotCache.place`` computes once for every layer."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from tuneforge.generation.llama_forward import rms_norm, rotary_tables, rotate
from tuneforge.generation.slot_cache import SlotCache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_the_families_rmsnorm_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, generator=generator))
    norm = norm.to(dtype)
    x = (torch.randn(3, 5, 48, generator=generator) * 7).to(dtype)

    ours = rms_norm(x, norm.weight, norm.variance_epsilon)

    assert ours.dtype == dtype
    assert torch.equal(ours, norm(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotate_is_apply_rotary_pos_emb_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(1)
    rows, length, heads, head_dim = 2, 3, 4, 16
    q = torch.randn(rows, length, heads, head_dim, generator=generator).to(dtype)
    k = torch.randn(rows, length, 2, head_dim, generator=generator).to(dtype)
    angles = torch.randn(rows, length, head_dim // 2, generator=generator)
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)

    expected_q, expected_k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    table_cos, table_sin = rotary_tables(cos, sin)
    # q and k rotated together, as the forward does with the fused q/k/v output
    both = rotate(torch.cat((q, k), dim=2), table_cos, table_sin)

    assert torch.equal(both[:, :, :heads].transpose(1, 2), expected_q)
    assert torch.equal(both[:, :, heads:].transpose(1, 2), expected_k)


def test_place_writes_each_rows_keys_at_its_own_positions():
    cache = SlotCache(layers=2, kv_heads=2, head_dim=3, dtype=torch.float32, device="cpu")
    cache.place(0, [[0, 1], [0, 1]])
    first = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).view(2, 2, 2, 3)  # [n, kv, q, hd]
    keys, values = cache.update(first, -first, 1)
    assert torch.equal(keys, first) and torch.equal(values, -first)

    # slot 1 alone, one token at position 2 (a row that joined later, out of slot order)
    cache.place(1, [[2]])
    token = torch.full((1, 2, 1, 3), 9.0)
    keys, _ = cache.update(token, token, 1)
    assert keys.shape == (1, 2, 3, 3)
    assert torch.equal(keys[0, :, :2], first[1]) and torch.equal(keys[0, :, 2:], token[0])
    assert torch.equal(cache.keys[1][0, :, :2], first[0])  # slot 0 untouched
    assert torch.equal(cache.keys[0][1, :, 2], torch.zeros(2, 3))  # other layer untouched


def test_place_masks_only_what_some_token_must_not_see():
    cache = SlotCache(layers=1, kv_heads=1, head_dim=2, dtype=torch.float32, device="cpu")

    cache.place(0, [[4], [4]])  # one new token per row, every row as long: nothing hidden
    assert cache.attention_mask() is None
    assert cache.span == 5

    cache.place(0, [[4], [2]])  # the second row is shorter: it must not see columns 3 and 4
    mask = cache.attention_mask()
    assert mask.shape == (2, 1, 1, 5)
    assert mask[0].all() and mask[1, 0, 0].tolist() == [True, True, True, False, False]

    cache.place(0, [[0, 1, 2]])  # a prompt: causal
    assert cache.attention_mask()[0, 0].tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
