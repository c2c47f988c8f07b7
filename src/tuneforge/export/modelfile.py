"""An Ollama ``Modelfile`` beside the GGUF file, and the ``ollama create`` command for it.

Ollama reads the chat template from the GGUF file (``tokenizer.chat_template``) only by
matching it against its own list of known templates: one within 100 edits of a known template
gets that template's Go version, anything else gets ``{{ .Prompt }}`` — the raw text with no
chat turns, so a fine-tuned chat model answers badly without any error. A template edited for a
model (SmolLM2's adds a default system prompt, a fine-tune may change the markers) easily falls
outside. So when the model's chat template renders exactly like a chat format we know, the
Modelfile carries that format's Go ``TEMPLATE`` (and a default system prompt as ``SYSTEM``),
checked here by rendering probe conversations through both; otherwise it says that Ollama will
choose the template from the GGUF metadata.

``PARAMETER``\\s make Ollama decode like ``tuneforge generate``: greedy (temperature 0), no
repetition penalty (Ollama's default is 1.1), and the end-of-turn tokens as stops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.atomic import write_text
from tuneforge.export.vocabulary import probe_adds
from tuneforge.generation import GenerationSettings


@dataclass(frozen=True)
class ChatFormat:
    """A chat format with the same rendering in Jinja (the model's) and Go (Ollama's).

    Attributes:
        name: the format's usual name (``chatml``).
        turn: one message, with ``{role}`` and ``{content}`` (``assistant`` renamed by
            ``assistant_role``).
        generation_prompt: what opens the assistant's reply.
        end_of_turn: the token that ends a turn (an Ollama stop).
        go_template: the same rendering as an Ollama Go template over ``.Messages``.
        assistant_role: how the format names the assistant.
    """

    name: str
    turn: str
    generation_prompt: str
    end_of_turn: str
    go_template: str
    assistant_role: str = "assistant"

    def render(self, messages: list[dict]) -> str:
        """The prompt this format (and so ``go_template``) makes of ``messages``."""
        turns = [
            self.turn.format(
                role=self.assistant_role if m["role"] == "assistant" else m["role"],
                content=m["content"],
            )
            for m in messages
        ]
        return "".join(turns) + self.generation_prompt


CHAT_FORMATS = (
    ChatFormat(
        name="chatml",
        turn="<|im_start|>{role}\n{content}<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
        end_of_turn="<|im_end|>",
        go_template=(
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n"
        ),
    ),
    ChatFormat(
        name="llama3",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        end_of_turn="<|eot_id|>",
        go_template=(
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
            "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
    ),
)

_PROBES = (
    [{"role": "user", "content": "Probe question one"}],
    [
        {"role": "system", "content": "Probe system text"},
        {"role": "user", "content": "Probe question one"},
    ],
    [
        {"role": "user", "content": "Probe question one"},
        {"role": "assistant", "content": "Probe answer one"},
        {"role": "user", "content": "Probe question two"},
    ],
)

# End-of-turn tokens of common templates, used as stops when the format is not recognised.
_KNOWN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


@dataclass(frozen=True)
class RecognisedTemplate:
    """A chat format the model's template renders exactly like, and its default system text."""

    chat_format: ChatFormat
    default_system: str | None


def _render_jinja(tokenizer, messages: list[dict]) -> str:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    if bos and probe_adds(tokenizer)[0] and text.startswith(bos):
        text = text[len(bos) :]  # llama.cpp and Ollama add this BOS themselves
    return text


def _default_system(chat_format: ChatFormat, rendered: str) -> str | None:
    """The system text a template inserts unasked, read from its rendering of a lone user turn."""
    head, _, tail = chat_format.turn.format(role="system", content="\0").partition("\0")
    if not rendered.startswith(head):
        return None
    end = rendered.find(tail, len(head))
    return rendered[len(head) : end] if end >= 0 else None


def recognise_template(tokenizer) -> RecognisedTemplate | None:
    """The known chat format whose rendering equals the tokenizer's on every probe, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    renders = [_render_jinja(tokenizer, probe) for probe in _PROBES]
    for chat_format in CHAT_FORMATS:
        system = None
        if renders[0] != chat_format.render(_PROBES[0]):
            system = _default_system(chat_format, renders[0])
            if system is None:
                continue
        with_default = [
            probe
            if probe[0]["role"] == "system" or system is None
            else [{"role": "system", "content": system}, *probe]
            for probe in _PROBES
        ]
        if all(r == chat_format.render(p) for r, p in zip(renders, with_default, strict=True)):
            return RecognisedTemplate(chat_format, system)
    return None


def _quoted(text: str) -> str:
    return '"""' + text + '"""'


def modelfile_text(gguf_name: str, tokenizer, context_length: int) -> str:
    """The Modelfile for the GGUF file ``gguf_name`` (in the same folder) of this tokenizer.

    Args:
        gguf_name: the GGUF file's name, referenced as ``FROM ./<name>``.
        tokenizer: the exported tokenizer (chat template, end tokens).
        context_length: the model's context length; ``num_ctx`` is at most 4096 of it.
    """
    settings = GenerationSettings()
    recognised = recognise_template(tokenizer)
    vocab = tokenizer.get_vocab()
    stops = [recognised.chat_format.end_of_turn] if recognised else []
    stops += [t for t in _KNOWN_END_TOKENS if t in vocab and t not in stops]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines = [
        "# Ollama Modelfile written by tuneforge export.",
        "# Create the model: ollama create NAME -f THIS_FILE; run it: ollama run NAME",
        f"FROM ./{gguf_name}",
        "",
    ]
    if recognised:
        lines += [
            f"# The chat template renders exactly as the {recognised.chat_format.name} format;",
            "# written out because Ollama only recognises templates close to its own list.",
            f"TEMPLATE {_quoted(recognised.chat_format.go_template)}",
        ]
        if recognised.default_system:
            lines.append(f"SYSTEM {_quoted(recognised.default_system)}")
    else:
        lines += [
            "# No TEMPLATE: the chat template is not one tuneforge can write in Go; Ollama picks",
            "# one by matching the GGUF file's tokenizer.chat_template against its known list",
            "# (raw prompts if none is close). Add a TEMPLATE here if replies look unformatted.",
        ]
    lines += [
        "",
        "# Decode like `tuneforge generate`: greedy, no repetition penalty.",
        f"PARAMETER temperature {settings.temperature:g}",
        f"PARAMETER top_p {settings.top_p:g}",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_ctx {min(context_length, 4096)}",
    ]
    lines += [f"PARAMETER stop {_quoted(stop) if ' ' in stop else stop}" for stop in stops]
    return "\n".join(lines) + "\n"


def ollama_model_name(gguf_path: Path) -> str:
    """A model name Ollama accepts, from the GGUF file's stem (lowercase, ``[a-z0-9._-]``)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(gguf_path).stem.lower()).strip("-._")
    return name or "tuneforge-model"


def write_modelfile(gguf_path: Path, tokenizer, context_length: int) -> Path:
    """Write ``<stem>.Modelfile`` beside ``gguf_path`` (atomically); return its path."""
    gguf_path = Path(gguf_path)
    path = gguf_path.with_name(f"{gguf_path.stem}.Modelfile")
    write_text(path, modelfile_text(gguf_path.name, tokenizer, context_length))
    return path


def ollama_create_command(modelfile: Path) -> str:
    """The command that imports the exported model into Ollama."""
    modelfile = Path(modelfile)
    name = ollama_model_name(modelfile.with_suffix(".gguf"))
    return f"ollama create {name} -f {modelfile}"
