"""Chunks fit the token budget, overlap, prefer paragraph cuts and point back into the text."""

from __future__ import annotations

import itertools

import pytest

from tuneforge.errors import ConfigError
from tuneforge.rag import chunking
from tuneforge.rag.chunking import MAX_CHARS_PER_TOKEN, ChunkSettings, chunk_document
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
    chunks = list(chunk_document(doc, embedder.tokenizer, settings))
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
    chunks = list(chunk_document(doc, embedder.tokenizer, ChunkSettings(chunk_size=60, overlap=0)))
    assert len(chunks) == 3
    assert all(chunk.text == para for chunk in chunks)


def test_sections_are_never_merged_and_keep_locations(embedder):
    doc = _doc("# A\n\nalpha", "# B\n\nbeta")
    chunks = list(chunk_document(doc, embedder.tokenizer, ChunkSettings()))
    assert [(c.location, c.text) for c in chunks] == [
        ("§ 0", "# A\n\nalpha"),
        ("§ 1", "# B\n\nbeta"),
    ]
    assert doc.text[chunks[1].start : chunks[1].end] == "# B\n\nbeta"


def test_text_without_breaks_is_cut_at_the_token_limit(embedder):
    doc = _doc("x" * 3000)
    chunks = list(chunk_document(doc, embedder.tokenizer, ChunkSettings(chunk_size=32, overlap=8)))
    assert all(c.tokens <= 32 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == 3000


_UNBROKEN_TEXTS = {
    # WordPiece reads a word over 100 characters as ONE unknown token: without a character
    # bound these became one chunk each (a 2 MB line -> one 2,000,000-character chunk).
    "whitespace-free line": "x" * 20_000,
    "emoji line": "\U0001f600" * 6_000,
    "CJK text": "保修期为两年，从购买之日起计算。我们的总部位于上海浦东新区。" * 120,
    "mixed text": ("abc\U0001f600中文" * 400 + " word, " + "\U0001f4a1" * 300 + "\n") * 6,
    "long whitespace run": "alpha" + " " * 50_000 + "omega",
}


@pytest.mark.parametrize("name", list(_UNBROKEN_TEXTS))
def test_chunks_are_bounded_in_tokens_and_characters_whatever_the_text(embedder, name):
    text = _UNBROKEN_TEXTS[name]
    doc = _doc(text)
    settings = ChunkSettings(chunk_size=64, overlap=16)
    chunks = list(chunk_document(doc, embedder.tokenizer, settings))
    for chunk in chunks:
        assert _tokens(embedder, chunk.text) <= 64
        assert chunk.tokens == _tokens(embedder, chunk.text)
        assert len(chunk.text) <= 64 * MAX_CHARS_PER_TOKEN
        assert doc.text[chunk.start : chunk.end] == chunk.text
    # Nothing is lost: the chunks cover the text from its first to its last character.
    assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    for before, after in itertools.pairwise(chunks):
        assert after.start <= before.end or not text[before.end : after.start].strip()


def test_unknown_runs_count_one_token_per_character(embedder):
    """300 emoji read as one [UNK]: each character counts, as CJK characters do."""
    settings = ChunkSettings(chunk_size=64, overlap=0)
    chunks = list(chunk_document(_doc("\U0001f600" * 300), embedder.tokenizer, settings))
    assert [len(c.text) for c in chunks] == [64, 64, 64, 64, 44]


def test_chunks_do_not_depend_on_the_tokenizer_block_size(embedder, monkeypatch):
    """A long section is tokenized in blocks; the chunks are those of one pass over it."""
    sentences = [f"Sentence {i} is about pump model {i * 7} and its valve." for i in range(300)]
    doc = _doc(" ".join(sentences))
    settings = ChunkSettings(chunk_size=32, overlap=8)
    whole = list(chunk_document(doc, embedder.tokenizer, settings))
    monkeypatch.setattr(chunking, "BLOCK_CHARS", 1)  # the floor: 4 windows' worth
    assert list(chunk_document(doc, embedder.tokenizer, settings)) == whole
    assert len(doc.text) > 4 * 4 * settings.max_chars  # several blocks were used


def test_cjk_sentences_end_at_full_width_stops(embedder):
    sentence = "保修期为两年，从购买之日起计算。"
    settings = ChunkSettings(chunk_size=40, overlap=0)
    chunks = list(chunk_document(_doc(sentence * 12), embedder.tokenizer, settings))
    assert len(chunks) > 3 and all(c.text.endswith("。") for c in chunks)


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (64, 40), (64, -1)])
def test_invalid_settings_name_the_field(size, overlap):
    with pytest.raises(ConfigError, match="chunk_size|overlap"):
        ChunkSettings(chunk_size=size, overlap=overlap)
