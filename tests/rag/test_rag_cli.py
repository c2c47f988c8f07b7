"""``tuneforge rag ...`` end to end through the CLI entry point."""

from __future__ import annotations

from rag_samples import write_docs

from tuneforge.cli import main

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
