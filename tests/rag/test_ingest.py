"""Incremental ingestion: no duplicates, updates replace facts, deletions follow the files."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rag_samples import write_docs

from tuneforge.errors import StoreError
from tuneforge.rag import RagStore

DOCS = {
    "pumps.md": "# Pumps\n\nThe Orla pump delivers 40 litres per minute.",
    "hours.txt": "Opening hours\n\nThe Vesk depot opens at 06:45 every weekday.",
    "sub/team.md": "# Team\n\nThe depot manager is Ragna Holt.",
}


def _rows(store: RagStore) -> int:
    return store.vectors.count_chunks()


def test_repeated_ingests_never_duplicate_rows(make_store, tmp_path):
    docs = write_docs(tmp_path / "docs", DOCS)
    store = make_store()
    first = store.ingest(docs, progress=False)
    assert (first.added, first.updated, first.unchanged, first.removed) == (3, 0, 0, 0)
    rows = _rows(store)
    assert rows == first.chunks >= 3
    for _ in range(2):
        again = store.ingest(docs, progress=False)
        assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 3, 0)
        assert _rows(store) == rows
    # The same file reached through another path spelling is still one document.
    store.ingest(docs / "sub" / ".." / "pumps.md", progress=False)
    assert _rows(store) == rows
    assert store.stats().documents == 3


def test_changed_fact_replaces_the_old_one(make_store, tmp_path):
    """The cheap knowledge update: re-ingest a changed file, the old fact is gone."""
    docs = write_docs(tmp_path / "docs", DOCS)
    store = make_store()
    store.ingest(docs, progress=False)
    question = "What time does the Vesk depot open?"
    assert "06:45" in store.search(question, top_k=1)[0].text

    (docs / "hours.txt").write_text("Opening hours\n\nThe Vesk depot opens at 08:15 every weekday.")
    report = store.ingest(docs, progress=False)
    assert (report.updated, report.unchanged, report.added) == (1, 2, 0)
    for mode in ("dense", "bm25", "hybrid"):
        hits = store.search(question, top_k=5, mode=mode)
        assert "08:15" in hits[0].text
        assert not any("06:45" in hit.text for hit in hits)
    assert all("06:45" not in hit.text for hit in store.search("06:45", top_k=5, mode="bm25"))


def test_files_gone_from_a_folder_are_removed(make_store, tmp_path):
    docs = write_docs(tmp_path / "docs", DOCS)
    other = write_docs(tmp_path / "other", {"keep.md": "# Keep\n\nUnrelated note."})
    store = make_store()
    store.ingest([docs, other], progress=False)
    (docs / "sub" / "team.md").unlink()
    report = store.ingest(docs, progress=False)
    assert report.removed == 1 and report.unchanged == 2
    sources = {record.source for record in store.documents()}
    assert str(docs / "sub" / "team.md") not in sources
    assert str(other / "keep.md") in sources  # another folder is left alone
    assert all("Ragna" not in hit.text for hit in store.search("depot manager", top_k=5))


def test_remove_by_path_folder_or_id(make_store, tmp_path):
    docs = write_docs(tmp_path / "docs", DOCS)
    store = make_store()
    store.ingest(docs, progress=False)
    removed = store.remove(docs / "pumps.md")
    assert [r.source for r in removed] == [str(docs / "pumps.md")]
    assert all("Orla" not in hit.text for hit in store.search("Orla pump", top_k=5))
    team = next(r for r in store.documents() if r.source.endswith("team.md"))
    store.remove(team.doc_id)
    assert [r.source.endswith("hours.txt") for r in store.documents()] == [True]
    store.remove(docs)
    assert store.stats().documents == 0 and _rows(store) == 0
    with pytest.raises(StoreError, match="no document"):
        store.remove(docs / "pumps.md")


def test_bad_files_are_skipped_counted_and_warned(make_store, tmp_path):
    docs = write_docs(tmp_path / "docs", {"good.md": "# Good\n\nFine text."})
    (docs / "blob.txt").write_bytes(b"\x00\x01binary\x00")
    (docs / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    locked = docs / "locked.md"
    locked.write_text("# Secret")
    locked.chmod(0)
    store = make_store()
    report = store.ingest(docs, progress=False)
    expected_skips = 3 if _can_read(locked) else 4  # root can read a chmod-0 file
    assert report.added == 1 + (4 - expected_skips)
    assert report.skipped == expected_skips
    assert len(report.warnings) == expected_skips
    assert any("blob.txt" in w and "binary" in w for w in report.warnings)
    assert any("photo.jpg" in w and "unsupported" in w for w in report.warnings)


def _can_read(path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


def test_store_refuses_another_embedding_model_naming_both(make_store, tiny_embedding_dir):
    store = make_store()
    with pytest.raises(StoreError) as caught:
        RagStore(store.folder, embedding_model=str(tiny_embedding_dir))
    message = str(caught.value)
    assert "all-MiniLM-L6-v2" in message and tiny_embedding_dir.name in message


def test_store_refuses_other_chunk_settings_and_non_store_folders(make_store, tmp_path):
    store = make_store(chunk_size=100, overlap=10)
    assert (store.meta.chunk_size, store.meta.overlap) == (100, 10)
    with pytest.raises(StoreError, match="chunk_size 100, not 120"):
        make_store(chunk_size=120)
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not a RAG store"):
        make_store("random")
    with pytest.raises(StoreError, match="no RAG store"):
        RagStore.open(tmp_path / "missing")


def test_concurrent_ingests_in_threads_keep_the_store_consistent(make_store, tmp_path):
    docs_a = write_docs(
        tmp_path / "a", {f"a{i}.md": f"# A{i}\n\nFact alpha {i}." for i in range(6)}
    )
    docs_b = write_docs(tmp_path / "b", {f"b{i}.md": f"# B{i}\n\nFact beta {i}." for i in range(6)})
    first = make_store()
    second = RagStore(first.folder, embedder=first.embedder)  # its own lock handle
    errors = []

    def run(store, docs):
        try:
            store.ingest(docs, progress=False)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [
        threading.Thread(target=run, args=pair) for pair in ((first, docs_a), (second, docs_b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert first.stats().documents == 12 and _rows(first) == 12


_INGEST_SCRIPT = """
import sys
from tuneforge.rag import RagStore
RagStore(sys.argv[1]).ingest(sys.argv[2], progress=False)
"""


@pytest.mark.slow  # two fresh interpreters import torch + sentence-transformers: ~1 min on 2 cores
def test_concurrent_ingests_in_processes_do_not_corrupt(make_store, tmp_path):
    store = make_store()
    folders = [
        write_docs(
            tmp_path / f"p{n}",
            {f"d{i}.md": f"# D{n}{i}\n\nProcess {n} fact {i}." for i in range(5)},
        )
        for n in range(2)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _INGEST_SCRIPT, str(store.folder), str(folder)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    reopened = RagStore.open(store.folder, embedder=store.embedder)
    assert reopened.stats().documents == 10 and _rows(reopened) == 10
    assert reopened.ingest(folders, progress=False).unchanged == 10


def test_an_older_store_gets_the_cjk_text_index_at_its_next_write(make_store, tmp_path):
    from lancedb.index import FTS

    docs = write_docs(tmp_path / "docs", {"zh.md": "# 保修\n\n本产品的保修期为两年。"})
    store = make_store()
    store.ingest(docs, progress=False)
    # As stores made before the ICU tokenizer: a whole CJK sentence is one token.
    store.vectors._chunks.create_index("search_text", config=FTS(), replace=True)
    assert store.search("保修期", top_k=1, mode="bm25") == []
    write_docs(docs, {"en.md": "# Pumps\n\nThe Orla pump."})
    store.ingest(docs, progress=False)
    assert Path(store.search("保修期", top_k=1, mode="bm25")[0].source).name == "zh.md"


def test_a_store_folder_missing_its_tables_is_a_clear_error(make_store):
    import shutil

    store = make_store()
    shutil.rmtree(store.folder / "lance")
    with pytest.raises(StoreError, match="tables are missing"):
        RagStore.open(store.folder, embedder=store.embedder)
