"""``tuneforge compare``: every arm of :mod:`tuneforge.evaluate.arms` on every task, measured.

Two sources of tasks, one pipeline:

- the bundled tasks (no data options): questions about the fictional knowledge base, the
  strict-JSON orders task and the combined task (the knowledge questions answered as JSON);
- the user's data: ``--docs DIR --questions qa.jsonl`` (a knowledge task over their documents),
  plus ``--train task.jsonl --schema s.json`` (their form task).

What it runs, in order (every output under ``out``):

1. Data, checked before anything loads (:mod:`tuneforge.evaluate.compare_data`): the questions
   split into *trained* and *held-out* (``holdout``), the form task's records.
2. Stores (``stores/``): the documents (the bundled ones are copied to ``kb_docs/`` first, so one
   can be edited) and the form task's training examples (retrieved as demonstrations). Every
   source a question names is checked against the store here.
3. Training (``runs/``), on the trained questions only: ``knowledge-lora``, a LoRA on them as
   Q/A pairs; ``knowledge-full``, a full fine-tune on the same pairs at the same step count
   (forgetting only); ``knowledge-raft``, a LoRA on RAFT examples built over the store
   (:mod:`tuneforge.rag.raft`: the prompts retrieval builds, oracle kept or removed, cited
   targets); ``json-lora``, a LoRA on the form task; ``json-dpo``, DPO from ``json-lora``'s
   adapter on the form task's preference pairs (the bundled task has them). With the combined
   task, the knowledge fine-tunes learn both shapes (plain and JSON). Each run is timed.
4. The arms × tasks on held-out questions, and the fine-tuned arms on trained questions too
   (memorised vs generalised); every rate with its 95% interval.
5. Forgetting: general perplexity and general-question accuracy of base, full and LoRA.
6. Cost to update one fact: edit one bundled document, re-ingest, ask base+RAG again (the
   user's documents are never edited: their cost is the measured ingest time per document).

The ``quick`` budget is a smoke test sized for a CPU: few questions and a few dozen optimizer
steps, so its intervals are wide and the report says so. ``full`` asks every held-out question
and trains ~10x longer.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import ConfigError
from tuneforge.evaluate.arms import COMBINED, JSON, KNOWLEDGE, Arm, Task, arms_for
from tuneforge.evaluate.compare_data import (
    pick_questions,
    qa_training_records,
    read_compare_inputs,
    split_questions,
)
from tuneforge.evaluate.constrained import constrained_responder
from tuneforge.evaluate.results import ArmResult, Comparison, ForgettingRow, LossCurve
from tuneforge.evaluate.runner import (
    Responder,
    evaluate,
    load_eval_data,
    plain_responder,
    rag_responder,
)
from tuneforge.evaluate.update_cost import measure_update_cost

if TYPE_CHECKING:
    from tuneforge.generation import GenerationSettings
    from tuneforge.rag import RagStore


@dataclass
class Budget:
    """How much to train and ask, and the fine-tunes' shape.

    Attributes:
        kb_answerable: held-out answerable questions asked (at most; spread over the split).
        kb_unanswerable: held-out unanswerable questions asked (at most).
        kb_trained: trained answerable questions asked of the fine-tuned arms (memorised).
        json_prompts: held-out form-task prompts asked.
        general_questions: general-knowledge questions asked (forgetting; of 20).
        knowledge_steps: optimizer steps of the Q/A fine-tunes (LoRA and full alike).
        raft_epochs: passes of the RAFT LoRA fine-tune over its examples (optimizer steps =
            ``ceil(raft_epochs * examples / batch_size)``, at least ``raft_min_steps``): measured
            on the bundled questions, one pass beat two, which taught the model to refuse
            questions it was not sure of (see docs/evaluate.md).
        raft_min_steps: fewest optimizer steps of the RAFT fine-tune (small question sets).
        json_steps: optimizer steps of the form-task LoRA fine-tune.
        dpo_steps: optimizer steps of DPO after it (batches of ``batch_size`` pairs).
        json_examples: bundled training examples put in the demonstration store.
        batch_size: examples per optimizer step.
        max_new_tokens: reply length cap of the knowledge and general questions (tokens).
        json_max_new_tokens: reply length cap of the form task (tokens; an order is ~33).
        combined_max_new_tokens: reply length cap of the combined task (tokens; ~20 needed).
        lora_r: LoRA rank of every LoRA fine-tune.
        lora_alpha: LoRA scaling numerator (peft's ``lora_alpha``).
        raft_oracle_share: share of RAFT examples that keep the oracle chunk (RAFT's P).
        raft_examples_per_question: RAFT examples per trained question (each its own draw).
    """

    kb_answerable: int
    kb_unanswerable: int
    kb_trained: int
    json_prompts: int
    general_questions: int
    knowledge_steps: int
    raft_epochs: float
    json_steps: int
    json_examples: int
    dpo_steps: int
    batch_size: int = 8
    max_new_tokens: int = 40
    json_max_new_tokens: int = 64
    combined_max_new_tokens: int = 48
    lora_r: int = 16
    lora_alpha: float = 32.0
    raft_oracle_share: float = 0.8
    raft_examples_per_question: int = 2
    raft_min_steps: int = 30


BUDGETS = {
    "quick": Budget(
        kb_answerable=16,
        kb_unanswerable=6,
        kb_trained=8,
        json_prompts=6,
        general_questions=8,
        knowledge_steps=16,
        raft_epochs=1.0,
        json_steps=16,
        json_examples=100,
        dpo_steps=8,
        batch_size=4,
        max_new_tokens=32,
    ),
    "full": Budget(
        kb_answerable=1000,
        kb_unanswerable=1000,
        kb_trained=20,
        json_prompts=60,
        general_questions=20,
        knowledge_steps=150,
        raft_epochs=2.0,
        json_steps=150,
        json_examples=1200,
        dpo_steps=60,
    ),
}

LEARNING_RATES = {"lora": 1e-3, "full": 5e-5}
"""Learning rate per method (the usual LoRA range is ~10x a full fine-tune's)."""

DPO = {"objective": "dpo", "beta": 0.1, "lr": 5e-5}
"""The DPO fine-tune's settings (examples/dpo.yaml's): on top of the LoRA ones, from the
supervised adapter, whose model is the reference."""

MAX_LENGTH = 256
"""Training sequence length (tokens): every Q/A pair and JSON example fits."""

RAFT_MAX_LENGTH = 1024
"""Training sequence length of RAFT examples (tokens): three retrieved chunks and the question."""

RAG_TOP_K = 3
"""Hits retrieved per question by the arms with retrieval, and shown in RAFT examples."""

DEFAULT_HOLDOUT = 0.3
"""Share of the questions held out from every fine-tune."""


def general_asset(name: str) -> Path:
    """A file of ``tuneforge/assets/general`` (``questions.jsonl`` or ``text.jsonl``)."""
    return Path(str(resources.files("tuneforge") / "assets" / "general" / name))


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    from tuneforge.atomic import write_text

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def _train(
    name: str,
    data: Path,
    method: str,
    steps: int,
    b: Budget,
    out: Path,
    args,
    max_length: int = MAX_LENGTH,
    overrides: Mapping | None = None,
) -> tuple:
    """Run one training; return (run result, wall seconds including model loading).

    ``overrides`` replace config values (the DPO run's objective, starting adapter, lr).
    """
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
            "max_length": max_length,
            "lora_r": b.lora_r,
            "lora_alpha": b.lora_alpha,
            "warmup_ratio": 0.1,
            "seed": args.get("seed", 0),
            "device": args["device"],
            "force": True,
            "progress": args["progress"],
            "num_threads": args["num_threads"],
            **(overrides or {}),
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
        items: evaluation items no fine-tune was trained on (every arm is asked them).
        store: the store the arms with retrieval search (a ``RagStore``).
        settings: generation settings.
        schema: JSON schema for the ``json`` metric (None for other tasks).
        trained_items: items the fine-tunes were trained on, asked of the fine-tuned arms when
            the task reports what they memorised.
    """

    task: Task
    items: list[dict]
    store: RagStore
    settings: GenerationSettings
    schema: Mapping | None = None
    trained_items: list[dict] = field(default_factory=list)


def arm_responder(arm: Arm, inputs: TaskInputs, model, tokenizer) -> Responder:
    """How ``arm`` answers ``inputs``' items: the model alone, under the task's JSON schema, or
    with retrieval in the task's prompt format."""
    if arm.constrained:
        return constrained_responder(
            model, tokenizer, inputs.schema, inputs.settings, inputs.task.plain_system
        )
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
    """Every arm on every task (the table of :mod:`tuneforge.evaluate.arms`), one result each,
    plus one on the trained items for each fine-tuned arm of a task that reports memorising.

    Args:
        tasks: the tasks with their items, stores and settings.
        model_for: the model an arm runs on for a task (the base, or the task's fine-tune).
        tokenizer: the tokenizer shared by the base and its fine-tunes.
        progress: show progress bars.
        log: where one line per (task, arm, split) goes.
    """
    results = []
    for inputs in tasks:
        task = inputs.task
        for arm in arms_for(task):
            splits = [("held-out", inputs.items)]
            if task.memorised and arm.adapter is not None and inputs.trained_items:
                splits.append(("trained", inputs.trained_items))
            model = model_for(arm, task)
            for split, items in splits:
                log(f"{task.name}: {arm.name} ({len(items)} {split} prompts)")
                result = evaluate(
                    model,
                    tokenizer,
                    items,
                    task.metrics_for(arm),
                    schema=inputs.schema,
                    responder=arm_responder(arm, inputs, model, tokenizer),
                    progress=progress,
                )
                results.append(
                    ArmResult(
                        arm.name,
                        task.name,
                        result.metrics,
                        _samples(result.rows, task.score),
                        split,
                        result.intervals,
                    )
                )
    return results


def _samples(rows: list[dict], verdict_key: str) -> list[dict]:
    """The first reply, and the first to an unanswerable question when there is one (whose
    verdict is whether it refused, when the task's verdict does not apply to it)."""
    picked = rows[:1] + [row for row in rows[1:] if row.get("answerable") is False][:1]
    samples = []
    for row in picked:
        key = verdict_key if verdict_key in row or "refused" not in row else "refused"
        samples.append(
            {"question": row["prompt"], "reply": row["reply"], "verdict": f"{key}={row.get(key)}"}
        )
    return samples


def compare(
    out: Path,
    budget: str | Budget = "quick",
    model: str = "default",
    device: str = "auto",
    home: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    num_threads: int | None = None,
    *,
    docs: Path | str | None = None,
    questions: Path | str | None = None,
    train: Path | str | None = None,
    schema: Path | str | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = 0,
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
        docs: the user's documents (file or folder); with ``questions``.
        questions: the user's questions about them (:mod:`tuneforge.rag.qa_records`).
        train: the user's form task (chat records ending in a JSON reply); with ``schema``.
        schema: the JSON schema of the form task's replies.
        holdout: share of the questions (and form records) held out from the fine-tunes.
        seed: seed of the splits, the RAFT draws and the trainings.

    Raises:
        ConfigError: an unknown budget, a data option without its partner, a bad ``holdout``.
        DataError: an invalid data file or a question naming a source not in ``docs``
            (``file:line``), before any model loads.
    """
    from tuneforge.adapters import attach_adapter
    from tuneforge.atomic import write_json
    from tuneforge.evaluate.results import save_comparison
    from tuneforge.generation import GenerationSettings
    from tuneforge.models import load_model
    from tuneforge.rag import RagStore, load_embedder
    from tuneforge.rag.qa_records import resolve_sources
    from tuneforge.rag.raft import RaftSettings, build_raft_examples, write_raft_data
    from tuneforge.tasks import sourced_answers
    from tuneforge.tasks.knowledge_base import corpus_dir

    if isinstance(budget, Budget):
        b, budget = budget, "custom"
    elif budget in BUDGETS:
        b = BUDGETS[budget]
    else:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    data, task_rows = read_compare_inputs(
        b.json_prompts, b.json_examples, docs, questions, train, schema, holdout, seed
    )
    split = split_questions(data.records, holdout, seed)
    combined = COMBINED in task_rows
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    started = time.perf_counter()

    def step(message: str) -> None:
        log(f"[compare {time.perf_counter() - started:6.0f} s] {message}")

    # -- stores (every named source checked before training) ---------------------------------
    step(f"ingesting the documents ({data.description})")
    kb_docs = data.docs
    if kb_docs is None:
        kb_docs = out / "kb_docs"
        shutil.rmtree(kb_docs, ignore_errors=True)
        shutil.copytree(corpus_dir(), kb_docs)
    embedder = load_embedder()
    for folder in ("stores/kb", "stores/json_examples"):
        shutil.rmtree(out / folder, ignore_errors=True)
    kb_store = RagStore(out / "stores" / "kb", embedder=embedder)
    ingest = kb_store.ingest(kb_docs, progress=False)
    resolve_sources(data.records, kb_store.documents())
    json_store = None
    if data.form is not None:
        examples_file = _write_jsonl(
            out / "data" / "json_examples.jsonl", [{"text": t} for t in data.form.examples]
        )
        json_store = RagStore(out / "stores" / "json_examples", embedder=embedder)
        json_store.ingest(examples_file, progress=False)

    # -- training data ------------------------------------------------------------------------
    json_system = sourced_answers.SYSTEM_PROMPT if combined else None
    knowledge_pairs = qa_training_records(split.trained, json_system)
    knowledge_data = _write_jsonl(out / "data" / "knowledge_qa.jsonl", knowledge_pairs)
    step("building RAFT examples over the store")
    raft_settings = RaftSettings(
        top_k=RAG_TOP_K,
        oracle_share=b.raft_oracle_share,
        examples_per_question=b.raft_examples_per_question,
        seed=seed,
    )
    raft_examples, raft_report = build_raft_examples(split.trained, kb_store, raft_settings)
    raft_reports = [raft_report]
    if combined:  # the same builder, the combined task's JSON target and instruction
        json_settings = replace(
            raft_settings, target_format="json", client_system=json_system, seed=seed + 1
        )
        json_examples, json_report = build_raft_examples(split.trained, kb_store, json_settings)
        raft_examples += json_examples
        raft_reports.append(json_report)
    raft_data = write_raft_data(out / "data" / "raft.jsonl", raft_examples)
    raft_steps = max(b.raft_min_steps, math.ceil(b.raft_epochs * len(raft_examples) / b.batch_size))
    write_json(out / "data" / "raft.report.json", [asdict(r) for r in raft_reports])
    raft_summary = " · ".join(f"{r.settings['target_format']}: {r.summary()}" for r in raft_reports)
    step(raft_summary)

    settings = GenerationSettings(max_new_tokens=b.max_new_tokens)
    args = {
        "model": model,
        "device": device,
        "home": home,
        "progress": progress,
        "num_threads": num_threads,
        "seed": seed,
    }

    # -- training -----------------------------------------------------------------------------
    trainings = [  # (run name, data, method, optimizer steps, max length, overrides)
        ("knowledge-lora", knowledge_data, "lora", b.knowledge_steps, MAX_LENGTH, None),
        ("knowledge-full", knowledge_data, "full", b.knowledge_steps, MAX_LENGTH, None),
        ("knowledge-raft", raft_data, "lora", raft_steps, RAFT_MAX_LENGTH, None),
    ]
    if data.form is not None:
        form_data = _write_jsonl(out / "data" / "form_train.jsonl", data.form.train)
        trainings.append(("json-lora", form_data, "lora", b.json_steps, MAX_LENGTH, None))
    if data.form is not None and data.form.preference is not None:
        sft_adapter = str(out / "runs" / "json-lora" / "adapter")
        dpo = {**DPO, "init_adapter": sft_adapter}
        trainings.append(("json-dpo", data.form.preference, "lora", b.dpo_steps, MAX_LENGTH, dpo))
    runs, train_seconds = {}, {}
    for name, path, method, steps, max_length, overrides in trainings:
        step(f"training {name} ({steps} steps)")
        runs[name], train_seconds[name] = _train(
            name, path, method, steps, b, out, args, max_length, overrides
        )
    curves = [_loss_curve(name, runs[name].run_dir) for name, *_ in trainings]

    # -- the arms × tasks -----------------------------------------------------------------------
    held_out = pick_questions(split.held_out, b.kb_answerable, b.kb_unanswerable)
    memorised = pick_questions(split.trained, b.kb_trained, 0)
    combined_settings = GenerationSettings(max_new_tokens=b.combined_max_new_tokens)
    prepared = {
        "knowledge": TaskInputs(
            KNOWLEDGE,
            [r.eval_item() for r in held_out],
            kb_store,
            settings,
            trained_items=[r.eval_item() for r in memorised],
        )
    }
    if combined:
        prepared["combined"] = TaskInputs(
            COMBINED,
            [sourced_answers.eval_item(r) for r in held_out],
            kb_store,
            combined_settings,
            sourced_answers.SCHEMA,
            [sourced_answers.eval_item(r) for r in memorised],
        )
    if data.form is not None:
        adapters = JSON.adapters if data.form.preference else {"fine-tuned": "json-lora"}
        prepared["json"] = TaskInputs(
            replace(JSON, adapters=adapters),
            data.form.test,
            json_store,
            GenerationSettings(max_new_tokens=b.json_max_new_tokens),
            data.form.schema,
        )
    tasks = [prepared[task.name] for task in task_rows]

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
    general_q = load_eval_data(general_asset("questions.jsonl"))[: b.general_questions]
    general_text = load_eval_data(general_asset("text.jsonl"))
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
    update = measure_update_cost(
        data,
        split.held_out + split.trained,
        kb_docs,
        kb_store,
        ingest,
        bm,
        tok,
        settings,
        RAG_TOP_K,
    )
    if update is not None:
        update.retrain_seconds = train_seconds["knowledge-lora"]
        step(f"update cost: {update.fact}")

    comparison = Comparison(
        model=model,
        budget=budget,
        settings={
            "data": data.description,
            **asdict(b),
            "lora_lr": LEARNING_RATES["lora"],
            "full_lr": LEARNING_RATES["full"],
            "rag_top_k": RAG_TOP_K,
            "holdout": holdout,
            "seed": seed,
            "questions_trained": len(split.trained),
            "questions_held_out": len(split.held_out),
            "knowledge_train_pairs": len(knowledge_pairs),
            "raft_data": raft_summary,
            "raft_steps": raft_steps,
            "note": "every arm is asked held-out questions; the fine-tuned arms also trained ones",
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
