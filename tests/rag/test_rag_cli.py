"""``tuneforge rag ...`` end to end through the CLI entry point."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hashing_embedder import HashingEmbedder
from rag_samples import write_docs

import tuneforge
from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.rag import RagStore

DOCS = {
    "pump.md": "# Pump\n\nThe Orla pump costs 70 euros.",
    "depot.txt": "Depot\n\nThe Vesk depot opens at 06:45.",
}


def test_ingest_stats_search_remove(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs", DOCS)
    (docs / "blob.txt").write_bytes(b"\x00\x00")
    store = str(tmp_path / "kb")
    assert main(["rag", "ingest", "--store", store, str(docs)]) == 0
    out, err = capsys.readouterr()
    assert "added 2, updated 0, unchanged 0, removed 0, skipped 1" in out
    assert "blob.txt" in err and "binary" in err

    assert main(["rag", "ingest", "--store", store, str(docs)]) == 0
    assert "added 0, updated 0, unchanged 2" in capsys.readouterr().out

    assert main(["rag", "stats", "--store", store, "--documents"]) == 0
    out = capsys.readouterr().out
    assert "documents:       2" in out and "all-MiniLM-L6-v2" in out and "pump.md" in out

    assert (
        main(["rag", "search", "--store", store, "--top-k", "1", "--mode", "bm25", "Orla pump"])
        == 0
    )
    out = capsys.readouterr().out
    assert "[1]" in out and "pump.md (§ Pump)" in out and "70 euros" in out

    assert main(["rag", "remove", "--store", store, str(docs / "pump.md")]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["rag", "remove", "--store", store, str(docs / "pump.md")]) == 2
    assert "no document with this id or path" in capsys.readouterr().err


def test_missing_store_and_other_embedding_model_are_one_line_errors(
    tmp_path, capsys, tiny_embedding_dir
):
    assert main(["rag", "search", "--store", str(tmp_path / "none"), "x"]) == 2
    assert "no RAG store here" in capsys.readouterr().err
    docs = write_docs(tmp_path / "docs", DOCS)
    store = str(tmp_path / "kb")
    assert main(["rag", "ingest", "--store", store, str(docs)]) == 0
    capsys.readouterr()
    code = main(
        ["rag", "search", "--store", store, "--embedding-model", str(tiny_embedding_dir), "x"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "all-MiniLM-L6-v2" in err and tiny_embedding_dir.name in err


def test_ask_prints_answer_and_sources(tmp_path, capsys, tiny_model_dir):
    docs = write_docs(tmp_path / "docs", DOCS)
    store = str(tmp_path / "kb")
    assert main(["rag", "ingest", "--store", store, str(docs)]) == 0
    capsys.readouterr()
    args = ["rag", "ask", "--store", store, "--model", str(tiny_model_dir), "--max-new-tokens", "4"]
    assert main([*args, "How much does the Orla pump cost?"]) == 0
    out = capsys.readouterr().out
    assert "Sources:" in out and "pump.md (§ Pump)" in out
    assert main([*args, "Who won the football world cup in 1998?"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("I don't know.") and "no source in the store is close enough" in out


def _kb(tmp_path, capsys, docs=DOCS) -> str:
    store = str(tmp_path / "kb")
    assert main(["rag", "ingest", "--store", store, str(write_docs(tmp_path / "docs", docs))]) == 0
    capsys.readouterr()
    return store


@pytest.mark.parametrize("query", ["", "   ", "\n\t "])
def test_an_empty_query_is_refused(tmp_path, capsys, query):
    """It used to return arbitrary hits (an empty text embeds to some vector)."""
    store = _kb(tmp_path, capsys)
    assert main(["rag", "search", "--store", store, query]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "the query is empty" in err and "give words to search for" in err
    with pytest.raises(ConfigError, match="the query is empty"):
        RagStore.open(store).search(query)


def test_search_prints_no_terminal_control_characters(tmp_path, capsys):
    """Documents are untrusted: an escape sequence in one must not reach the terminal."""
    evil = "# Pump \x1b[2J\n\nThe \x1b[31mOrla\x1b[0m pump \x1b]0;owned\x07costs 70 \u202eeuros."
    store = _kb(tmp_path, capsys, {"evil.md": evil})
    assert main(["rag", "search", "--store", store, "--top-k", "1", "Orla pump"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "The \\x1b[31mOrla\\x1b[0m pump" in out and "(§ Pump \\x1b[2J)" in out


def test_skipped_file_warnings_are_reported_once(tmp_path, capsys, caplog):
    """They were printed by the CLI and logged by the library (shown on stderr) too."""
    docs = write_docs(tmp_path / "docs", DOCS)
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02\x03")
    with caplog.at_level(logging.WARNING):
        assert main(["rag", "ingest", "--store", str(tmp_path / "kb"), str(docs)]) == 0
    err = capsys.readouterr().err
    logged = [record.getMessage() for record in caplog.records]
    assert err.count("blob.txt") + sum("blob.txt" in message for message in logged) == 1
    assert "warning: skipped" in err and "blob.txt" in err


def test_a_folder_without_supported_files_is_an_error_with_a_hint(tmp_path, capsys):
    """An empty folder used to ingest with exit 0 and no hint."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["rag", "ingest", "--store", str(tmp_path / "kb"), str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"no supported files found in {empty}; supported: .htm, .html, .jsonl" in err
    (empty / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    assert main(["rag", "ingest", "--store", str(tmp_path / "kb"), str(empty)]) == 2
    assert f"in {empty} (1 file of another type); supported:" in capsys.readouterr().err


def test_a_folder_emptied_since_its_ingest_is_synced_not_refused(tmp_path, capsys):
    store = _kb(tmp_path, capsys)
    for path in (tmp_path / "docs").iterdir():
        path.unlink()
    assert main(["rag", "ingest", "--store", store, str(tmp_path / "docs")]) == 0
    assert "removed 2" in capsys.readouterr().out


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`rag stats --documents | head` ended in a BrokenPipeError traceback."""
    docs = write_docs(tmp_path / "docs", {f"d{i}.md": f"# D{i}\n\nFact {i}." for i in range(30)})
    store = RagStore(tmp_path / "kb", embedder=HashingEmbedder())
    store.ingest(docs, progress=False)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(tuneforge.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    command = [sys.executable, "-m", "tuneforge", "rag", "stats", "--store", str(store.folder)]
    proc = subprocess.Popen(
        [*command, "--documents"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # the reader is gone before the first line is written (like `head`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as `yes | head` reports
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == ""
