"""compare's inputs: question splits, training pairs, the user's form task, and the checks that
fail in a second with ``file:line`` before any model loads."""

from __future__ import annotations

import json

import pytest

from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.compare import compare
from tuneforge.evaluate.compare_data import (
    pick_questions,
    qa_training_records,
    read_form_task,
    split_questions,
)
from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT
from tuneforge.rag import REFUSAL
from tuneforge.rag.qa_records import QARecord
from tuneforge.tasks import sourced_answers


def _records(answerable: int, unanswerable: int) -> list[QARecord]:
    return [
        QARecord(f"q{i}?", (f"a{i}",), ("d.md",), f"qa.jsonl:{i}") for i in range(answerable)
    ] + [QARecord(f"u{i}?", (), (), f"qa.jsonl:{100 + i}") for i in range(unanswerable)]


def test_split_holds_out_a_share_of_each_kind_and_never_overlaps():
    records = _records(20, 10)
    split = split_questions(records, 0.3, seed=0)
    held = [r for r in split.held_out]
    assert sum(r.answerable for r in held) == 6 and sum(not r.answerable for r in held) == 3
    assert len(split.trained) == 21
    assert {r.question for r in held}.isdisjoint({r.question for r in split.trained})
    assert split_questions(records, 0.3, seed=0) == split  # seeded
    assert split_questions(records, 0.3, seed=1) != split
    small = split_questions(_records(2, 1), 0.3)
    assert len(small.held_out) == 1 and len(small.trained) == 2  # one of each kind at least


def test_split_refuses_what_cannot_be_split():
    with pytest.raises(ConfigError, match=r"--holdout must be in \(0, 1\), got 1.0"):
        split_questions(_records(5, 0), 1.0)
    with pytest.raises(DataError, match="too few answerable"):
        split_questions(_records(1, 4), 0.3)


def test_pick_spreads_each_kind():
    records = _records(10, 4)
    picked = pick_questions(records, 5, 2)
    assert [r.question for r in picked] == ["q0?", "q2?", "q4?", "q6?", "q8?", "u0?", "u2?"]


def test_training_pairs_in_both_shapes():
    records = _records(1, 1)
    plain = qa_training_records(records)
    assert [p["messages"][-1]["content"] for p in plain] == ["a0.", REFUSAL]
    assert plain[0]["messages"][0]["content"] == QA_SYSTEM_PROMPT
    both = qa_training_records(records, sourced_answers.SYSTEM_PROMPT)
    assert len(both) == 4
    assert json.loads(both[1]["messages"][-1]["content"]) == {"answer": "a0", "source": None}
    assert json.loads(both[3]["messages"][-1]["content"]) == {"answer": REFUSAL, "source": None}


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _chat(user: str, reply: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
    )


def test_form_task_splits_and_checks_each_reference(tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    data = tmp_path / "task.jsonl"
    data.write_text("\n".join(_chat(f"number {i}", json.dumps({"n": i})) for i in range(10)))
    form = read_form_task(data, schema, holdout=0.3, seed=0, test_prompts=100)
    assert len(form.test) == 3 and len(form.train) == 7
    assert {item["expected"]["n"] for item in form.test}.isdisjoint(
        {json.loads(r["messages"][-1]["content"])["n"] for r in form.train}
    )
    assert form.examples[0].startswith("Request: number ") and form.schema == SCHEMA

    data.write_text(_chat("one", '{"n": 1}') + "\n" + _chat("two", '{"n": "two"}') + "\n")
    with pytest.raises(DataError, match=r"task.jsonl:2: the reference reply violates .*s.json: n"):
        read_form_task(data, schema, 0.3, 0, 10)
    data.write_text(_chat("one", '{"n": 1}') + "\n" + _chat("two", "two, in prose") + "\n")
    with pytest.raises(DataError, match="task.jsonl:2: a form-task record is a chat whose last"):
        read_form_task(data, schema, 0.3, 0, 10)
    schema.write_text('{"type": 12}')
    with pytest.raises(DataError, match="s.json: not a valid JSON schema"):
        read_form_task(data, schema, 0.3, 0, 10)


def test_compare_checks_its_options_and_files_before_loading_anything(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("tuneforge.models.load_model", no_model)
    monkeypatch.setattr("tuneforge.rag.load_embedder", no_model)
    docs = tmp_path / "docs"
    docs.mkdir()
    questions = tmp_path / "qa.jsonl"
    questions.write_text('{"question": "Why?", "answer": "because"}\n{"question": "How?"}\n')
    with pytest.raises(ConfigError, match="needs both --docs DIR and --questions FILE"):
        compare(tmp_path / "out", docs=docs)
    with pytest.raises(ConfigError, match="--train and --schema go together"):
        compare(tmp_path / "out", docs=docs, questions=questions, train=questions)
    with pytest.raises(DataError, match=r"qa.jsonl:2: missing field 'answer'"):
        compare(tmp_path / "out", docs=docs, questions=questions)
    with pytest.raises(ConfigError, match="--docs .*missing: no such file or folder"):
        compare(tmp_path / "out", docs=tmp_path / "missing", questions=questions)


def test_cli_compare_reports_a_bad_question_file_on_one_line(tmp_path, capsys):
    from tuneforge.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    questions = tmp_path / "qa.jsonl"
    questions.write_text('{"question": "Why?", "answer": "x", "sorce": "a.md"}\n')
    args = ["compare", "--out", str(tmp_path / "o"), "--docs", str(docs)]
    assert main([*args, "--questions", str(questions)]) == 2
    assert "qa.jsonl:1: unknown field 'sorce'" in capsys.readouterr().err
