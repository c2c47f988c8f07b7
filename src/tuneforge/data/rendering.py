"""Rendering chats with the chat template, and finding which characters carry loss.

The supervised part of each assistant turn is found from the template itself, never from string
markers: for assistant turn ``i`` we render the conversation up to turn ``i`` with the generation
prompt (``P``) and up to and including turn ``i`` (``F``); the characters between ``len(P)`` and
``len(F)`` are what the model must produce, i.e. the reply and its end-of-turn token. Whitespace
the template adds after the end-of-sequence token (ChatML's newline after ``<|im_end|>``) is left
unsupervised, since generation stops at that token.

Rendering every prefix of every example with Jinja is slow (several renders per example), so
conversations with the same role sequence share one *skeleton*: the template is rendered once
with placeholder contents, and each example is then assembled by pasting its contents into the
skeleton's literal pieces. The skeleton is used only when the template copies contents verbatim
(placeholders with surrounding whitespace survive intact) and the first examples of each role
sequence render identically both ways; otherwise each example is rendered with Jinja.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from tuneforge.data.shapes import InvalidRecord
from tuneforge.errors import DataError

Turns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Rendered:
    """A rendered text and the character spans ``[start, end)`` that carry loss."""

    text: str
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Skeleton:
    """Literal pieces around each content slot, and each assistant span relative to its slot."""

    literals: tuple[str, ...]  # len(turns) + 1 pieces
    offsets: tuple[tuple[int, int, int], ...]  # (turn index, start delta <= 0, end delta >= 0)


class ChatRenderer:
    """Renders conversations with ``tokenizer.chat_template`` (set it first: ensure_chat_template).

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        verify_per_structure: how many examples of each role sequence are rendered both ways
            (skeleton and Jinja) and compared before the skeleton is trusted.
    """

    def __init__(self, tokenizer, verify_per_structure: int = 2) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token or None
        self.verify_per_structure = verify_per_structure
        self._skeletons: dict[tuple[str, ...], _Skeleton | None] = {}
        self._verified: dict[tuple[str, ...], int] = {}
        self.jinja_renders = 0  # how many examples were rendered with Jinja (for profiling)

    def render(self, turns: Turns) -> Rendered:
        """Render one conversation; its spans cover every assistant reply + end-of-turn token.

        Raises:
            InvalidRecord: the template refuses the conversation.
            DataError: the template cannot be used for loss masks (not prefix-stable).
        """
        roles = tuple(role for role, _ in turns)
        if roles not in self._skeletons:
            self._skeletons[roles] = self._build_skeleton(roles)
        skeleton = self._skeletons[roles]
        if skeleton is None:
            return self.render_exact(turns)
        fast = _fill(skeleton, turns)
        if self._verified.get(roles, 0) < self.verify_per_structure:
            self._verified[roles] = self._verified.get(roles, 0) + 1
            if self.render_exact(turns) != fast:
                self._skeletons[roles] = None
                return self.render_exact(turns)
        return fast

    def _apply(self, turns: Turns, add_generation_prompt: bool) -> str:
        messages = [{"role": role, "content": content} for role, content in turns]
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError as err:  # includes templates' own raise_exception(...)
            raise InvalidRecord(f"the chat template refuses this conversation ({err})") from err

    def render_exact(self, turns: Turns) -> Rendered:
        """Render with Jinja, prefix by prefix: the reference the skeleton path must match."""
        self.jinja_renders += 1
        full = self._apply(turns, add_generation_prompt=False)
        spans = []
        for index, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            prompt = self._apply(turns[:index], add_generation_prompt=True)
            upto = self._apply(turns[: index + 1], add_generation_prompt=False)
            if not (full.startswith(prompt) and full.startswith(upto)) or len(upto) <= len(prompt):
                raise DataError(
                    "the chat template does not render a conversation's beginning as a prefix of "
                    "the whole (it rewrites earlier turns), so assistant turns cannot be located "
                    "for the loss mask; pass a plain template with --template-file"
                )
            spans.append((len(prompt), self._trim_after_eos(full, len(prompt), len(upto))))
        return Rendered(full, tuple(spans))

    def _trim_after_eos(self, text: str, start: int, end: int) -> int:
        """Leave whitespace after the last end-of-sequence token of a span unsupervised."""
        if self.eos:
            at = text.rfind(self.eos, start, end)
            if at >= 0 and not text[at + len(self.eos) : end].strip():
                return at + len(self.eos)
        return end

    def _build_skeleton(self, roles: tuple[str, ...]) -> _Skeleton | None:
        slots = [f"\n \ue000{index}\ue001 \n" for index in range(len(roles))]
        try:
            rendered = self.render_exact(tuple(zip(roles, slots, strict=True)))
        except InvalidRecord:
            return None  # the real examples will raise the same error with their source
        positions, cursor = [], 0
        for slot in slots:
            at = rendered.text.find(slot, cursor)
            if at < 0 or rendered.text.count(slot) != 1:
                return None  # the template changes contents (trims, escapes): no skeleton
            positions.append(at)
            cursor = at + len(slot)
        literals, cursor = [], 0
        for at, slot in zip(positions, slots, strict=True):
            literals.append(rendered.text[cursor:at])
            cursor = at + len(slot)
        literals.append(rendered.text[cursor:])
        assistant = [index for index, role in enumerate(roles) if role == "assistant"]
        offsets = []
        for index, (start, end) in zip(assistant, rendered.spans, strict=True):
            slot_start, slot_end = positions[index], positions[index] + len(slots[index])
            previous_end = positions[index - 1] + len(slots[index - 1]) if index else 0
            next_start = positions[index + 1] if index + 1 < len(roles) else len(rendered.text)
            if not (previous_end <= start <= slot_start and slot_end <= end <= next_start):
                return None
            offsets.append((index, start - slot_start, end - slot_end))
        return _Skeleton(tuple(literals), tuple(offsets))


def _fill(skeleton: _Skeleton, turns: Turns) -> Rendered:
    """Paste contents into a skeleton; shift its spans to the contents' positions."""
    parts, bounds, length = [], [], 0
    for literal, (_, content) in zip(skeleton.literals, turns, strict=False):
        length += len(literal)
        bounds.append((length, length + len(content)))
        length += len(content)
        parts += (literal, content)
    parts.append(skeleton.literals[-1])
    spans = tuple(
        (bounds[index][0] + start_delta, bounds[index][1] + end_delta)
        for index, start_delta, end_delta in skeleton.offsets
    )
    return Rendered("".join(parts), spans)
