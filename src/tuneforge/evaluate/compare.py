"""``tuneforge compare``: every arm of :mod:`tuneforge.evaluate.arms` on every task.

What it runs, in order (every output under ``out``):

1. Training (``runs/``): a LoRA fine-tune on the knowledge base's facts as Q/A pairs
   (``knowledge-lora``), a full fine-tune on the same pairs at the same step count
   (``knowledge-full``, for forgetting only), and a LoRA fine-tune on the strict-JSON task
   (``json-lora``). Each is timed; the knowledge LoRA's wall time is what re-training costs when
   a fact changes.
2. Stores (``stores/``): the knowledge base documents (copied to ``kb_docs/`` so one can be
   edited), and the JSON task's training examples (retrieved as demonstrations).
3. The arms (base, base+RAG, fine-tuned, fine-tuned+RAG) on (a) knowledge questions
   (answerable and unanswerable) and (b) JSON prompts: one loop over the table of arms × tasks.
4. Forgetting: general perplexity and general-question accuracy of base, full and LoRA.
5. Cost to update one fact: edit one document, re-ingest, ask base+RAG again.

The ``quick`` budget is sized for about ten minutes on 2 idle CPU cores with the default model:
few questions and 16 steps of batch 4, too few for the fine-tune to memorise 35 facts, so its
numbers are a smoke test of the method more than a verdict. ``full`` asks every question and
trains 150 steps of batch 8 (about 34 epochs over the facts): firmer numbers (not measured yet;
estimated at an hour or more on CPU).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import ConfigError
from tuneforge.evaluate.arms import COMPARE_TASKS, Arm, Task, arms_for
from tuneforge.evaluate.results import ArmResult, Comparison, ForgettingRow, LossCurve, UpdateCost
from tuneforge.evaluate.runner import (
    QA_SYSTEM_PROMPT,
    Responder,
    evaluate,
    load_eval_data,
    plain_responder,
    rag_responder,
)

if TYPE_CHECKING:
    from tuneforge.generation import GenerationSettings
    from tuneforge.rag import RagStore


@dataclass
class Budget:
    """How much to train and ask, and the fine-tunes' LoRA shape.

    Attributes:
        kb_answerable: answerable knowledge questions asked (of 35).
        kb_unanswerable: unanswerable knowledge questions asked (of 6).
        json_prompts: held-out JSON-task prompts asked.
        general_questions: general-knowledge questions asked (forgetting; of 20).
        knowledge_steps: optimizer steps of the knowledge fine-tunes (LoRA and full alike).
        json_steps: optimizer steps of the JSON LoRA fine-tune.
        json_examples: training examples put in the JSON demonstration store.
        batch_size: examples per optimizer step.
        max_new_tokens: reply length cap of the knowledge and general questions (tokens).
        json_max_new_tokens: reply length cap of the JSON task (tokens; an order is ~33).
        lora_r: LoRA rank of every LoRA fine-tune.
        lora_alpha: LoRA scaling numerator (peft's ``lora_alpha``).
    """

    kb_answerable: int
    kb_unanswerable: int
    json_prompts: int
    general_questions: int
    knowledge_steps: int
    json_steps: int
    json_examples: int
    batch_size: int = 8
    max_new_tokens: int = 40
    json_max_new_tokens: int = 64
    lora_r: int = 16
    lora_alpha: float = 32.0


BUDGETS = {
    "quick": Budget(
        kb_answerable=8,
        kb_unanswerable=3,
        json_prompts=6,
        general_questions=8,
        knowledge_steps=16,
        json_steps=16,
        json_examples=100,
        batch_size=4,
        max_new_tokens=32,
    ),
    "full": Budget(
        kb_answerable=35,
        kb_unanswerable=6,
        json_prompts=60,
        general_questions=20,
        knowledge_steps=150,
        json_steps=150,
        json_examples=1200,
    ),
}

LEARNING_RATES = {"lora": 1e-3, "full": 5e-5}
"""Learning rate per method (the usual LoRA range is ~10x a full fine-tune's)."""

MAX_LENGTH = 256
"""Training sequence length (tokens): every Q/A pair and JSON example fits."""

RAG_TOP_K = 3
"""Hits retrieved per question by the arms with retrieval."""


def general_asset(name: str) -> Path:
    """A file of ``tuneforge/assets/general`` (``questions.jsonl`` or ``text.jsonl``)."""
    return Path(str(resources.files("tuneforge") / "assets" / "general" / name))


def knowledge_items() -> list[dict]:
    """The knowledge base's questions as evaluation items (accepted answers, gold sources)."""
    from tuneforge.tasks.knowledge_base import questions

    items = []
    for q in questions():
        items.append(
            {
                "id": q.id,
                "question": q.question,
                "answer": [q.answer, *q.aliases] if q.answer else None,
                "source": q.sources or ([q.source] if q.source else []),
                "answerable": q.answerable,
            }
        )
    return items


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them if fewer)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    from tuneforge.atomic import write_text

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def knowledge_training_records(items: list[dict]) -> list[dict]:
    """The answerable facts as chat Q/A pairs, with the plain-QA system prompt used at test time."""
    return [
        {
            "messages": [
                {"role": "system", "content": QA_SYSTEM_PROMPT},
                {"role": "user", "content": item["question"]},
                {"role": "assistant", "content": f"{item['answer'][0]}."},
            ]
        }
        for item in items
        if item["answerable"]
    ]


def _train(name: str, data: Path, method: str, steps: int, b: Budget, out: Path, args) -> tuple:
    """Run one training; return (run result, wall seconds including model loading)."""
    from tuneforge.train import load_config, train

    config = load_config(
        None,
        {
            "data": str(data),
            "model": args["model"],
            "method": method,
            "out": str(out / "runs" / name),
            "max_steps": steps,
            "lr": LEARNING_RATES[method],
            "batch_size": b.batch_size,
            "max_length": MAX_LENGTH,
            "lora_r": b.lora_r,
            "lora_alpha": b.lora_alpha,
            "warmup_ratio": 0.1,
            "device": args["device"],
            "force": True,
            "progress": args["progress"],
            "num_threads": args["num_threads"],
        },
    )
    start = time.perf_counter()
    result = train(config, home=args["home"], log=lambda line: None)
    return result, time.perf_counter() - start


def _loss_curve(name: str, run_dir: Path) -> LossCurve:
    from tuneforge.train.metrics import read_metrics

    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    return LossCurve(name, [int(r["step"]) for r in records], [float(r["loss"]) for r in records])


@dataclass
class TaskInputs:
    """What one task's arms are asked, and what they retrieve from.

    Attributes:
        task: the task's row of the table.
        items: evaluation items.
        store: the store the arms with retrieval search (a ``RagStore``).
        settings: generation settings.
        schema: JSON schema for the ``json`` metric (None for other tasks).
    """

    task: Task
    items: list[dict]
    store: RagStore
    settings: GenerationSettings
    schema: Mapping | None = None


def arm_responder(arm: Arm, inputs: TaskInputs, model, tokenizer) -> Responder:
    """How ``arm`` answers ``inputs``' items: the model alone, or with retrieval in the task's
    prompt format."""
    if arm.rag:
        return rag_responder(
            model,
            tokenizer,
            inputs.store,
            inputs.settings,
            top_k=RAG_TOP_K,
            prompt_format=inputs.task.prompt_format,
        )
    return plain_responder(model, tokenizer, inputs.settings, inputs.task.plain_system)


def run_arms(
    tasks: list[TaskInputs],
    model_for: Callable[[Arm, Task], object],
    tokenizer,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> list[ArmResult]:
    """Every arm on every task (the table of :mod:`tuneforge.evaluate.arms`), one result each.

    Args:
        tasks: the tasks with their items, stores and settings.
        model_for: the model an arm runs on for a task (the base, or the task's fine-tune).
        tokenizer: the tokenizer shared by the base and its fine-tunes.
        progress: show progress bars.
        log: where one line per (task, arm) goes.
    """
    results = []
    for inputs in tasks:
        task = inputs.task
        for arm in arms_for(task):
            log(f"{task.name}: {arm.name} ({len(inputs.items)} prompts)")
            model = model_for(arm, task)
            result = evaluate(
                model,
                tokenizer,
                inputs.items,
                task.metrics_for(arm),
                schema=inputs.schema,
                responder=arm_responder(arm, inputs, model, tokenizer),
                progress=progress,
            )
            results.append(
                ArmResult(arm.name, task.name, result.metrics, _samples(result.rows, task.verdict))
            )
    return results


def _samples(rows: list[dict], verdict_key: str, count: int = 2) -> list[dict]:
    return [
        {
            "question": row["prompt"],
            "reply": row["reply"],
            "verdict": f"{verdict_key}={row.get(verdict_key)}",
        }
        for row in rows[:count]
    ]


def _mutate_fact(items: list[dict], docs: Path) -> tuple[dict, str, str, Path] | None:
    """Pick an answerable question whose numeric answer is written in its document."""
    for item in items:
        if not item["answerable"] or not item["source"]:
            continue
        answer = item["answer"][0]
        path = docs / item["source"][0]
        if (
            not re.search(r"\d", answer)
            or not path.exists()
            or answer not in path.read_text(encoding="utf-8")
        ):
            continue
        match = re.search(r"\d", answer)
        digit = str((int(match.group()) + 3) % 10 or 4)
        new = answer[: match.start()] + digit + answer[match.end() :]
        return item, answer, new, path
    return None


def compare(
    out: Path,
    budget: str | Budget = "quick",
    model: str = "default",
    device: str = "auto",
    home: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    num_threads: int | None = None,
) -> Comparison:
    """Run the comparison and save ``results.json`` into ``out`` (the report is written apart).

    Args:
        out: output folder (runs, stores, data and ``results.json``).
        budget: ``quick``, ``full`` or a :class:`Budget`.
        model: base model reference.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        home: tuneforge cache root (default ``$TUNEFORGE_HOME``).
        progress: show progress bars.
        log: where phase lines go.
        num_threads: torch CPU threads for training and inference (None: torch's default). On a
            machine shared with other jobs, 1 thread can be several times faster than 2.

    Raises:
        ConfigError: an unknown budget.
    """
    from tuneforge.adapters import attach_adapter
    from tuneforge.evaluate.results import save_comparison
    from tuneforge.generation import GenerationSettings
    from tuneforge.models import load_model
    from tuneforge.rag import RagStore, load_embedder
    from tuneforge.tasks import json_orders
    from tuneforge.tasks.knowledge_base import corpus_dir

    if isinstance(budget, Budget):
        b, budget = budget, "custom"
    elif budget in BUDGETS:
        b = BUDGETS[budget]
    else:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    started = time.perf_counter()

    def step(message: str) -> None:
        log(f"[compare {time.perf_counter() - started:6.0f} s] {message}")

    # -- data ---------------------------------------------------------------------------------
    all_kb = knowledge_items()
    answerable = [i for i in all_kb if i["answerable"]]
    kb_eval = (
        _spread(answerable, b.kb_answerable)
        + [i for i in all_kb if not i["answerable"]][: b.kb_unanswerable]
    )
    json_eval = [
        {"prompt": r["prompt"], "system": r["system"], "expected": r["expected"]}
        for r in json_orders.load_records("test")[: b.json_prompts]
    ]
    general_q = load_eval_data(general_asset("questions.jsonl"))[: b.general_questions]
    general_text = load_eval_data(general_asset("text.jsonl"))
    knowledge_data = _write_jsonl(
        out / "data" / "knowledge_qa.jsonl", knowledge_training_records(all_kb)
    )
    settings = GenerationSettings(max_new_tokens=b.max_new_tokens)
    args = {
        "model": model,
        "device": device,
        "home": home,
        "progress": progress,
        "num_threads": num_threads,
    }

    # -- training -----------------------------------------------------------------------------
    trainings = [  # (run name, data, method, optimizer steps)
        ("knowledge-lora", knowledge_data, "lora", b.knowledge_steps),
        ("knowledge-full", knowledge_data, "full", b.knowledge_steps),
        ("json-lora", json_orders.asset_path("train"), "lora", b.json_steps),
    ]
    runs, train_seconds = {}, {}
    for name, data, method, steps in trainings:
        step(f"training {name} ({steps} steps)")
        runs[name], train_seconds[name] = _train(name, data, method, steps, b, out, args)
    curves = [_loss_curve(name, runs[name].run_dir) for name, *_ in trainings]

    # -- stores -------------------------------------------------------------------------------
    step("ingesting the knowledge base and the JSON examples")
    kb_docs = out / "kb_docs"
    shutil.rmtree(kb_docs, ignore_errors=True)
    shutil.copytree(corpus_dir(), kb_docs)
    embedder = load_embedder()
    for folder in ("stores/kb", "stores/json_examples"):
        shutil.rmtree(out / folder, ignore_errors=True)
    kb_store = RagStore(out / "stores" / "kb", embedder=embedder)
    kb_store.ingest(kb_docs, progress=False)
    examples = [
        {"text": f"Request: {r['prompt']}\nJSON: {r['answer']}"}
        for r in json_orders.load_records("train")[: b.json_examples]
    ]
    examples_file = _write_jsonl(out / "data" / "json_examples.jsonl", examples)
    json_store = RagStore(out / "stores" / "json_examples", embedder=embedder)
    json_store.ingest(examples_file, progress=False)

    # -- the arms × tasks -----------------------------------------------------------------------
    prepared = {  # task -> (items, store, settings, schema)
        "knowledge": (kb_eval, kb_store, settings, None),
        "json": (
            json_eval,
            json_store,
            GenerationSettings(max_new_tokens=b.json_max_new_tokens),
            json_orders.SCHEMA,
        ),
    }
    tasks = [TaskInputs(task, *prepared[task.name]) for task in COMPARE_TASKS]

    def loaded():
        return load_model(model, device=device, home=home, progress=False)

    base = loaded()
    bm, tok = base.model, base.tokenizer
    tuned: dict[str, object] = {}  # training run name -> base + its adapter, loaded once

    def tuned_model(run: str):
        if run not in tuned:
            tuned[run] = attach_adapter(loaded().model, runs[run].output_dir)
        return tuned[run]

    def model_for(arm: Arm, task: Task):
        return bm if arm.adapter is None else tuned_model(task.adapters[arm.adapter])

    arms = run_arms(tasks, model_for, tok, progress, step)

    # -- forgetting ---------------------------------------------------------------------------
    km = tuned_model("knowledge-lora")
    tuned.clear()  # free the other fine-tunes before loading the full one
    forgetting = []
    full_model = load_model(
        str(runs["knowledge-full"].output_dir), device=device, home=home, progress=False
    ).model
    for method, steps, model_ in (
        ("base", 0, bm),
        ("full", b.knowledge_steps, full_model),
        ("lora", b.knowledge_steps, km),
    ):
        step(f"forgetting: {method}")
        ppl = evaluate(model_, tok, general_text, ["perplexity"]).metrics["perplexity"]
        acc = evaluate(
            model_,
            tok,
            general_q,
            ["contains_answer"],
            responder=plain_responder(model_, tok, settings),
        )
        forgetting.append(ForgettingRow(method, steps, ppl, acc.metrics["contains_answer"]))
    del full_model, km

    # -- cost to update one fact --------------------------------------------------------------
    update = None
    picked = _mutate_fact(answerable, kb_docs)
    if picked is not None:
        item, old, new, path = picked
        step(f"update cost: {path.name}: {old!r} -> {new!r}, re-ingest")
        path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
        start = time.perf_counter()
        kb_store.ingest(kb_docs, progress=False)
        reingest_s = time.perf_counter() - start
        reply = rag_responder(bm, tok, kb_store, settings, top_k=RAG_TOP_K)(
            {"prompt": item["question"]}
        )
        from tuneforge.evaluate.metrics import contains_answer

        update = UpdateCost(
            fact=f"{path.name}: {old!r} changed to {new!r}; base+RAG then answered {reply.text!r}",
            reingest_seconds=reingest_s,
            retrain_seconds=train_seconds["knowledge-lora"],
            reingest_recalled=contains_answer(reply.text, new),
        )

    comparison = Comparison(
        model=model,
        budget=budget,
        settings={
            **asdict(b),
            "lora_lr": LEARNING_RATES["lora"],
            "full_lr": LEARNING_RATES["full"],
            "rag_top_k": RAG_TOP_K,
            "knowledge_train_pairs": len(knowledge_training_records(all_kb)),
            "note": "the fine-tuned arm is asked the questions it was trained on (its best case)",
        },
        arms=arms,
        update_cost=update,
        forgetting=forgetting,
        loss_curves=curves,
        seconds_total=time.perf_counter() - started,
    )
    save_comparison(comparison, out / "results.json")
    step(f"done; wrote {out / 'results.json'}")
    return comparison
