"""Reading and validating inputs: file types, file:line errors, skipping, duplicates, split."""

from __future__ import annotations

import json

import pytest

from tuneforge.data import DataConfig, prepare_data
from tuneforge.data.prepare import DataReport, load_examples
from tuneforge.errors import ConfigError, DataError


def chat(user: str, reply: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    }


GOOD = json.dumps(chat("hi", "hello"))

# (file content, line at fault, words the message must contain)
INVALID_LINES = {
    "invalid JSON": (b'{"messages": [\n', "invalid JSON"),
    "missing field": (json.dumps({"conversation": []}).encode(), "missing field 'messages'"),
    "wrong role order": (
        json.dumps(
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}
        ).encode(),
        "wrong role order",
    ),
    "ends with user": (
        json.dumps({"messages": [{"role": "user", "content": "a"}]}).encode(),
        "must end with an assistant turn",
    ),
    "empty assistant turn": (json.dumps(chat("hi", "  ")).encode(), "empty assistant turn"),
    "unknown role": (
        json.dumps({"messages": [{"role": "robot", "content": "a"}]}).encode(),
        "unknown role",
    ),
    "invalid UTF-8": (b'{"messages": "\xff\xfe"}', "invalid UTF-8"),
    "not an object": (b"[1, 2]", "expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(INVALID_LINES))
def test_invalid_line_names_file_line_and_problem(case, tmp_path):
    bad, words = INVALID_LINES[case]
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\n" + bad + b"\n" + GOOD.replace("hi", "yo").encode())
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(path=str(path)), DataReport())
    assert f"{path}:3: " in str(err.value) and words in str(err.value)
    assert "--skip-invalid" in str(err.value)

    report = DataReport()
    examples = load_examples(DataConfig(path=str(path), skip_invalid=True), report)
    assert len(examples) == 2 and report.invalid_skipped == 1 and report.rows_read == 3
    assert report.invalid_samples[0].startswith(f"{path}:3: ")


def test_missing_field_in_a_forced_format(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:1: missing field 'output' \(format alpaca\)"):
        load_examples(DataConfig(path=str(path), format="alpaca"), DataReport())


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        load_examples(DataConfig(path=str(empty)), DataReport())
    with pytest.raises(DataError, match="no such file or folder"):
        load_examples(DataConfig(path=str(tmp_path / "nope.jsonl")), DataReport())
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="holds no data files"):
        load_examples(DataConfig(path=str(tmp_path / "folder")), DataReport())


def test_all_invalid_with_skip_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match="no valid examples"):
        load_examples(DataConfig(path=str(path), skip_invalid=True), DataReport())


def test_duplicates_removed_and_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([GOOD, GOOD, json.dumps(chat("a", "b")), GOOD]), encoding="utf-8")
    report = DataReport()
    assert len(load_examples(DataConfig(path=str(path)), report)) == 2
    assert report.duplicates_removed == 2
    assert len(load_examples(DataConfig(path=str(path), keep_duplicates=True), DataReport())) == 4


def test_split_is_deterministic_by_seed(tiny_tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(json.dumps(chat(f"q{i}", f"a{i}")) for i in range(50)), encoding="utf-8"
    )

    def split(seed):
        prepared = prepare_data(
            DataConfig(path=str(path), val_fraction=0.2, seed=seed), tiny_tokenizer
        )
        return [ex.input_ids for ex in prepared.train], [ex.input_ids for ex in prepared.val]

    first, again, other = split(0), split(0), split(1)
    assert first == again and first != other
    assert len(first[0]) == 40 and len(first[1]) == 10
    assert not {tuple(x) for x in first[0]} & {tuple(x) for x in first[1]}


