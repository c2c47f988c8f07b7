"""The bundled demo knowledge base: a fictional company's documents and a question set.

Halvard Instruments, its Kestrel weather stations and the town of Brindlemoor are made up, so
the facts (names, prices, dates) cannot come from a model's pretraining: a right answer shows
that retrieval worked. Each question names the document its answer lives in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


@dataclass
class KnowledgeQuestion:
    """One question of the set.

    Attributes:
        id: ``q01``...
        question: the question text.
        answer: the short expected answer (None when the documents do not answer it).
        aliases: other accepted spellings of the answer.
        source: the document file name the answer lives in (None if unanswerable).
        sources: every document that states the answer (``source`` first).
        answerable: False for questions the documents do not answer.
    """

    id: str
    question: str
    answer: str | None
    aliases: list[str] = field(default_factory=list)
    source: str | None = None
    sources: list[str] = field(default_factory=list)
    answerable: bool = True

    def matches(self, text: str) -> bool:
        """Whether ``text`` contains the answer or an alias (case-insensitive)."""
        lowered = text.lower()
        return any(a.lower() in lowered for a in [self.answer or "", *self.aliases] if a)


def _root() -> Path:
    return Path(str(resources.files("tuneforge") / "assets" / "knowledge_base"))


def corpus_dir() -> Path:
    """The folder of the demo documents (Markdown, text and HTML files)."""
    return _root() / "documents"


def questions_path() -> Path:
    """The question set's JSONL file, in the QA-record format (``tuneforge.rag.qa_records``)."""
    return _root() / "questions.jsonl"


def questions() -> list[KnowledgeQuestion]:
    """The question set, answerable questions first."""
    lines = questions_path().read_text(encoding="utf-8").splitlines()
    return [KnowledgeQuestion(**json.loads(line)) for line in lines if line.strip()]
