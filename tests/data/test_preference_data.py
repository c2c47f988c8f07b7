"""Preference pairs: both TRL shapes, file:line errors, masks on the completions only, the
truncation rule, prefix-shared batch rows and ``data inspect``."""

from __future__ import annotations

import json

import pytest

from tuneforge.cli import main
from tuneforge.data import DataConfig, make_pair_batches, prepare_data
from tuneforge.data.preference import CHOSEN, PADDING, PROMPT, REJECTED
from tuneforge.data.prepare import DataReport, load_examples
from tuneforge.data.tokenization import IGNORE_INDEX
from tuneforge.errors import DataError

SYSTEM = {"role": "system", "content": "Reply in one word."}


def conversational(question: str, good: str, bad: str) -> dict:
    return {
        "prompt": [SYSTEM, {"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}],
    }


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def decoded(tokenizer, ids, labels) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])


def test_conventional_and_conversational_records_render_with_the_chat_template(
    tmp_path, tiny_tokenizer
):
    path = write(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
            conversational("Capital of Norway?", "Oslo", "Bergen, I think"),
        ],
    )
    prepared = prepare_data(DataConfig(path=path), tiny_tokenizer, kind="preference")
    assert prepared.kind == "preference" and prepared.report.format == "preference"
    first, second = prepared.train
    prompt = tiny_tokenizer.decode(first.prompt_ids)
    assert prompt == "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(second.prompt_ids).startswith("<|im_start|>system\nReply in")
    # Only the replies (and their end-of-turn token) carry loss, in both completions.
    assert decoded(tiny_tokenizer, first.chosen_ids, first.chosen_labels) == "Paris<|im_end|>"
    assert decoded(tiny_tokenizer, first.rejected_ids, first.rejected_labels) == "Lyon<|im_end|>"
    assert (
        decoded(tiny_tokenizer, second.rejected_ids, second.rejected_labels)
        == "Bergen, I think<|im_end|>"
    )


def test_the_prompt_carries_no_loss_and_batch_targets_are_each_conversations_labels(
    tmp_path, tiny_tokenizer
):
    records = [conversational(f"Question {i}?", f"yes {i}", f"no {'no ' * i}") for i in range(5)]
    prepared = prepare_data(DataConfig(path=write(tmp_path / "p.jsonl", records)), tiny_tokenizer)
    (batch,) = make_pair_batches(prepared.train, batch_size=5, pad_token_id=0, shuffle=False)
    for row, index in enumerate(batch["pair_index"].tolist()):
        pair = prepared.train[index]
        prompt = len(pair.prompt_ids)
        branches = batch["branch_ids"][row].tolist()
        assert branches[:prompt] == [PROMPT] * prompt
        for branch, name, ids, labels in (
            (CHOSEN, "chosen_targets", pair.chosen_ids, pair.chosen_labels),
            (REJECTED, "rejected_targets", pair.rejected_ids, pair.rejected_labels),
        ):
            # The conversation as one sequence, and its next-token targets (labels shifted).
            sequence = pair.prompt_ids + ids
            expected = ([IGNORE_INDEX] * prompt + labels)[1:]
            targets = batch[name][row]
            where = [t for t, value in enumerate(targets.tolist()) if value != IGNORE_INDEX]
            assert sorted(targets[where].tolist()) == sorted(v for v in expected if v != -100)
            # No target sits on a prompt token but the last one (it predicts the first reply
            # token); none on the other completion or on padding.
            assert all(t >= prompt - 1 for t in where)
            assert all(branches[t] in (PROMPT, branch) for t in where)
            assert batch["input_ids"][row, branches.index(branch)].item() == sequence[prompt]
        assert branches.count(PADDING) == batch["input_ids"].shape[1] - pair.row_length
    assert batch.real_tokens == sum(p.sequence_tokens for p in prepared.train)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "q", "chosen": "a"}, "missing field 'rejected' (format preference)"),
        ({"chosen": "a", "rejected": "b"}, "missing field 'prompt' (format preference)"),
        ({"prompt": "q", "chosen": "a", "rejected": None}, "missing field 'rejected'"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical"),
        ({"prompt": "q", "chosen": " ", "rejected": "b"}, "field 'chosen' is empty"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "field 'prompt' must be a string or"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "chosen": "a",
                "rejected": "b",
            },
            "'prompt' ends with a 'assistant' turn",
        ),
        (
            {"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "field 'chosen' starts with a 'user' turn",
        ),
        (
            {"prompt": "q", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"},
            "field 'chosen': turn 1 has unknown role 'robot'",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, "missing field 'chosen'"),
    ],
)
def test_a_bad_pair_is_a_file_line_error(tmp_path, record, message):
    good = {"prompt": "q0", "chosen": "a", "rejected": "b"}
    path = write(tmp_path / "bad.jsonl", [good, good | {"prompt": "q1"}, record])
    with pytest.raises(DataError) as caught:
        load_examples(DataConfig(path=path), DataReport(), kind="preference")
    assert f"{path}:3: " in str(caught.value) and message in str(caught.value)


