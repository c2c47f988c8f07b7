"""The bundled combined task: knowledge-base questions answered as strict JSON with a source.

Every reply must be exactly ``{"answer": ..., "source": ...}``: the answer (or the house refusal
"I don't know.") and the number ``"[n]"`` of the retrieved source it comes from (null without
one). The facts are the knowledge base's (:mod:`tuneforge.tasks.knowledge_base`: no model knows
them), the shape is :data:`tuneforge.rag.raft.JSON_ANSWER_SCHEMA`. So an arm needs retrieval for
the facts and fine-tuning for the form to be right and valid at once: the numbers show when
the two levers are worth combining. Example::

    system:    ...numbered sources... Reply with JSON only: {"answer": ..., "source": "[n]" ...}
    user:      Sources: [1] ... [2] ... Question: How much does the Kestrel K7 cost?
    assistant: {"answer": "1,480 euros", "source": "[2]"}
"""

from __future__ import annotations

import json

from tuneforge.rag.qa_records import QARecord
from tuneforge.rag.raft import JSON_ANSWER_SCHEMA
from tuneforge.rag.replies import REFUSAL

SCHEMA = JSON_ANSWER_SCHEMA
"""The JSON schema every reply must satisfy."""

ANSWER_FIELD = "answer"
"""The field holding the answer (what correctness is judged on)."""

SYSTEM_PROMPT = (
    'Reply with JSON only: {"answer": "<short answer>", "source": "[n]"}, where [n] is the '
    f'number of the source you used, or null without one. If you do not know, answer "{REFUSAL}"'
)
"""The task's instruction: the system prompt without retrieval, and the client's system text
appended to the ``sources`` instruction with it."""


def eval_item(record: QARecord) -> dict:
    """``record`` as an evaluation item of this task (scored by ``tuneforge.evaluate``'s
    ``json`` metric on its answer field)."""
    return {**record.eval_item(), "system": SYSTEM_PROMPT, "answer_field": ANSWER_FIELD}


def plain_target(record: QARecord) -> str:
    """The reply a model without retrieval should give: the answer, no source to cite."""
    answer = record.answers[0] if record.answerable else REFUSAL
    return json.dumps({"answer": answer, "source": None}, ensure_ascii=False)
