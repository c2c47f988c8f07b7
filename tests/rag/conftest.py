"""RAG fixtures: the bundled embedding model (loaded once), stores, tiny extra models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuneforge.rag import RagStore, load_embedder
from tuneforge.rag.embedding import bundled_embedding_dir

_TOKENIZER_FILES = [
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


@pytest.fixture(scope="session")
def embedder():
    """The bundled all-MiniLM-L6-v2 (real, 22M parameters; about 1 s to load once imported)."""
    return load_embedder("default")


@pytest.fixture
def make_store(tmp_path, embedder):
    """Build a fresh store folder under tmp_path that shares the session's embedder."""

    def make(name: str = "store", **kwargs) -> RagStore:
        return RagStore(tmp_path / name, embedder=embedder, **kwargs)

    return make


def _tiny_bert(folder: Path, num_labels: int | None = None) -> Path:
    """A randomly initialised 1-layer BERT (width 32) with MiniLM's tokenizer files."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    if num_labels is None:
        model = BertModel(config)
    else:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        shutil.copy(bundled_embedding_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_embedding_dir(tmp_path_factory) -> Path:
    """A sentence-transformers folder holding a tiny random BERT with mean pooling (32 dims)."""
    from sentence_transformers import SentenceTransformer, models

    bert = _tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    model = SentenceTransformer(
        modules=[models.Transformer(str(bert), max_seq_length=128), models.Pooling(32)],
        device="cpu",
    )
    folder = tmp_path_factory.mktemp("tiny-embedding")
    model.save(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory) -> Path:
    """A cross-encoder folder: a tiny random BERT with a 1-logit classification head."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-cross-encoder"), num_labels=1)


@pytest.fixture
def record_prompts(monkeypatch):
    """``record_prompts(reply_text)``: a stub model answering ``reply_text`` to everything; the
    returned list collects every ``messages`` it is asked with, in order, whether through
    ``generate`` (``rag ask``) or evaluation's batches (``generate_rows``)."""
    from tuneforge.generation import Reply

    def install(reply_text: str) -> list[list[dict]]:
        seen: list[list[dict]] = []

        def fake_generate(model, tokenizer, messages, settings=None, on_text=None):
            seen.append(messages)
            return Reply(reply_text, 10, 5, 0.01, "stop")

        def fake_row(tokenizer, messages, settings=None, logits_processor=None):
            return messages  # the batch's row is kept as its messages

        def fake_generate_rows(model, tokenizer, rows):
            return [fake_generate(model, tokenizer, messages) for messages in rows]

        monkeypatch.setattr("tuneforge.generation.generate", fake_generate)
        monkeypatch.setattr("tuneforge.generation.chat_row", fake_row)
        monkeypatch.setattr("tuneforge.generation.generate_rows", fake_generate_rows)
        return seen

    return install
