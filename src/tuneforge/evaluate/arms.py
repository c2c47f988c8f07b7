"""The comparison as data: which arms run on which tasks, and how each is set up.

``compare`` runs every arm of :data:`COMPARE_ARMS` on every task of :data:`COMPARE_TASKS` in
one loop; the report's columns follow the same table. Adding an arm is one line here (plus the
training run it names, if any); a task names the training runs its arms use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT


@dataclass(frozen=True)
class Arm:
    """One way to answer: a model (the base or one of a task's fine-tunes), with or without
    retrieval.

    Attributes:
        name: the arm's name in results and the report.
        adapter: the role of the fine-tune it runs on, looked up in :attr:`Task.adapters`
            (None: the base model). A task without that role skips the arm.
        rag: answer with retrieval from the task's store.
    """

    name: str
    adapter: str | None = None
    rag: bool = False


@dataclass(frozen=True)
class Task:
    """One task every arm is asked.

    Attributes:
        name: the task's name in results and the report.
        metrics: evaluation metrics for every arm.
        rag_metrics: metrics added for arms with retrieval (e.g. ``citation``).
        verdict: the row verdict shown beside sample replies.
        prompt_format: how retrieved hits are shown (``tuneforge.rag.PROMPT_FORMATS``).
        plain_system: system prompt of arms without retrieval for items without their own.
        adapters: adapter role -> the training run (``compare``'s ``runs/<name>``) providing it.
    """

    name: str
    metrics: tuple[str, ...]
    rag_metrics: tuple[str, ...]
    verdict: str
    prompt_format: str
    plain_system: str | None
    adapters: dict[str, str] = field(default_factory=dict)

    def metrics_for(self, arm: Arm) -> list[str]:
        """The metrics ``arm`` is scored on for this task."""
        return [*self.metrics, *(self.rag_metrics if arm.rag else ())]


COMPARE_ARMS: tuple[Arm, ...] = (
    Arm("base"),
    Arm("base+rag", rag=True),
    Arm("fine-tuned", adapter="fine-tuned"),
    Arm("fine-tuned+rag", adapter="fine-tuned", rag=True),
)
"""The arms, in report order."""

COMPARE_TASKS: tuple[Task, ...] = (
    Task(
        name="knowledge",
        metrics=("exact_match", "contains_answer", "refusal", "latency"),
        rag_metrics=("citation",),
        verdict="contains_answer",
        prompt_format="sources",
        plain_system=QA_SYSTEM_PROMPT,
        adapters={"fine-tuned": "knowledge-lora"},
    ),
    Task(
        name="json",
        metrics=("json", "latency"),
        rag_metrics=(),
        verdict="schema_valid",
        prompt_format="examples",
        plain_system=None,  # the items carry the task's system prompt
        adapters={"fine-tuned": "json-lora"},
    ),
)
"""knowledge: QA over the bundled fictional knowledge base (retrieval: its documents as numbered
sources); json: the strict-JSON orders task (retrieval: similar training examples as
demonstrations)."""


def arms_for(task: Task) -> list[Arm]:
    """The arms that run on ``task``: every arm whose adapter role the task provides."""
    return [arm for arm in COMPARE_ARMS if arm.adapter is None or arm.adapter in task.adapters]
