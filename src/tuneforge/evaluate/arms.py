"""The comparison as data: which arms run on which tasks, and how each is set up.

``compare`` runs every arm of :data:`COMPARE_ARMS` on every task of :data:`COMPARE_TASKS` in
one loop; the report's columns follow the same table. Adding an arm is one line here (plus the
training run it names, if any); a task names the training runs its arms use.

The arms are the levers and their mix: the base model alone, retrieval alone, fine-tuning on
question/answer pairs (facts in the weights), that fine-tune given retrieved sources, and a
RAFT fine-tune (:mod:`tuneforge.rag.raft`: trained on the very prompts retrieval builds, to
read, cite and refuse) given retrieved sources; and, on the strict-JSON task, the base and its
fine-tune decoding under the schema (constrained decoding: valid JSON by construction), and the
fine-tune after preference tuning (DPO on preference pairs, where the task has them).
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
        constrained: decode every reply under the task's JSON schema
            (:func:`tuneforge.evaluate.constrained.constrained_responder`); only tasks with
            ``json_schema`` run it.
    """

    name: str
    adapter: str | None = None
    rag: bool = False
    constrained: bool = False


@dataclass(frozen=True)
class Task:
    """One task every arm is asked.

    Attributes:
        name: the task's name in results and the report.
        lever: what the task measures: ``facts`` (knowledge from documents), ``form`` (an
            output format) or ``both`` (facts in a strict format).
        metrics: evaluation metrics for every arm.
        rag_metrics: metrics added for arms with retrieval (e.g. ``citation``).
        score: the per-question verdict that decides the task (the headline rate), also shown
            beside sample replies.
        prompt_format: how retrieved hits are shown (``tuneforge.rag.PROMPT_FORMATS``).
        plain_system: system prompt of arms without retrieval for items without their own.
        adapters: adapter role -> the training run (``compare``'s ``runs/<name>``) providing it.
        memorised: also ask the fine-tuned arms questions they were trained on, to report
            memorised (trained) against generalised (held-out) answers.
        json_schema: the replies follow the task's JSON schema (``TaskInputs.schema``): the
            constrained arms run on it.
    """

    name: str
    lever: str
    metrics: tuple[str, ...]
    rag_metrics: tuple[str, ...]
    score: str
    prompt_format: str
    plain_system: str | None
    adapters: dict[str, str] = field(default_factory=dict)
    memorised: bool = False
    json_schema: bool = False

    def metrics_for(self, arm: Arm) -> list[str]:
        """The metrics ``arm`` is scored on for this task."""
        return [*self.metrics, *(self.rag_metrics if arm.rag else ())]


COMPARE_ARMS: tuple[Arm, ...] = (
    Arm("base"),
    Arm("base+rag", rag=True),
    Arm("fine-tuned", adapter="fine-tuned"),
    Arm("fine-tuned+rag", adapter="fine-tuned", rag=True),
    Arm("raft+rag", adapter="raft", rag=True),
    Arm("fine-tuned+dpo", adapter="dpo"),
    Arm("base+constrained", constrained=True),
    Arm("fine-tuned+constrained", adapter="fine-tuned", constrained=True),
)
"""The arms, in report order."""

KNOWLEDGE = Task(
    name="knowledge",
    lever="facts",
    metrics=("exact_match", "contains_answer", "refusal", "latency"),
    rag_metrics=("citation",),
    score="contains_answer",
    prompt_format="sources",
    plain_system=QA_SYSTEM_PROMPT,
    adapters={"fine-tuned": "knowledge-lora", "raft": "knowledge-raft"},
    memorised=True,
)
"""Questions about documents (the bundled knowledge base, or ``--docs``/``--questions``);
retrieval shows the documents as numbered sources."""

JSON = Task(
    name="json",
    lever="form",
    metrics=("json", "latency"),
    rag_metrics=(),
    score="schema_valid",
    prompt_format="examples",
    plain_system=None,  # the items carry the task's system prompt
    adapters={"fine-tuned": "json-lora", "dpo": "json-dpo"},
    json_schema=True,
)
"""A strict-JSON task (the bundled orders, or ``--train``/``--schema``); retrieval shows
similar training examples as demonstrations. Its ``dpo`` fine-tune starts from ``json-lora``
and is trained on the task's preference pairs (the bundled task has them; a user's task without
them skips that arm)."""

COMBINED = Task(
    name="combined",
    lever="both",
    metrics=("json", "contains_answer", "refusal", "latency"),
    rag_metrics=("citation",),
    score="correct_and_valid",
    prompt_format="sources",
    plain_system=None,  # the items carry the JSON instruction
    adapters={"fine-tuned": "knowledge-lora", "raft": "knowledge-raft"},
    memorised=True,
)
"""The knowledge questions answered as strict JSON ``{"answer", "source"}``: facts and form at
once (:mod:`tuneforge.tasks.sourced_answers`). Its fine-tunes are the knowledge task's, trained
on both shapes."""

COMPARE_TASKS: tuple[Task, ...] = (KNOWLEDGE, JSON, COMBINED)
"""The bundled tasks, in report order."""


def arms_for(task: Task) -> list[Arm]:
    """The arms that run on ``task``: every arm whose adapter role the task provides (the
    constrained ones only on a task with a JSON schema)."""
    return [
        arm
        for arm in COMPARE_ARMS
        if (arm.adapter is None or arm.adapter in task.adapters)
        and (not arm.constrained or task.json_schema)
    ]
