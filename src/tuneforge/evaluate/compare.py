"""``tuneforge compare``: base, base+RAG, fine-tuned and fine-tuned+RAG on the bundled tasks.

What it runs, in order (every output under ``out``):

1. Training (``runs/``): a LoRA fine-tune on the knowledge base's facts as Q/A pairs
   (``knowledge-lora``), a full fine-tune on the same pairs at the same step count
   (``knowledge-full``, for forgetting only), and a LoRA fine-tune on the strict-JSON task
   (``json-lora``). Each is timed; the knowledge LoRA's wall time is what re-training costs when
   a fact changes.
2. Stores (``stores/``): the knowledge base documents (copied to ``kb_docs/`` so one can be
   edited), and the JSON task's training examples (retrieved as demonstrations).
3. The four arms on (a) knowledge questions (answerable and unanswerable) and (b) JSON prompts.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.evaluate.results import ArmResult, Comparison, ForgettingRow, LossCurve, UpdateCost
from tuneforge.evaluate.runner import (
    QA_SYSTEM_PROMPT,
    Response,
    evaluate,
    load_eval_data,
    plain_responder,
    rag_responder,
)


@dataclass
class Budget:
    """How much to train and ask.

    Attributes:
        kb_answerable: answerable knowledge questions asked (of 35).
        kb_unanswerable: unanswerable knowledge questions asked (of 6).
        json_prompts: held-out JSON-task prompts asked.
        general_questions: general-knowledge questions asked (forgetting; of 20).
        knowledge_steps: optimizer steps of the knowledge fine-tunes (LoRA and full alike).
        json_steps: optimizer steps of the JSON LoRA fine-tune.
        json_examples: training examples put in the JSON demonstration store.
        batch_size: examples per optimizer step.
        max_new_tokens: reply length cap (tokens).
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

LORA_LR = 1e-3
"""LoRA learning rate (the usual LoRA range is ~10x a full fine-tune's)."""
FULL_LR = 5e-5
"""Full fine-tuning learning rate."""

JSON_RAG_TEMPLATE = "{system}\n\nExamples of requests and the JSON they become:\n\n{examples}"


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


def _train(name: str, data: Path, method: str, steps: int, lr: float, out: Path, args) -> tuple:
    """Run one training; return (run result, wall seconds including model loading)."""
    from tuneforge.train import TrainConfig, train

    config = TrainConfig(
        data=str(data),
        model=args["model"],
        method=method,
        out=str(out / "runs" / name),
        max_steps=steps,
        lr=lr,
        batch_size=args["batch_size"],
        max_length=256,
        lora_r=16,
        lora_alpha=32.0,
        warmup_ratio=0.1,
        device=args["device"],
        force=True,
        progress=args["progress"],
        num_threads=args["num_threads"],
    )
    start = time.perf_counter()
    result = train(config, home=args["home"], log=lambda line: None)
    return result, time.perf_counter() - start


def _loss_curve(name: str, run_dir: Path) -> LossCurve:
    from tuneforge.train.metrics import read_metrics

    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    return LossCurve(name, [int(r["step"]) for r in records], [float(r["loss"]) for r in records])


