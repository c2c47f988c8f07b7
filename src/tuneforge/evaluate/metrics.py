"""Metrics: perplexity, QA matching, JSON/schema validity, citations, refusals, latency.

Each scoring function is pure (text in, number or verdict out) except :func:`perplexity`, which
runs a model. The runner (:mod:`tuneforge.evaluate.runner`) applies them over a data set and
averages; the report only formats what these return. Reading a reply (which ``[n]`` it cites,
whether it refuses) is ``tuneforge.rag.parse_citations`` / ``tuneforge.rag.is_refusal``, the
rules ``rag ask`` uses too.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tuneforge.rag.replies import CITATION_PATTERN, parse_citations

# --------------------------------------------------------------------------------------------
# Question answering
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "‘’“”")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ``[n]`` citations, punctuation and English articles, collapse whitespace.

    Rajpurkar et al. 2016, the normalisation of the official SQuAD evaluation script, plus the
    removal of citation markers so "Oslo [1]." matches "Oslo".
    """
    text = CITATION_PATTERN.sub(" ", text).lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(answers: str | Sequence[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else list(answers)


def exact_match(prediction: str, answers: str | Sequence[str]) -> bool:
    """True when the normalised prediction equals one normalised reference answer."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(answer) for answer in _as_list(answers))


def contains_answer(prediction: str, answers: str | Sequence[str]) -> bool:
    """True when one normalised reference answer occurs in the normalised prediction.

    Matches on word boundaries, so ``"12"`` is not found inside ``"120"``. An empty reference
    never matches.
    """
    pred = f" {normalize_answer(prediction)} "
    for answer in _as_list(answers):
        norm = normalize_answer(answer)
        if norm and f" {norm} " in pred:
            return True
    return False


# --------------------------------------------------------------------------------------------
# Refusals and hallucination
# --------------------------------------------------------------------------------------------


@dataclass
class RefusalScores:
    """How a system behaves on questions with and without an answer in the documents.

    Attributes:
        refusal_rate: refused / unanswerable questions (higher is better), in [0, 1].
        hallucination_rate: answered / unanswerable questions (lower is better) = 1 - refusal_rate.
        over_refusal_rate: refused / answerable questions (lower is better), in [0, 1].
        unanswerable: number of unanswerable questions seen.
        answerable: number of answerable questions seen.
    """

    refusal_rate: float
    hallucination_rate: float
    over_refusal_rate: float
    unanswerable: int
    answerable: int


def refusal_scores(outcomes: Iterable[tuple[bool, bool]]) -> RefusalScores:
    """Score ``(answerable, refused)`` pairs, one per question.

    A hallucination is an answer given to a question whose answer is in no document.
    Rates over an empty group are ``nan``.
    """
    counts = {"refused_unans": 0, "unans": 0, "refused_ans": 0, "ans": 0}
    for answerable, refused in outcomes:
        if answerable:
            counts["ans"] += 1
            counts["refused_ans"] += int(refused)
        else:
            counts["unans"] += 1
            counts["refused_unans"] += int(refused)
    refusal = _ratio(counts["refused_unans"], counts["unans"])
    return RefusalScores(
        refusal_rate=refusal,
        hallucination_rate=1.0 - refusal if counts["unans"] else math.nan,
        over_refusal_rate=_ratio(counts["refused_ans"], counts["ans"]),
        unanswerable=counts["unans"],
        answerable=counts["ans"],
    )


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


# --------------------------------------------------------------------------------------------
# Citations
# --------------------------------------------------------------------------------------------


def citation_correct(
    text: str, numbered_sources: Mapping[int, str], gold_sources: str | Iterable[str]
) -> bool:
    """True when the reply cites, and cites only, sources that hold the answer.

    Args:
        text: the reply, citing sources as ``[n]``.
        numbered_sources: the source (document id or path) behind each number shown in the prompt.
        gold_sources: the document(s) that hold the answer.

    Returns:
        False when nothing is cited, a number is not in the prompt, or any cited source is not a
        gold source: a wrong citation next to a right one still counts wrong.
    """
    gold = {gold_sources} if isinstance(gold_sources, str) else set(gold_sources)
    cited = parse_citations(text)
    if not cited:
        return False
    return all(n in numbered_sources and _same_source(numbered_sources[n], gold) for n in cited)


def retrieval_hit(numbered_sources: Mapping[int, str], gold_sources: str | Iterable[str]) -> bool:
    """True when a gold source is among the sources shown to the model (retrieval hit rate).

    Separates a retrieval failure (the answer was never shown) from a generation failure.
    """
    gold = {gold_sources} if isinstance(gold_sources, str) else set(gold_sources)
    return any(_same_source(source, gold) for source in numbered_sources.values())


def _same_source(source: str, gold: set[str]) -> bool:
    """A source matches a gold one by full id or by file name (stores may keep full paths)."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    return any(source == g or name == g.replace("\\", "/").rsplit("/", 1)[-1] for g in gold)


# --------------------------------------------------------------------------------------------
# Structured output
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.DOTALL)


def parse_json_reply(text: str, allow_fence: bool = False) -> tuple[object | None, str | None]:
    """Parse a reply that must be JSON and nothing else.

    Args:
        text: the reply; surrounding whitespace is ignored, any other prose makes it invalid.
        allow_fence: also accept the JSON inside one markdown code fence.

    Returns:
        ``(value, None)`` on success, ``(None, reason)`` otherwise.
    """
    body = text.strip()
    if allow_fence and (match := _FENCE.match(body)):
        body = match.group(1).strip()
    try:
        return json.loads(body), None
    except json.JSONDecodeError as err:
        return None, f"not JSON: {err.msg} at line {err.lineno} column {err.colno}"


def schema_errors(value: object, schema: Mapping) -> list[str]:
    """The JSON-schema violations of ``value`` (empty when valid), each naming its field path."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def field_accuracy(value: object, expected: Mapping[str, object]) -> float:
    """Fraction of the expected top-level fields that ``value`` reproduces exactly.

    Strings compare after trimming and case-folding; numbers compare by value (``2 == 2.0``);
    other values compare with ``==``. A value that is not an object scores 0.
    """
    if not expected:
        return math.nan
    if not isinstance(value, Mapping):
        return 0.0
    hits = sum(_same_value(value.get(key, _MISSING), want) for key, want in expected.items())
    return hits / len(expected)


_MISSING = object()


def _same_value(got: object, want: object) -> bool:
    if isinstance(got, str) and isinstance(want, str):
        return got.strip().casefold() == want.strip().casefold()
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, int | float) and isinstance(want, int | float):
        return math.isclose(got, want)
    return got == want


@dataclass
class JsonScore:
    """One structured-output reply, scored.

    Attributes:
        valid_json: the whole reply parses as JSON.
        schema_valid: it parses and satisfies the schema.
        field_accuracy: fraction of expected fields reproduced, in [0, 1].
        errors: why it failed (parse error or schema violations); empty when schema-valid.
    """

    valid_json: bool
    schema_valid: bool
    field_accuracy: float
    errors: list[str]


def score_json(
    text: str,
    schema: Mapping | None,
    expected: Mapping[str, object] | None = None,
    allow_fence: bool = False,
) -> JsonScore:
    """Score a reply that must be a JSON object satisfying ``schema`` with ``expected`` fields."""
    value, error = parse_json_reply(text, allow_fence=allow_fence)
    if error is not None:
        return JsonScore(False, False, 0.0 if expected else math.nan, [error])
    errors = schema_errors(value, schema) if schema else []
    accuracy = field_accuracy(value, expected) if expected else math.nan
    return JsonScore(True, not errors, accuracy, errors)


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Seconds per answer: mean, median, 95th percentile (nearest rank) and count."""

    mean_s: float
    p50_s: float
    p95_s: float
    count: int


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Summarise per-answer wall times (seconds); ``nan`` for an empty list."""
    if not seconds:
        return LatencyStats(math.nan, math.nan, math.nan, 0)
    ordered = sorted(seconds)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return LatencyStats(
        mean_s=statistics.fmean(ordered),
        p50_s=statistics.median(ordered),
        p95_s=ordered[rank - 1],
        count=len(ordered),
    )


# --------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------


@dataclass
class PerplexityResult:
    """Token-weighted perplexity over a set of texts.

    Attributes:
        perplexity: exp(mean negative log-likelihood per predicted token).
        nll_per_token: mean negative log-likelihood, in nats per token.
        tokens: number of predicted tokens (each text contributes its length minus one).
    """

    perplexity: float
    nll_per_token: float
    tokens: int


def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 512) -> PerplexityResult:
    """Perplexity of ``model`` on ``texts``, weighting each text by its token count.

    Each text is scored on its own (no padding, no packing), truncated to ``max_length`` tokens;
    the summed NLL over all predicted tokens is divided by their count before ``exp``, so long
    texts weigh more than short ones, as in the standard corpus-level definition.
    """
    import torch

    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
            if len(ids) < 2:
                continue
            input_ids = torch.tensor([ids], device=device)
            logits = model(input_ids=input_ids).logits.float()  # (1, T, vocab)
            nll = torch.nn.functional.cross_entropy(
                logits[0, :-1], input_ids[0, 1:], reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += len(ids) - 1
    if total_tokens == 0:
        return PerplexityResult(math.nan, math.nan, 0)
    mean = total_nll / total_tokens
    return PerplexityResult(perplexity=math.exp(mean), nll_per_token=mean, tokens=total_tokens)
