"""RAFT example building: the oracle/distractor mixing, targets, validation, and the prompt
being byte-identical to the one ``rag ask`` builds (the two cannot drift apart)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
from rag_samples import write_docs

from tuneforge.errors import ConfigError, DataError
from tuneforge.rag import REFUSAL, Hit, build_rag_messages, parse_citations
from tuneforge.rag.qa_records import QARecord, read_qa_records
from tuneforge.rag.raft import (
    JSON_ANSWER_SCHEMA,
    RaftSettings,
    build_raft_data,
    build_raft_examples,
    holds_answer,
)
from tuneforge.rag.vector_store import DocumentRecord

# -- a store stand-in: one chunk per document, a fixed ranking per question ---------------------


def _chunk(n: int, text: str, similarity: float = 0.8) -> Hit:
    return Hit(text, f"/docs/d{n}.md", "line 1", 1.0, f"d{n}:0", f"d{n}", f"Doc {n}", similarity)


class FakeStore:
    """Documents d0..d{count-1}; d{i} says ``item i costs {7i} units``.

    A question about item i retrieves d{i} first, then the others in order, unless ``hidden``
    names it (then d{i} is never retrieved by the question: the oracle must be put in).
    """

    def __init__(self, count: int = 12, hidden: tuple[int, ...] = (), similarity: float = 0.8):
        self.chunks = [
            _chunk(n, f"Item {n} costs {7 * n} units.", similarity) for n in range(count)
        ]
        self.hidden = hidden

    def documents(self) -> list[DocumentRecord]:
        return [DocumentRecord(c.doc_id, c.source, c.title, "hash", 1, "now") for c in self.chunks]

    def search(self, query, top_k=5, mode="hybrid", source_filter=None):
        if source_filter is not None:
            return [c for c in self.chunks if c.source == source_filter][:top_k]
        if mode == "bm25":  # the answer's words
            return [c for c in self.chunks if query in c.text][:top_k]
        number = int(query.split()[-1].rstrip("?")) if query.split()[-1][0].isdigit() else None
        ranked = sorted(self.chunks, key=lambda c: c.doc_id != f"d{number}")
        if number in self.hidden:
            ranked = [c for c in ranked if c.doc_id != f"d{number}"]
        return [replace(c) for c in ranked[:top_k]]


def record(n: int, answerable: bool = True, source: bool = True) -> QARecord:
    return QARecord(
        question=f"How much does item {n}?",
        answers=(f"{7 * n} units",) if answerable else (),
        sources=(f"d{n}.md",) if answerable and source else (),
        where=f"qa.jsonl:{n + 1}",
    )


ANSWERABLE = [record(n) for n in range(1, 11)]
UNANSWERABLE = [record(n, answerable=False) for n in (20, 21)]


def build(records, **settings):
    return build_raft_examples(records, FakeStore(count=22), RaftSettings(**settings))


# -- mixing: shares, refusals, citations, shuffling -------------------------------------------


def test_oracle_share_is_exact_and_every_kind_is_counted():
    examples, report = build(ANSWERABLE + UNANSWERABLE, oracle_share=0.8, examples_per_question=2)
    kinds = Counter(e.kind for e in examples)
    assert kinds == {"oracle_kept": 16, "oracle_removed": 4, "unanswerable": 4}
    assert (report.oracle_kept, report.oracle_removed, report.unanswerable) == (16, 4, 4)
    assert report.examples == 24 and report.questions == 12 and report.dropped == []
    assert report.oracle_retrieved == 20  # every oracle was in the retrieved top 3
    assert "oracle kept 16, oracle removed 4, unanswerable 4, dropped 0" in report.summary()


@pytest.mark.parametrize(("share", "kept"), [(0.0, 0), (0.5, 5), (1.0, 10)])
def test_other_shares(share, kept):
    examples, _ = build(ANSWERABLE, oracle_share=share)
    assert sum(e.kind == "oracle_kept" for e in examples) == kept


def test_kept_examples_cite_the_oracles_position_after_shuffling():
    examples, _ = build(ANSWERABLE, oracle_share=1.0, examples_per_question=3)
    positions = Counter()
    for example in examples:
        oracle_doc = example.where.split(":")[1]  # record n sits on line n + 1
        oracle = f"d{int(oracle_doc) - 1}:0"
        assert example.hits[example.citation - 1].chunk_id == oracle
        target = example.messages[-1]
        assert target["role"] == "assistant"
        assert target["content"].endswith(f" [{example.citation}]")
        assert parse_citations(target["content"]) == [example.citation]
        positions[example.citation] += 1
    # Retrieval always ranks the oracle first; after shuffling it sits anywhere.
    assert set(positions) == {1, 2, 3} and max(positions.values()) < len(examples)


def test_removed_and_unanswerable_examples_refuse_and_show_no_chunk_holding_the_answer():
    examples, _ = build(ANSWERABLE + UNANSWERABLE, oracle_share=0.5)
    refusals = [e for e in examples if e.kind != "oracle_kept"]
    assert len(refusals) == 7
    for example in refusals:
        assert example.messages[-1]["content"] == REFUSAL and example.citation is None
        assert len(example.hits) == 3  # distractors fill in for the removed oracle
    for example in (e for e in refusals if e.kind == "oracle_removed"):
        n = int(example.where.split(":")[1]) - 1
        assert not any(holds_answer(hit.text, (f"{7 * n} units",)) for hit in example.hits)


def test_shuffles_are_seeded():
    first, _ = build(ANSWERABLE, examples_per_question=2, seed=3)
    again, _ = build(ANSWERABLE, examples_per_question=2, seed=3)
    other, _ = build(ANSWERABLE, examples_per_question=2, seed=4)
    order = [[h.chunk_id for h in e.hits] for e in first]
    assert order == [[h.chunk_id for h in e.hits] for e in again]
    assert order != [[h.chunk_id for h in e.hits] for e in other]
    unshuffled, _ = build(ANSWERABLE, oracle_share=1.0, shuffle=False)
    assert all(e.citation == 1 for e in unshuffled)  # retrieval order kept


def test_a_missed_oracle_replaces_the_weakest_hit():
    store = FakeStore(count=12, hidden=(4,))
    examples, report = build_raft_examples(
        [record(4)], store, RaftSettings(oracle_share=1.0, shuffle=False)
    )
    (example,) = examples
    assert [h.chunk_id for h in example.hits] == ["d0:0", "d1:0", "d4:0"]
    assert example.messages[-1]["content"] == "28 units [3]"
    assert report.oracle_retrieved == 0


def test_without_a_source_the_oracle_is_a_chunk_stating_the_answer():
    examples, report = build([record(5, source=False)], oracle_share=1.0, shuffle=False)
    assert examples[0].hits[examples[0].citation - 1].chunk_id == "d5:0"
    lost = QARecord("How much does item 6?", ("999 units",), (), "qa.jsonl:9")
    examples, report = build([lost])
    assert examples == []
    assert report.dropped == [
        "qa.jsonl:9: no chunk states the answer '999 units'; name the file that holds it in "
        "'source'"
    ]


def test_nothing_relevant_is_dropped_like_inference_refuses_without_a_model():
    store = FakeStore(count=12, similarity=0.1)
    examples, report = build_raft_examples(ANSWERABLE[:2], store, RaftSettings())
    assert examples == [] and len(report.dropped) == 2
    assert "no hit reaches the relevance threshold 0.3" in report.dropped[0]


def test_json_targets_are_valid_and_carry_the_citation():
    from jsonschema import Draft202012Validator

    examples, _ = build(
        ANSWERABLE + UNANSWERABLE,
        target_format="json",
        client_system="Reply with JSON only.",
        oracle_share=0.7,
    )
    validator = Draft202012Validator(JSON_ANSWER_SCHEMA)
    for example in examples:
        value = json.loads(example.messages[-1]["content"])
        assert not list(validator.iter_errors(value))
        if example.kind == "oracle_kept":
            assert value["source"] == f"[{example.citation}]" and value["answer"].endswith("units")
        else:
            assert value == {"answer": REFUSAL, "source": None}
        # The client's system text follows the format's instruction, as at inference.
        assert example.messages[0]["content"].endswith("\n\nReply with JSON only.")


def test_prompt_is_build_rag_messages_of_the_shown_hits():
    examples, _ = build(ANSWERABLE)
    for example in examples:
        question = example.messages[-2]["content"].rsplit("Question: ", 1)[1]
        assert example.messages[:-1] == build_rag_messages(question, example.hits)


def test_settings_are_checked_where_they_are_set():
    with pytest.raises(ConfigError, match=r"raft.oracle_share must be in \[0, 1\]; got 1.5"):
        RaftSettings(oracle_share=1.5)
    with pytest.raises(ConfigError, match="raft.target_format must be one of cited, json"):
        RaftSettings(target_format="xml")
    with pytest.raises(ConfigError, match="raft.top_k must be an integer >= 1"):
        RaftSettings(top_k=0)
    with pytest.raises(ConfigError, match="prompt format 'chat' is unknown"):
        RaftSettings(prompt_format="chat")


def test_holds_answer_matches_on_word_boundaries():
    assert holds_answer("Delivery takes 6 business days.", ("6",)) == "6"
    assert holds_answer("Up to 16 stations.", ("6",)) is None
    assert holds_answer("A 4-year\nwarranty", ("4 years", "4-year")) == "4-year"
    assert holds_answer("It costs 1,480   Euros.", ("1,480 euros",)) == "1,480 euros"


# -- validation with file:line errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"answer": "x"}', "qa.jsonl:2: missing field 'question'"),
        ('{"question": "Why?"}', "qa.jsonl:2: missing field 'answer'"),
        ('{"question": "Why?", "anwser": "x"}', "qa.jsonl:2: unknown field 'anwser'"),
        ('{"question": "", "answer": "x"}', "qa.jsonl:2: field 'question' must be a non-empty"),
        ('{"question": "Why?", "answer": 5}', "qa.jsonl:2: field 'answer' must be a non-empty"),
        (
            '{"question": "Why?", "answer": null, "source": "a.md"}',
            "qa.jsonl:2: the answer is null",
        ),
        (
            '{"question": "Why?", "answer": "x", "answerable": false}',
            "qa.jsonl:2: field 'answerable' is False",
        ),
        ('{"question": "Why?", "answer": "x", "aliases": "y"}', "field 'aliases' must be a list"),
        ("[1, 2]", "qa.jsonl:2: expected a JSON object, got list"),
        ("{oops", "qa.jsonl:2: invalid JSON"),
        ('{"question": "how long?", "answer": "x"}', "qa.jsonl:2: the question is asked twice"),
    ],
)
def test_qa_records_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "How long?", "answer": "4 years", "source": "a.md"}\n' + line)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("?", r"\?")):
        read_qa_records(path)


def test_qa_records_read_answers_aliases_and_sources(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"question": " How long? ", "answer": "4 years", "aliases": ["4-year"], '
        '"source": "a.md", "sources": ["b.md", "a.md"], "id": 7}\n\n'
        '{"question": "Who?", "answer": null}\n'
    )
    first, second = read_qa_records(path)
    assert first == QARecord("How long?", ("4 years", "4-year"), ("a.md", "b.md"), f"{path}:1", "7")
    assert not second.answerable and second.where == f"{path}:3"
    assert second.eval_item() == {
        "id": f"{path}:3",
        "question": "Who?",
        "answer": None,
        "source": [],
        "answerable": False,
    }


def test_a_source_missing_from_the_store_fails_before_building():
    missing = replace(record(3), sources=("manual.md",))
    with pytest.raises(DataError, match=r"qa.jsonl:4: source 'manual.md' is not in the store"):
        build([record(1), missing])
    store = FakeStore(count=3)
    store.chunks.append(replace(store.chunks[1], source="/other/d1.md", doc_id="o1"))
    with pytest.raises(DataError, match=r"source 'd1.md' matches 2 documents"):
        build_raft_examples([record(1)], store, RaftSettings())


# -- on a real store: the files, and the prompt `rag ask` builds --------------------------------

DOCS = {
    "pump.md": "# Pump\n\nThe Orla pump costs 70 euros. It ships from the Vesk depot.",
    "depot.txt": "Depot\n\nThe Vesk depot opens at 06:45 and closes at 18:00.",
    "lamp.md": "# Lamp\n\nThe Lumen lamp has a warranty of 3 years.",
}
QUESTIONS = [
    {"question": "How much does the Orla pump cost?", "answer": "70 euros", "source": "pump.md"},
    {"question": "When does the Vesk depot open?", "answer": "06:45", "source": "depot.txt"},
    {"question": "How long is the Lumen lamp warranty?", "answer": "3 years"},
    {"question": "What colour is the Orla pump?", "answer": None},
]


@pytest.fixture
def store(make_store, tmp_path):
    store = make_store()
    store.ingest(write_docs(tmp_path / "docs", DOCS), progress=False)
    return store


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


@pytest.fixture
def asked(record_prompts) -> list[list[dict]]:
    """The messages ``rag ask`` gives the model (a stub records them)."""
    return record_prompts("70 euros [1]")


def _rag_ask(store, model_dir, question: str) -> None:
    from tuneforge.cli import main

    args = ["--store", str(store.folder), "--model", str(model_dir), "--top-k", "3"]
    assert main(["rag", "ask", *args, question]) == 0


def test_training_prompts_are_byte_identical_to_rag_ask(
    store, questions, asked, tiny_model_dir, monkeypatch
):
    records = read_qa_records(questions)
    # Unshuffled, oracle kept: the example's prompt is exactly what `rag ask` sends.
    plain, _ = build_raft_examples(
        records[:1], store, RaftSettings(oracle_share=1.0, shuffle=False)
    )
    _rag_ask(store, tiny_model_dir, records[0].question)
    assert json.dumps(asked[-1]) == json.dumps(plain[0].messages[:-1])
    assert plain[0].messages[-1]["content"] == "70 euros [1]"

    # Shuffled: given the hits in the example's order, `rag ask` sends the same bytes again.
    from tuneforge.rag import RagStore

    examples, _ = build_raft_examples(records, store, RaftSettings(examples_per_question=2))
    for example in examples:
        question = example.messages[-2]["content"].rsplit("Question: ", 1)[1]
        monkeypatch.setattr(RagStore, "search", lambda self, *a, hits=example.hits, **k: hits)
        _rag_ask(store, tiny_model_dir, question)
        assert json.dumps(asked[-1]) == json.dumps(example.messages[:-1])


def test_build_raft_data_writes_trainable_messages_and_a_report(
    store, questions, tmp_path, tiny_tokenizer
):
    from tuneforge.data.config import DataConfig
    from tuneforge.data.prepare import prepare_data

    out = tmp_path / "data" / "raft.jsonl"
    report = build_raft_data(questions, store.folder, out, RaftSettings(oracle_share=0.5))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == report.examples and set(lines[0]) == {"messages"}
    saved = json.loads(out.with_suffix(".report.json").read_text())
    assert (saved["oracle_kept"], saved["unanswerable"], saved["settings"]["oracle_share"]) == (
        2,
        1,
        0.5,
    )
    # The example whose oracle was removed keeps only unrelated chunks of this 3-document
    # store: `rag ask` would refuse it without the model, so it is dropped, with the reason.
    assert saved["oracle_removed"] == 0 and len(saved["dropped"]) == 1
    assert "no hit reaches the relevance threshold" in saved["dropped"][0]
    assert not list(out.parent.glob(".*.tmp"))
    # The training pipeline reads the file as it is: every example supervised, none truncated.
    prepared = prepare_data(DataConfig(path=str(out), max_length=1024), tiny_tokenizer)
    assert prepared.report.train_examples == 3
    assert prepared.report.truncated == prepared.report.dropped_no_supervised == 0


def test_build_raft_data_refuses_when_nothing_is_left(store, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Who won the 1998 football world cup?", "answer": null}\n')
    with pytest.raises(DataError, match="no RAFT example could be built"):
        build_raft_data(path, store, tmp_path / "raft.jsonl")


def test_train_with_a_store_trains_on_the_prompts_rag_ask_sends_its_adapter(
    store, questions, asked, tiny_model_dir, tmp_path, monkeypatch
):
    from tuneforge.cli import main
    from tuneforge.rag import RagStore
    from tuneforge.rag.raft import PROMPT_RECORD, trained_prompt

    run = tmp_path / "run"
    system = "Answer in English."
    args = ["train", "--model", str(tiny_model_dir), "--store", str(store.folder)]
    args += ["--data", str(questions), "--out", str(run), "--max-steps", "1", "--no-progress"]
    args += ["--raft-examples-per-question", "2", "--raft-client-system", system]
    assert main(args) == 0
    trained = [json.loads(line)["messages"] for line in (run / "raft_data.jsonl").open()]
    report = json.loads((run / "raft_data.report.json").read_text())
    assert report["examples"] == len(trained) >= 4 and report["settings"]["seed"] == 0
    record = trained_prompt(run / "adapter")
    assert (record["prompt_format"], record["client_system"], record["top_k"]) == (
        "sources",
        system,
        3,
    )
    assert (run / "adapter" / PROMPT_RECORD).is_file()
    from tuneforge.train import load_config

    saved = load_config(run / "config.yaml")  # re-runs (and --resume) read the same settings
    assert saved.store == str(store.folder)
    assert saved.raft == RaftSettings(examples_per_question=2, client_system=system)

    # The same examples, rebuilt here with the hits they show: `rag ask --adapter` (no --system:
    # the adapter's record supplies it) sends each one's prompt byte for byte.
    settings = RaftSettings(examples_per_question=2, client_system=system)
    examples, _ = build_raft_examples(read_qa_records(questions), store, settings)
    assert [e.messages for e in examples] == trained
    for example, messages in zip(examples, trained, strict=True):
        question = messages[-2]["content"].rsplit("Question: ", 1)[1]
        monkeypatch.setattr(RagStore, "search", lambda self, *a, hits=example.hits, **k: hits)
        args = ["--store", str(store.folder), "--model", str(tiny_model_dir), "--top-k", "3"]
        args += ["--adapter", str(run / "adapter")]
        assert main(["rag", "ask", *args, question]) == 0
        assert json.dumps(asked[-1]) == json.dumps(messages[:-1])

    # eval --adapter --store asks the same way: the same hits give the same prompt.
    args = ["eval", "--model", str(tiny_model_dir), "--adapter", str(run / "adapter")]
    args += ["--store", str(store.folder), "--data", str(questions), "--limit", "1"]
    assert main([*args, "--metric", "contains_answer"]) == 0
    question = read_qa_records(questions)[0].question
    assert json.dumps(asked[-1]) == json.dumps(
        build_rag_messages(question, examples[-1].hits, client_system=system)
    )

    # --resume rebuilds the same examples from the same store and settings, and continues.
    monkeypatch.undo()  # the real search again
    args = ["train", "--config", str(run / "config.yaml"), "--resume", "--max-steps", "2"]
    assert main(args) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert [json.loads(line)["messages"] for line in (run / "raft_data.jsonl").open()] == trained


def test_a_malformed_prompt_record_is_refused_with_its_path(tmp_path):
    from tuneforge.rag.raft import PROMPT_RECORD, trained_prompt, write_prompt_record

    assert trained_prompt(tmp_path) is None and trained_prompt(None) is None
    path = write_prompt_record(tmp_path, RaftSettings(top_k=4), tmp_path / "kb")
    assert trained_prompt(tmp_path)["top_k"] == 4
    path.write_text(json.dumps({"format": 1, "prompt_format": "prose"}))
    with pytest.raises(ConfigError, match=f"{PROMPT_RECORD}: missing target_format"):
        trained_prompt(tmp_path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read the trained prompt record"):
        trained_prompt(tmp_path)


def test_rag_ask_reads_the_record_of_a_full_fine_tunes_model_folder(store, asked, tiny_model_copy):
    from tuneforge.rag.raft import write_prompt_record

    write_prompt_record(tiny_model_copy, RaftSettings(client_system="Be brief."), store.folder)
    _rag_ask(store, tiny_model_copy, "How much does the Orla pump cost?")
    assert asked[-1][0]["content"].endswith("\n\nBe brief.")