def test_json_csv_parquet_and_folder_inputs(tmp_path):
    import pandas as pd

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.json").write_text(
        json.dumps([{"instruction": "Add", "input": "1 and 2", "output": "3"}], indent=2),
        encoding="utf-8",
    )
    pd.DataFrame({"prompt": ["p1", "p2"], "completion": ["c1", "c2"]}).to_csv(
        folder / "b.csv", index=False
    )
    pd.DataFrame({"messages": [chat("x", "y")["messages"]]}).to_parquet(folder / "c.parquet")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    report = DataReport()
    examples = load_examples(DataConfig(path=str(folder)), report)
    assert report.format == "alpaca+prompt_completion+messages"
    assert [ex.messages[-1][1] for ex in examples] == ["3", "c1", "c2", "y"]
    assert examples[0].messages[0][1] == "Add\n\n1 and 2"
    assert examples[1].source.endswith("b.csv:2") and examples[3].source.endswith("c.parquet:row 1")


def test_a_folder_is_read_without_its_hidden_folders_and_hashed_as_read(tmp_path):
    """A notebook's .ipynb_checkpoints copy (or a .git folder) inside a data folder is neither
    read (the examples would count twice) nor part of the hash a resume checks."""
    from tuneforge.train.resume import data_sha256

    folder = tmp_path / "data"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "sub").mkdir()
    line = json.dumps(chat("q", "a")) + "\n"
    (folder / "train.jsonl").write_text(line, encoding="utf-8")
    (folder / "sub" / "more.jsonl").write_text(line, encoding="utf-8")
    (folder / ".ipynb_checkpoints" / "train-checkpoint.jsonl").write_text(line, encoding="utf-8")
    before = data_sha256(str(folder))
    examples = load_examples(DataConfig(path=str(folder), keep_duplicates=True), DataReport())
    assert [ex.source.rsplit("/", 1)[-1] for ex in examples] == ["more.jsonl:1", "train.jsonl:1"]
    (folder / ".ipynb_checkpoints" / "train-checkpoint.jsonl").write_text(line * 2, "utf-8")
    assert data_sha256(str(folder)) == before
    (folder / "sub" / "more.jsonl").write_text(line * 2, encoding="utf-8")
    assert data_sha256(str(folder)) != before


def test_json_array_errors_name_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([chat("a", "b"), {"messages": [{"role": "user", "content": "x"}]}], indent=2),
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"d\.json:14: wrong role order"):
        load_examples(DataConfig(path=str(path)), DataReport())
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'[\n{"text": "ok"},\n{"text": "\xff"}\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: invalid UTF-8"):
        load_examples(DataConfig(path=str(bad)), DataReport())


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    # The hub libraries read HF_HUB_OFFLINE when first imported; set it where they look now.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="hub data set cannot be loaded"):
        load_examples(DataConfig(path="nobody/no-such-dataset"), DataReport())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "xml"),
        ("max_length", 1),
        ("max_length", "256"),
        ("truncation", "wrap"),
        ("val_fraction", 1.0),
        ("text_field", " "),
        ("skip_invalid", "yes"),
        ("seed", -1),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"data.{field} .*; got {value!r}"):
        DataConfig(path="x.jsonl", **{field: value})


def test_reading_needs_a_path_but_the_config_does_not(tmp_path):
    config = DataConfig(max_length=2)  # enough to plan memory
    with pytest.raises(ConfigError, match="no data given .*pass --data FILE"):
        load_examples(config, DataReport())


def test_a_template_that_refuses_a_conversation_names_the_record(tiny_tokenizer, tmp_path):
    import copy

    template = tmp_path / "no_system.jinja"
    template.write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        encoding="utf-8",
    )
    with_system = {"messages": [{"role": "system", "content": "s"}, *chat("q", "a")["messages"]]}
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD + "\n" + json.dumps(with_system) + "\n", encoding="utf-8")
    config = DataConfig(path=str(path), template_file=str(template))
    with pytest.raises(DataError, match=r"d\.jsonl:2: the chat template refuses .*System role"):
        prepare_data(config, copy.deepcopy(tiny_tokenizer))
    config = DataConfig(path=str(path), template_file=str(template), skip_invalid=True)
    prepared = prepare_data(config, copy.deepcopy(tiny_tokenizer))
    assert len(prepared.train) == 1 and prepared.report.invalid_skipped == 1