def json_rag_responder(
    model, tokenizer, store, settings, top_k: int = 3
) -> Callable[[dict], Response]:
    """Retrieval for the format task: the most similar training examples as demonstrations."""
    from tuneforge.generation import generate

    def respond(item: dict) -> Response:
        start = time.perf_counter()
        hits = store.search(item["prompt"], top_k=top_k, mode="hybrid")
        system = JSON_RAG_TEMPLATE.format(
            system=item.get("system") or "", examples="\n\n".join(hit.text.strip() for hit in hits)
        )
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": item["prompt"]},
        ]
        reply = generate(model, tokenizer, messages, settings)
        return Response(reply.text.strip(), time.perf_counter() - start)

    return respond


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
    json_settings = GenerationSettings(max_new_tokens=64)
    args = {
        "model": model,
        "device": device,
        "home": home,
        "batch_size": b.batch_size,
        "progress": progress,
        "num_threads": num_threads,
    }

    # -- training -----------------------------------------------------------------------------
    step(f"training knowledge-lora ({b.knowledge_steps} steps)")
    k_lora, k_lora_s = _train(
        "knowledge-lora", knowledge_data, "lora", b.knowledge_steps, LORA_LR, out, args
    )
    step(f"training knowledge-full ({b.knowledge_steps} steps)")
    k_full, _ = _train(
        "knowledge-full", knowledge_data, "full", b.knowledge_steps, FULL_LR, out, args
    )
    step(f"training json-lora ({b.json_steps} steps)")
    j_lora, _ = _train(
        "json-lora", json_orders.asset_path("train"), "lora", b.json_steps, LORA_LR, out, args
    )
    curves = [
        _loss_curve(n, r.run_dir)
        for n, r in (("knowledge-lora", k_lora), ("knowledge-full", k_full), ("json-lora", j_lora))
    ]

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

    # -- the four arms ------------------------------------------------------------------------
    qa_metrics = ["exact_match", "contains_answer", "refusal", "latency"]
    schema = json_orders.SCHEMA
    arms: list[ArmResult] = []

    def run_arm(
        arm: str, task: str, model_, tokenizer, items, metrics, responder, verdict: str
    ) -> dict:
        step(f"{task}: {arm} ({len(items)} prompts)")
        result = evaluate(
            model_, tokenizer, items, metrics, schema=schema, responder=responder, progress=progress
        )
        arms.append(ArmResult(arm, task, result.metrics, _samples(result.rows, verdict)))
        return result.metrics

    def loaded():
        return load_model(model, device=device, home=home, progress=False)

    base = loaded()
    bm, tok = base.model, base.tokenizer
    run_arm(
        "base",
        "knowledge",
        bm,
        tok,
        kb_eval,
        qa_metrics,
        plain_responder(bm, tok, settings),
        "contains_answer",
    )
    run_arm(
        "base+rag", "knowledge", bm, tok, kb_eval, [*qa_metrics, "citation"],
        rag_responder(bm, tok, kb_store, settings), "contains_answer",
    )  # fmt: skip
    run_arm(
        "base",
        "json",
        bm,
        tok,
        json_eval,
        ["json", "latency"],
        plain_responder(bm, tok, json_settings, None),
        "schema_valid",
    )
    run_arm(
        "base+rag", "json", bm, tok, json_eval, ["json", "latency"],
        json_rag_responder(bm, tok, json_store, json_settings), "schema_valid",
    )  # fmt: skip

    km = attach_adapter(loaded().model, k_lora.output_dir)
    run_arm(
        "fine-tuned",
        "knowledge",
        km,
        tok,
        kb_eval,
        qa_metrics,
        plain_responder(km, tok, settings),
        "contains_answer",
    )
    run_arm(
        "fine-tuned+rag", "knowledge", km, tok, kb_eval, [*qa_metrics, "citation"],
        rag_responder(km, tok, kb_store, settings), "contains_answer",
    )  # fmt: skip
    jm = attach_adapter(loaded().model, j_lora.output_dir)
    run_arm(
        "fine-tuned",
        "json",
        jm,
        tok,
        json_eval,
        ["json", "latency"],
        plain_responder(jm, tok, json_settings, None),
        "schema_valid",
    )
    run_arm(
        "fine-tuned+rag", "json", jm, tok, json_eval, ["json", "latency"],
        json_rag_responder(jm, tok, json_store, json_settings), "schema_valid",
    )  # fmt: skip
    del jm

    # -- forgetting ---------------------------------------------------------------------------
    forgetting = []
    full_model = load_model(str(k_full.output_dir), device=device, home=home, progress=False).model
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
        reply = rag_responder(bm, tok, kb_store, settings)({"prompt": item["question"]})
        from tuneforge.evaluate.metrics import contains_answer

        update = UpdateCost(
            fact=f"{path.name}: {old!r} changed to {new!r}; base+RAG then answered {reply.text!r}",
            reingest_seconds=reingest_s,
            retrain_seconds=k_lora_s,
            reingest_recalled=contains_answer(reply.text, new),
        )

    comparison = Comparison(
        model=model,
        budget=budget,
        settings={
            **asdict(b),
            "lora_lr": LORA_LR,
            "full_lr": FULL_LR,
            "lora_r": 16,
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
