"""Dense, BM25 and hybrid retrieval on the bundled knowledge base; fusion; filters; reranking."""

from __future__ import annotations

from pathlib import Path

import pytest
from rag_samples import write_docs

from tuneforge.errors import ConfigError
from tuneforge.rag import RagStore, reciprocal_rank_fusion
from tuneforge.rag.vector_store import ChunkRecord, VectorStore
from tuneforge.tasks.knowledge_base import corpus_dir


@pytest.fixture(scope="module")
def kb_store(tmp_path_factory, embedder) -> RagStore:
    store = RagStore(tmp_path_factory.mktemp("kb") / "store", embedder=embedder)
    store.ingest(corpus_dir(), progress=False)
    return store


def _record(chunk_id: str) -> ChunkRecord:
    return ChunkRecord(chunk_id, "d", "", "", "/s", "", "", 0, 0, None)


def test_reciprocal_rank_fusion_scores():
    a, b, c = _record("a"), _record("b"), _record("c")
    fused = reciprocal_rank_fusion([[a, b], [b, c]], k=60)
    assert [r.chunk_id for r, _ in fused] == ["b", "a", "c"]
    scores = {r.chunk_id: s for r, s in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["c"] == pytest.approx(1 / 62)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("Which form is used to make a warranty claim?", "warranty-policy.md"),
        ("Who leads the Halvard Research Lab?", "research-lab.html"),
        ("How much does a calibration cost?", "calibration-service.md"),
    ],
)
def test_each_mode_finds_the_source(kb_store, mode, question, source):
    hits = kb_store.search(question, top_k=3, mode=mode)
    assert len(hits) == 3
    assert Path(hits[0].source).name == source
    assert hits[0].location and hits[0].doc_id and hits[0].chunk_id.startswith(hits[0].doc_id)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_carry_similarity_and_offsets(kb_store):
    hit = kb_store.search("What is the phone number of the support hotline?", top_k=1)[0]
    assert 0.3 < hit.similarity <= 1.0
    assert Path(hit.source).name == "support.md" and "+47 555 0193" in hit.text
    # Markdown is parsed as is, so offsets index the file's own text here.
    text = (corpus_dir() / "support.md").read_text()
    assert text[hit.start : hit.end] == hit.text


def test_source_filter_limits_hits(kb_store):
    only = corpus_dir() / "shipping.md"
    for mode in ("dense", "bm25", "hybrid"):
        hits = kb_store.search("express delivery", top_k=5, mode=mode, source_filter=only)
        assert hits and {h.source for h in hits} == {str(only)}
    folder_hits = kb_store.search("warranty", top_k=5, source_filter=corpus_dir())
    assert folder_hits
    assert kb_store.search("warranty", source_filter=corpus_dir() / "nothing.md") == []


def test_lance_store_implements_the_interface(kb_store):
    assert isinstance(kb_store.vectors, VectorStore)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"mode": "fuzzy"}, "mode"), ({"top_k": 0}, "top_k")]
)
def test_bad_options_are_refused(kb_store, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        kb_store.search("x", **kwargs)


def test_reranker_reorders_by_cross_encoder_scores(kb_store, tiny_reranker_dir, embedder):
    from sentence_transformers import CrossEncoder

    reranked_store = RagStore(kb_store.folder, embedder=embedder, reranker=str(tiny_reranker_dir))
    question = "How much does the Skyline Pro plan cost?"
    hits = reranked_store.search(question, top_k=4)
    model = CrossEncoder(str(tiny_reranker_dir), device="cpu")
    expected = model.predict([(question, h.text) for h in hits])
    assert [h.score for h in hits] == pytest.approx([float(x) for x in expected], abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bm25_finds_chinese_and_japanese_text(make_store, tmp_path):
    """The full-text index read a whole CJK sentence as one token: bm25 found nothing."""
    docs = write_docs(
        tmp_path / "docs",
        {
            "zh.md": "# 保修\n\n本产品的保修期为两年，从购买之日起计算。我们的总部位于上海浦东新区。",
            "ja.md": "# 返品\n\n返品は購入後30日以内に受け付けます。東京の倉庫は午前9時に開きます。",
            "en.md": "# Pumps\n\nThe Orla pump delivers 40 litres per minute.",
        },
    )
    store = make_store()
    store.ingest(docs, progress=False)
    for query, name in [
        ("保修期", "zh.md"),
        ("上海", "zh.md"),
        ("倉庫", "ja.md"),
        ("返品", "ja.md"),
    ]:
        hits = store.search(query, top_k=3, mode="bm25")
        assert [Path(hit.source).name for hit in hits] == [name], query
    assert Path(store.search("pumps", top_k=1, mode="bm25")[0].source).name == "en.md"
