"""Chunks fit the token budget, overlap, prefer paragraph cuts and point back into the text."""

from __future__ import annotations

import itertools

import pytest

from tuneforge.errors import ConfigError
from tuneforge.rag.chunking import ChunkSettings, chunk_document
from tuneforge.rag.parsing import Document, Section


def _doc(*sections: str) -> Document:
    offset, parts = 0, []
    for i, text in enumerate(sections):
        parts.append(Section(text, f"§ {i}", offset))
        offset += len(text) + 2
    return Document("/x/doc.md", "Doc", "sha256:0", parts)


def _tokens(embedder, text: str) -> int:
    return len(embedder.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_chunks_fit_overlap_and_slice_the_document(embedder):
    sentences = [f"Sentence number {i} talks about the red pump model {i * 7}." for i in range(60)]
    doc = _doc(" ".join(sentences))
    settings = ChunkSettings(chunk_size=64, overlap=16)
    chunks = chunk_document(doc, embedder.tokenizer, settings)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.tokens <= 64
        assert _tokens(embedder, chunk.text) <= 64
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text.endswith(".") or chunk is chunks[-1]  # cut at sentence ends
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start < before.end  # consecutive chunks overlap
    assert chunks[-1].end == len(doc.text)


def test_paragraph_breaks_win_over_sentence_ends(embedder):
    para = " ".join(f"Fact {i} is short." for i in range(8))
    doc = _doc(f"{para}\n\n{para}\n\n{para}")
    chunks = chunk_document(doc, embedder.tokenizer, ChunkSettings(chunk_size=60, overlap=0))
    assert len(chunks) == 3
    assert all(chunk.text == para for chunk in chunks)


def test_sections_are_never_merged_and_keep_locations(embedder):
    doc = _doc("# A\n\nalpha", "# B\n\nbeta")
    chunks = chunk_document(doc, embedder.tokenizer, ChunkSettings())
    assert [(c.location, c.text) for c in chunks] == [
        ("§ 0", "# A\n\nalpha"),
        ("§ 1", "# B\n\nbeta"),
    ]
    assert doc.text[chunks[1].start : chunks[1].end] == "# B\n\nbeta"


def test_text_without_breaks_is_cut_at_the_token_limit(embedder):
    doc = _doc("x" * 3000)
    chunks = chunk_document(doc, embedder.tokenizer, ChunkSettings(chunk_size=32, overlap=8))
    assert all(c.tokens <= 32 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == 3000


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (64, 40), (64, -1)])
def test_invalid_settings_name_the_field(size, overlap):
    with pytest.raises(ConfigError, match="chunk_size|overlap"):
        ChunkSettings(chunk_size=size, overlap=overlap)
