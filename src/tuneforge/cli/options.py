"""Options shared by several commands, declared once, and the objects built from them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tuneforge.errors import ConfigError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the example epilogs as written."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device."""
    parser.add_argument(
        "--model",
        default="default",
        help="model reference: 'default' (bundled SmolLM2-135M-Instruct), a model folder, "
        "a .gguf file, or a hub id",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights/compute dtype; auto = bf16 where the device computes it natively "
        "(a GPU of Ampere or later, a CPU with AVX512-BF16/AMX), else fp32",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--max-new-tokens, --temperature, --top-p, --seed, --system."""
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (deterministic)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")


def parse_adapter_specs(specs: list[str]) -> dict[str, Path]:
    """``--adapter`` values -> ``{name: folder}``, in the order given (``generate``, ``serve``).

    A value is ``NAME=DIR``, or a bare ``DIR`` named after its run folder: ``runs/json/adapter``
    is named ``json``, a folder not called ``adapter`` keeps its own name. A value is a bare DIR
    when it has no ``=``, when the part before the first ``=`` holds a ``/``, or when it is an
    existing path; otherwise the folder is everything after the first ``=``.

    Raises:
        ConfigError: an empty name or folder, or a name given twice.
    """
    adapters: dict[str, Path] = {}
    for spec in specs:
        name, folder = _parse_adapter_spec(spec)
        if name in adapters:
            raise ConfigError(
                f"--adapter {spec}: the name {name!r} is given twice; each adapter needs its own "
                "name (NAME=DIR)"
            )
        adapters[name] = folder
    return adapters


def _parse_adapter_spec(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not spec.strip():
        raise ConfigError("--adapter '': expected NAME=DIR or DIR, e.g. json=runs/json/adapter")
    if not sep or "/" in name or Path(spec).exists():
        path = Path(spec)
        run = path.parent if path.name == "adapter" and path.parent.name else path
        return run.name or "adapter", path
    if not name.strip() or not folder.strip():
        raise ConfigError(
            f"--adapter {spec!r}: expected NAME=DIR or DIR, e.g. json=runs/json/adapter"
        )
    return name.strip(), Path(folder.strip())


def load_model_from_options(args: argparse.Namespace):
    """Load ``--model`` (``--dtype``, ``--device``) with ``--adapter`` attached when given.

    The base is loaded as the adapter was trained on it (``load_base_for_adapters``: NF4 4-bit
    for a QLoRA adapter), and a line on stderr says which, unless ``--quiet``.

    Returns:
        ``(model, tokenizer, seconds spent loading)``.
    """
    from tuneforge.adapters import attach_adapter, load_base_for_adapters

    start = time.perf_counter()
    adapter = getattr(args, "adapter", None)
    adapters = [adapter] if adapter else []
    loaded = load_base_for_adapters(args.model, adapters, dtype=args.dtype, device=args.device)
    model = loaded.model
    if adapter:
        model = attach_adapter(model, adapter)
        if not getattr(args, "quiet", False):
            print(f"adapter {adapter} {base_note(loaded)}", file=sys.stderr)
    return model, loaded.tokenizer, time.perf_counter() - start


def base_note(loaded) -> str:
    """Which base adapters run on, for a ``LoadedModel`` from ``load_base_for_adapters``:
    ``on the NF4 4-bit base it was trained on (QLoRA; double quantization, compute float32)``
    or ``on the full-precision base (float32)``."""
    from tuneforge.models.quantization import describe_four_bit

    if loaded.quantization is None:
        return f"on the full-precision base ({loaded.precision})"
    name, details = describe_four_bit(loaded.quantization)
    return f"on the {name} base it was trained on (QLoRA; {details})"


def settings_from_options(args: argparse.Namespace):
    """The ``GenerationSettings`` of ``add_sampling_options``' options."""
    from tuneforge.generation import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
