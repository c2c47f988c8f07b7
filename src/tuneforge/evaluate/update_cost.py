"""The cost to update one fact: re-ingest a changed document, or re-train a fine-tune.

Bundled knowledge base: one number in one (copied) document is changed, the folder re-ingested
(only the changed file is re-embedded) and base+RAG asked the question again, to check that the
new value is what it now answers. The user's documents are never edited: their cost is the
measured ingest time per document.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.evaluate.results import UpdateCost
from tuneforge.evaluate.runner import rag_responder

if TYPE_CHECKING:
    from tuneforge.evaluate.compare_data import CompareInputs
    from tuneforge.rag.qa_records import QARecord


def _mutate_fact(records: list[QARecord], docs: Path) -> tuple[QARecord, str, str, Path] | None:
    """Pick an answerable question whose numeric answer is written in its document."""
    for record in records:
        if not record.answerable or not record.sources:
            continue
        answer = record.answers[0]
        path = docs / record.sources[0]
        if (
            not re.search(r"\d", answer)
            or not path.exists()
            or answer not in path.read_text(encoding="utf-8")
        ):
            continue
        match = re.search(r"\d", answer)
        digit = str((int(match.group()) + 3) % 10 or 4)
        new = answer[: match.start()] + digit + answer[match.end() :]
        return record, answer, new, path
    return None


def measure_update_cost(
    data: CompareInputs,
    records: list[QARecord],
    kb_docs: Path,
    kb_store,
    ingest,
    model,
    tok,
    settings,
    top_k: int,
) -> UpdateCost | None:
    """The cost to change one fact (``retrain_seconds`` is filled in by the caller).

    Args:
        data: the comparison's inputs (bundled or the user's documents).
        records: questions to pick the changed fact from (one whose numeric answer is written
            in its document).
        kb_docs: the documents folder the store was built from.
        kb_store: the store (re-ingested after the change).
        ingest: the report of the store's first ingest.
        model, tok: the base model and tokenizer (base+RAG is asked again).
        settings: generation settings.
        top_k: hits retrieved when base+RAG is asked again.

    Returns:
        the cost, or None when no question has a numeric answer written in its document.
    """
    from tuneforge.evaluate.metrics import contains_answer

    if data.docs is not None:
        documents = max(ingest.added + ingest.updated + ingest.unchanged, 1)
        return UpdateCost(
            fact=(
                f"your documents are not edited; re-ingesting one changed document is estimated "
                f"from the ingest ({ingest.seconds:.1f} s for {documents} documents)"
            ),
            reingest_seconds=ingest.seconds / documents,
            retrain_seconds=0.0,
        )
    picked = _mutate_fact(records, kb_docs)
    if picked is None:
        return None
    record, old, new, path = picked
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    start = time.perf_counter()
    kb_store.ingest(kb_docs, progress=False)
    reingest_s = time.perf_counter() - start
    reply = rag_responder(model, tok, kb_store, settings, top_k=top_k)({"prompt": record.question})
    return UpdateCost(
        fact=f"{path.name}: {old!r} changed to {new!r}; base+RAG then answered {reply.text!r}",
        reingest_seconds=reingest_s,
        retrain_seconds=0.0,
        reingest_recalled=contains_answer(reply.text, new),
    )