def test_pairs_for_supervised_training_and_chats_for_preference_training_are_refused(tmp_path):
    pairs = write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"pairs\.jsonl:1: a preference record .*--objective dpo"):
        load_examples(DataConfig(path=pairs), DataReport(), kind="supervised")
    chats = write(
        tmp_path / "chats.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    with pytest.raises(DataError, match=r"chats\.jsonl:1: a 'messages' record, but preference"):
        load_examples(DataConfig(path=chats), DataReport(), kind="preference")


def test_skip_invalid_counts_bad_pairs(tmp_path, tiny_tokenizer):
    records = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "x", "rejected": "x"},
        {"prompt": "q3", "chosen": "c", "rejected": "d"},
    ]
    config = DataConfig(path=write(tmp_path / "p.jsonl", records), skip_invalid=True)
    report = prepare_data(config, tiny_tokenizer).report
    assert (report.train_examples, report.invalid_skipped) == (2, 1)
    assert "p.jsonl:2: 'chosen' and 'rejected' are identical" in report.summary()


def _lengths(tokenizer, path):
    (pair,) = prepare_data(DataConfig(path=path, max_length=4096), tokenizer).train
    return len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)


def test_truncation_cuts_both_completions_to_one_budget_and_never_the_prompt(
    tmp_path, tiny_tokenizer
):
    path = write(
        tmp_path / "long.jsonl",
        [{"prompt": "Say it.", "chosen": "yes " * 20, "rejected": "No."}],
    )
    prompt, chosen, rejected = _lengths(tiny_tokenizer, path)
    budget = rejected + 2
    assert chosen > budget
    max_length = prompt + budget
    prepared = prepare_data(DataConfig(path=path, max_length=max_length), tiny_tokenizer)
    (pair,) = prepared.train
    assert len(pair.prompt_ids) == prompt  # the prompt is whole
    assert (len(pair.chosen_ids), len(pair.rejected_ids)) == (budget, rejected)
    counts = prepared.report.pairs
    assert (counts.truncated, counts.chosen_cut, counts.rejected_cut) == (1, 1, 0)
    assert "1 pairs cut (both completions to max_length minus the prompt; chosen cut in 1, " in (
        prepared.report.summary()
    )
    # drop: the pair goes, counted; a prompt that fills max_length is never cut, always dropped.
    with pytest.raises(DataError, match="no trainable pairs left") as dropped:
        prepare_data(
            DataConfig(path=path, max_length=max_length, truncation="drop"), tiny_tokenizer
        )
    assert "0 pairs cut, 1 dropped" in str(dropped.value)
    with pytest.raises(DataError, match="no trainable pairs left") as no_room:
        prepare_data(DataConfig(path=path, max_length=prompt), tiny_tokenizer)
    assert "prompt alone fills max_length (a prompt is never cut): 1 dropped" in str(no_room.value)


def test_train_on_inputs_is_refused_for_pairs(tmp_path, tiny_tokenizer):
    path = write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="train_on_inputs"):
        prepare_data(DataConfig(path=path, train_on_inputs=True), tiny_tokenizer)


def test_data_inspect_shows_a_pair_with_its_supervised_spans(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "pairs.jsonl", [conversational("Capital of Norway?", "Oslo", "Rome")])
    assert main(["data", "inspect", path, "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "pairs: 1 train, 0 validation" in out
    assert "the prompt carries no loss in either completion" in out
    assert "prompt:\n<|im_start|>system\nReply in one word.<|im_end|>\n" in out
    assert "chosen:\n⟦Oslo<|im_end|>⟧" in out and "rejected:\n⟦Rome<|im_end|>⟧" in out
    assert "packing into rows" not in out


def test_data_validate_reports_the_bad_pair_at_its_line(tmp_path, capsys):
    path = write(
        tmp_path / "pairs.jsonl",
        [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}],
    )
    write(tmp_path / "ok.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert main(["data", "validate", str(tmp_path / "ok.jsonl")]) == 0
    assert "1 valid pairs (format preference)" in capsys.readouterr().out
    assert main(["data", "validate", path]) == 2
    assert f"{path}:2: missing field 'rejected'" in capsys.readouterr().err
