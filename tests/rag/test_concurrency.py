"""Readers and writers in several processes: readers never wait, creation is race-free."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout
from hashing_embedder import HashingEmbedder
from rag_samples import write_docs

import tuneforge
from tuneforge.rag import RagStore

WORKER = Path(__file__).parent / "ingest_worker.py"


def start_worker(store: Path, docs: Path, *options: str) -> subprocess.Popen:
    """An ingest in a child process (hashing embedder; starts in about a second)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(tuneforge.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(store), str(docs), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    """Read the child's stdout until ``expected`` (fails with its stderr if it exits first)."""
    for line in proc.stdout:
        if line.strip() == expected:
            return
    raise AssertionError(f"worker ended before {expected!r}: {proc.stderr.read()[-2000:]}")


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return out


def lock_is_held(store: Path) -> bool:
    try:
        FileLock(str(store / ".lock")).acquire(timeout=0)
    except Timeout:
        return True
    return False  # released when the FileLock object is collected


def test_readers_do_not_wait_for_an_ingest_in_another_process(tmp_path):
    """`rag stats` 10 s into an ingest used to return only when the ingest finished."""
    embedder = HashingEmbedder()
    first = write_docs(
        tmp_path / "first", {f"a{i}.md": f"# A{i}\n\nPump fact {i}." for i in range(5)}
    )
    RagStore(tmp_path / "store", embedder=embedder).ingest(first, progress=False)
    more = write_docs(
        tmp_path / "more", {f"b{i:02d}.md": f"# B{i}\n\nValve fact {i}." for i in range(60)}
    )
    writer = start_worker(tmp_path / "store", more, "--delay-s", "0.1")  # >= 6 s of embedding
    try:
        wait_for_line(writer, "ingesting")
        deadline = time.monotonic() + 10
        while not lock_is_held(tmp_path / "store") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock_is_held(tmp_path / "store"), "the writer never took the lock"

        from tuneforge.serve.retrieval import build_retriever

        start = time.monotonic()
        reader = RagStore.open(tmp_path / "store", embedder=embedder)
        stats = reader.stats()
        hits = reader.search("pump fact", top_k=3, mode="hybrid")
        build_retriever(tmp_path / "store", embedder=embedder)  # `serve --store` opens it too
        elapsed = time.monotonic() - start
        assert writer.poll() is None, "the reader returned only after the ingest ended"
        assert elapsed < 3.0
        # The last committed version: the first five documents, consistent with their chunks.
        assert stats.documents >= 5 and stats.chunks >= 5
        assert "Pump fact" in hits[0].text
    finally:
        out = finish(writer)
    assert out.strip().endswith("done 60 0 0")
    assert RagStore.open(tmp_path / "store", embedder=embedder).stats().documents == 65


def two_folders(tmp_path: Path) -> list[Path]:
    """Two folders of five one-chunk documents each."""
    return [
        write_docs(
            tmp_path / f"p{n}",
            {f"d{i}.md": f"# D{n}{i}\n\nProcess {n} fact {i}." for i in range(5)},
        )
        for n in range(2)
    ]


def test_two_ingests_into_a_new_store_both_complete(tmp_path):
    """While one process creates a store, another used to fail: 'folder is not empty'."""
    folders = two_folders(tmp_path)
    store = tmp_path / "new-store"
    store.mkdir()
    # The state while a store is being created: its folder holds only the writer's lock.
    creating = FileLock(str(store / ".lock"))
    creating.acquire()
    workers = [start_worker(store, folder) for folder in folders]
    try:
        for worker in workers:
            wait_for_line(worker, "opening")
        time.sleep(0.5)
        assert all(worker.poll() is None for worker in workers), "a worker gave up"
    finally:
        creating.release()
    outputs = [finish(worker) for worker in workers]
    assert sorted(out.split()[-3:] for out in outputs) == [["5", "0", "0"]] * 2
    reopened = RagStore.open(store, embedder=HashingEmbedder())
    assert reopened.stats().documents == 10 and reopened.stats().chunks == 10
    assert reopened.ingest(folders, progress=False).unchanged == 10


def test_two_ingests_racing_to_create_a_store(tmp_path):
    """Two processes started together on a folder that does not exist yet."""
    folders = two_folders(tmp_path)
    workers = [start_worker(tmp_path / "raced", folder) for folder in folders]
    for worker in workers:
        finish(worker)
    reopened = RagStore.open(tmp_path / "raced", embedder=HashingEmbedder())
    assert reopened.stats().documents == 10 and reopened.stats().chunks == 10


def test_stats_skips_a_file_a_writer_removes_while_it_counts(tmp_path, monkeypatch):
    """CI once saw ``stats()`` fail: an ingest's temporary transaction file was listed, then
    renamed away before its size was read. Here a file vanishes right after it is first seen."""
    store = RagStore(tmp_path / "store", embedder=HashingEmbedder(), chunk_size=32, overlap=0)
    ghost = tmp_path / "store" / ".tmp_transaction"
    ghost.write_bytes(b"x" * 100)
    before = store.stats().disk_bytes
    real_stat = os.stat
    seen = []

    def vanishing_stat(path, *args, **kwargs):
        if Path(path) == ghost:
            if seen:  # a second look: the writer has renamed it away meanwhile
                raise FileNotFoundError(2, "No such file or directory", str(path))
            seen.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", vanishing_stat)
    after = store.stats()
    assert after.disk_bytes in (before, before - 100)  # counted once or not at all, no error
    assert after.chunks == 0
