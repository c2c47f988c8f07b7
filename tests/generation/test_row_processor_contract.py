"""The contract of ``Row.logits_processor``, the hook constrained decoding plugs into.

Any decoding path under ``generate_rows`` (the ``model.generate`` one, or a faster one) must
keep it; JSON-schema grammars (``JsonGrammar.row_processor()``) rely on every point:

1. the processor is called before each new token of its own row, once, with that row's new
   token ids so far (a list of ints, not shared with the decoder) and its next-token scores
   (a 1-D tensor, shape ``[vocab]`` = the model head's width); never after the row ended, and
   never with another row's tokens;
2. the tensor it returns is what the token is picked from, greedy or sampled (temperature and
   top-p apply after it), whether it changed ``scores`` in place or built a new tensor;
3. rows without a processor decode as they would alone;
4. a processor with ``is_complete`` (a ``GrammarProcessor``) is asked once the row ended, with
   the row's whole reply as token ids, and decides ``finish_reason``: ``"stop"`` if complete,
   ``"length"`` if not, whatever ended the row (a stop token, ``max_new_tokens``).
"""

from __future__ import annotations

import pytest
import torch

from tuneforge.generation import (
    GenerationSettings,
    GrammarProcessor,
    Row,
    chat_messages,
    generate_rows,
    prompt_ids,
)

GREEDY = {"max_new_tokens": 24}
SAMPLED = {"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.9, "seed": 11}


class Script:
    """Forces the row to write ``target`` token by token and records every call.

    ``in_place``: mask ``scores`` itself and return it (as ``JsonRowProcessor`` does on CPU),
    else return a new tensor. ``complete``: None for a plain processor, else what
    ``is_complete`` answers (it is then a ``GrammarProcessor``).
    """

    def __init__(self, target: list[int], in_place: bool = True, complete: bool | None = None):
        self.target = target
        self.in_place = in_place
        self.calls: list[list[int]] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.completed_with: list[list[int]] = []
        if complete is not None:
            self.is_complete = self._answer(complete)

    def __call__(self, new_ids: list[int], scores: torch.Tensor) -> torch.Tensor:
        self.calls.append(list(new_ids))
        self.shapes.add(tuple(scores.shape))
        new_ids.append(-1)  # the list is the processor's own: this must not reach the decoder
        wanted = self.target[len(self.calls) - 1]
        if self.in_place:
            scores.fill_(float("-inf"))
            scores[wanted] = 0.0
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[wanted] = 0.0
        return forced

    def _answer(self, complete: bool):
        def is_complete(new_ids: list[int]) -> bool:
            self.completed_with.append(list(new_ids))
            return complete

        return is_complete


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_row(tokenizer, prompt: str, processor=None, **settings) -> Row:
    return Row(
        prompt_ids(tokenizer, chat_messages(prompt)),
        GenerationSettings(**{**GREEDY, **settings}),
        logits_processor=processor,
    )


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "new-tensor"])
def test_each_processor_sees_its_own_row_and_its_scores_are_what_is_picked(lm, settings, in_place):
    model, tokenizer = lm
    vocab = model.get_output_embeddings().weight.shape[0]
    ends = [*tokens(tokenizer, ' {"city": "Oslo"}'), tokenizer.eos_token_id]
    cut = tokens(tokenizer, " one two three four five six seven")
    first, third = Script(ends, in_place), Script(cut, in_place)
    rows = [
        make_row(tokenizer, "Where?", first, **settings),
        make_row(tokenizer, "Hello!", None, **settings),
        make_row(tokenizer, "Count", third, **{**settings, "max_new_tokens": len(cut) - 2}),
    ]
    free_alone = generate_rows(model, tokenizer, [make_row(tokenizer, "Hello!", **settings)])[0]
    replies = generate_rows(model, tokenizer, rows)

    assert (replies[0].text, replies[0].finish_reason) == (' {"city": "Oslo"}', "stop")
    assert replies[0].completion_tokens == len(ends)
    assert first.calls == [ends[:n] for n in range(len(ends))]  # once per token, never after EOS
    assert replies[1].text == free_alone.text  # the free row decodes as alone
    assert replies[2].text == tokenizer.decode(cut[: len(cut) - 2])
    assert replies[2].finish_reason == "length"
    assert third.calls == [cut[:n] for n in range(len(cut) - 2)]  # never past max_new_tokens
    assert first.shapes == third.shapes == {(vocab,)}


def test_a_grammar_decides_the_finish_reason_with_the_whole_reply(lm):
    model, tokenizer = lm
    ends = [*tokens(tokenizer, " done"), tokenizer.eos_token_id]
    cut = tokens(tokenizer, " one two three four")
    plain_end, plain_cut = Script(ends), Script(cut)
    unfinished, finished = Script(ends, complete=False), Script(cut, complete=True)
    assert isinstance(unfinished, GrammarProcessor) and not isinstance(plain_end, GrammarProcessor)
    rows = [
        make_row(tokenizer, "a", plain_end),
        make_row(tokenizer, "b", plain_cut, max_new_tokens=len(cut)),
        make_row(tokenizer, "c", unfinished),  # ends on EOS, but the grammar is not satisfied
        make_row(tokenizer, "d", finished, max_new_tokens=len(cut)),  # cut, but complete
    ]
    replies = generate_rows(model, tokenizer, rows)
    assert [r.finish_reason for r in replies] == ["stop", "length", "length", "stop"]
    assert unfinished.completed_with == [ends]
    assert finished.completed_with == [cut]
