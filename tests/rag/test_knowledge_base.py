"""The bundled demo knowledge base is consistent: every answer lives in its named sources."""

from __future__ import annotations

from tuneforge.rag.parsing import Document, iter_files, parse_file
from tuneforge.tasks.knowledge_base import corpus_dir, questions


def test_corpus_size_and_formats():
    files = [path for path, _ in iter_files([corpus_dir()])]
    assert 15 <= len(files) <= 30
    assert {path.suffix for path in files} >= {".md", ".txt", ".html"}
    assert all(isinstance(parse_file(path), Document) for path in files)


def test_every_answer_is_in_each_of_its_sources():
    texts = {path.name: parse_file(path).text for path, _ in iter_files([corpus_dir()])}
    items = questions()
    assert len(items) >= 30 and sum(not q.answerable for q in items) >= 5
    for q in items:
        if not q.answerable:
            assert q.answer is None and q.sources == []
            continue
        assert q.source == q.sources[0]
        for source in q.sources:
            assert q.matches(texts[source]), f"{q.id}: {q.answer!r} not in {source}"
