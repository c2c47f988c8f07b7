"""Batches: packed rows attend only within an example; padded rows; determinism; counts."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from tiny import build_llama
from tuneforge.data import (
    DataConfig,
    TokenizedExample,
    count_real_tokens,
    ensure_pad_token,
    make_batches,
    pack_rows,
    prepare_data,
)


@pytest.fixture(scope="module")
def examples(tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    replies = ["Paris.", "Oslo is the capital of Norway.", "Hello!", '{"city": "Oslo"}', "Yes."]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}: " + "please " * (i % 4)},
                {"role": "assistant", "content": reply},
            ]
        }
        for i, reply in enumerate(replies * 4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return prepare_data(DataConfig(path=str(path), keep_duplicates=True), tiny_tokenizer).train


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return build_llama(tiny_tokenizer).float().eval()


def test_packed_logits_equal_logits_alone(examples, model, tiny_tokenizer):
    """Each example inside a packed row sees only itself: same logits as when run alone."""
    pad = tiny_tokenizer.pad_token_id
    batches = make_batches(examples, batch_size=2, max_length=96, packing=True, pad_token_id=pad)
    assert all("attention_mask" not in batch for batch in batches)
    checked = 0
    with torch.no_grad():
        for batch in batches:
            logits = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
            for row in range(batch["input_ids"].shape[0]):
                positions = batch["position_ids"][row].tolist()
                starts = [t for t, p in enumerate(positions) if p == 0] + [len(positions)]
                for start, end in itertools.pairwise(starts):
                    ids = batch["input_ids"][row, start:end]
                    if (batch["labels"][row, start:end] == -100).all():
                        continue  # tail padding segment
                    alone = model(input_ids=ids[None], use_cache=False).logits[0]
                    diff = (logits[row, start:end] - alone).abs().max().item()
                    assert diff <= 1e-4, f"row {row} segment at {start}: max diff {diff}"
                    checked += 1
    assert checked == len(examples)


def test_packed_rows_layout(examples, tiny_tokenizer):
    batches = make_batches(examples, batch_size=4, max_length=96, packing=True, pad_token_id=0)
    total = sum(len(ex.input_ids) for ex in examples)
    assert sum(count_real_tokens(b) for b in batches) == total
    supervised = sum(sum(label != -100 for label in ex.labels) for ex in examples)
    assert sum(int((b["labels"] != -100).sum()) for b in batches) == supervised
    for batch in batches:
        assert batch["input_ids"].shape[1] == 96
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
        assert set(batch) == {"input_ids", "labels", "position_ids"}


def test_padded_batches_mask_padding_and_group_lengths(examples, model, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    batches = make_batches(examples, batch_size=4, max_length=96, packing=False, pad_token_id=pad)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(examples)
    assert sum(count_real_tokens(b) for b in batches) == sum(len(e.input_ids) for e in examples)
    batch = batches[0]
    mask = batch["attention_mask"]
    assert (batch["labels"][mask == 0] == -100).all()
    assert batch["input_ids"].shape[1] == int(mask.sum(1).max())  # padded to the longest row
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits
        for row in range(mask.shape[0]):
            real = int(mask[row].sum())
            alone = model(input_ids=batch["input_ids"][row : row + 1, :real]).logits[0]
            assert (logits[row, :real] - alone).abs().max().item() <= 1e-4
    # Grouping by length: the padding is less than in random batches of the same data.
    padding = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    lengths = [len(e.input_ids) for e in examples]
    random_padding = sum(
        max(lengths[i : i + 4]) * len(lengths[i : i + 4]) - sum(lengths[i : i + 4])
        for i in range(0, len(lengths), 4)
    )
    assert padding < random_padding


def test_a_width_multiple_pads_to_it_below_max_length_and_counts_the_same(examples, tiny_tokenizer):
    pad = tiny_tokenizer.pad_token_id
    longest = max(len(e.input_ids) for e in examples)
    common = dict(batch_size=4, packing=False, pad_token_id=pad, seed=3)
    exact = make_batches(examples, max_length=96, **common)
    rounded = make_batches(examples, max_length=96, width_multiple=16, **common)
    assert len({b["input_ids"].shape[1] for b in exact}) > 1
    for plain, wide in zip(exact, rounded, strict=True):
        width = plain["input_ids"].shape[1]
        assert wide["input_ids"].shape[1] == min(96, -(-width // 16) * 16)
        assert count_real_tokens(wide) == count_real_tokens(plain)
        assert torch.equal(wide["input_ids"][:, :width], plain["input_ids"])
        assert (wide["labels"][:, width:] == -100).all()
        assert (wide["attention_mask"][:, width:] == 0).all()
    # never past max_length: a multiple above the longest row gives max_length
    capped = make_batches(examples, max_length=longest, width_multiple=1024, **common)
    assert {b["input_ids"].shape[1] for b in capped} == {longest}


@pytest.mark.parametrize("packing", [True, False])
def test_batches_are_deterministic_per_seed_and_epoch(examples, packing):
    def ids(seed, epoch):
        batches = make_batches(
            examples, batch_size=3, max_length=96, packing=packing, pad_token_id=0,
            seed=seed, epoch=epoch,
        )  # fmt: skip
        return [b["input_ids"].tolist() for b in batches]

    assert ids(0, 0) == ids(0, 0)
    assert ids(0, 0) != ids(0, 1) and ids(0, 0) != ids(1, 0)


def test_eos_keeps_its_loss_when_pad_equals_eos(tiny_tokenizer):
    """Padding is masked by position, so a pad id equal to EOS never hides the EOS label."""
    eos = tiny_tokenizer.eos_token_id
    example = TokenizedExample(input_ids=[5, 6, eos], labels=[-100, 6, eos])
    short = TokenizedExample(input_ids=[7, eos], labels=[-100, eos])
    for packing in (True, False):
        batches = make_batches(
            [example, short], batch_size=2, max_length=8, packing=packing, pad_token_id=eos,
            shuffle=False,
        )  # fmt: skip
        labels = torch.cat([b["labels"].flatten() for b in batches])
        assert int((labels == eos).sum()) == 2
        assert sum(count_real_tokens(b) for b in batches) == 5


def test_long_examples_are_cut_to_max_length():
    example = TokenizedExample(input_ids=list(range(10)), labels=list(range(10)))
    (batch,) = make_batches([example], batch_size=1, max_length=4, packing=False, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[0, 1, 2, 3]]


def test_pack_rows_best_fit():
    rows = pack_rows([6, 5, 4, 3, 2], max_length=10, order=[0, 1, 2, 3, 4])
    assert sorted(sorted(row) for row in rows) == [[0, 2], [1, 3, 4]]


def test_ensure_pad_token_prefers_a_token_other_than_eos(tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = None
    assert ensure_pad_token(tokenizer) == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_batch_keeps_its_count_when_moved():
    example = TokenizedExample(input_ids=[1, 2, 3], labels=[1, 2, 3])
    (batch,) = make_batches([example], batch_size=1, max_length=8, packing=True, pad_token_id=0)
    assert count_real_tokens(batch.to("cpu")) == 3
    with pytest.raises(TypeError, match="make_batches"):
        count_real_tokens(dict(batch))
