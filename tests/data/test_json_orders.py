"""The bundled demo task: shipped data, generator determinism, and the schema check."""

from __future__ import annotations

from tuneforge.tasks import json_orders


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    json_orders.write_splits(tmp_path)
    for split in ("train", "test", "preference"):
        shipped = json_orders.asset_path(split).read_text(encoding="utf-8")
        assert (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8") == shipped


def test_sizes_shape_and_no_overlap():
    train, test = json_orders.load_records("train"), json_orders.load_records("test")
    assert len(train) >= 1000 and len(test) >= 200
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for record in train[:50] + test[:50]:
        valid, parsed, errors = json_orders.check(record["answer"])
        assert valid and not errors and parsed == record["expected"]
        assert record["system"] == json_orders.SYSTEM_PROMPT
    # Every enum value and both urgency values occur in training.
    for field in ("intent", "item", "urgent"):
        assert (
            len({r["expected"][field] for r in train})
            == {"intent": 4, "item": 8, "urgent": 2}[field]
        )


def test_check_rejects_what_a_chatty_model_writes():
    answer = '{"intent": "order", "item": "lamp", "quantity": 2, "city": "Oslo", "urgent": false}'
    assert json_orders.check(f"  {answer}\n")[0]
    cases = {
        f"Sure! {answer}": "not JSON",
        f"```json\n{answer}\n```": "not JSON",
        answer.replace('"order"', '"buy"'): "'buy' is not one of",
        answer.replace("2", '"2"'): "quantity: '2' is not of type 'integer'",
        answer.replace("false", '"no"'): "urgent",
        answer.replace("}", ', "note": "x"}'): "Additional properties",
        '{"intent": "order"}': "'item' is a required property",
        "[1, 2]": "is not of type 'object'",
    }
    for text, words in cases.items():
        valid, _, errors = json_orders.check(text)
        assert not valid and any(words in error for error in errors), (text, errors)


def test_preference_pairs_prefer_the_correct_reply_to_a_plausible_mistake():
    import json
    import random

    train = json_orders.load_records("train")
    lines = json_orders.asset_path("preference").read_text(encoding="utf-8").splitlines()
    pairs = [json.loads(line) for line in lines]
    assert len(pairs) == len(train)
    wrong_values = format_errors = 0
    for record, pair in zip(train, pairs, strict=True):
        assert [turn["role"] for turn in pair["prompt"]] == ["system", "user"]
        assert pair["prompt"][1]["content"] == record["prompt"]  # the training prompts
        (chosen,), (rejected,) = pair["chosen"], pair["rejected"]
        assert chosen == {"role": "assistant", "content": record["answer"]}
        valid, parsed, _ = json_orders.check(rejected["content"])
        if valid:  # a wrong value: schema-valid, but some field differs from the truth
            assert parsed != record["expected"]
            wrong_values += 1
        else:
            format_errors += 1
    assert 0.4 < wrong_values / len(pairs) < 0.6 and format_errors > 0
    # Every kind of mistake occurs, and each is what its name says.
    answer = train[0]["expected"]
    kinds = {}
    rng = random.Random(0)
    for _ in range(200):
        text, kind = json_orders.rejected_reply(rng, answer)
        kinds.setdefault(kind, text)
    assert set(kinds) == set(json_orders.REJECTION_KINDS)
    assert kinds["fence"].startswith("```json\n") and "note" in kinds["extra_field"]
    assert f'"quantity": "{answer["quantity"]}"' in kinds["quoted_number"]
    assert len(json.loads(kinds["missing_field"])) == len(json_orders.FIELDS) - 1


def test_demo_names_resolve_to_the_shipped_files_and_a_local_file_wins(tmp_path, monkeypatch):
    assert json_orders.resolve_demo_data("demo") == str(json_orders.asset_path("train"))
    assert json_orders.resolve_demo_data("demo:test") == str(json_orders.asset_path("test"))
    assert json_orders.resolve_demo_data("demo:preference") == str(
        json_orders.asset_path("preference")
    )
    assert json_orders.resolve_demo_data("mine.jsonl") == "mine.jsonl"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("{}\n")
    assert json_orders.resolve_demo_data("demo") == "demo"
