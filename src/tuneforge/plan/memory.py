"""Peak memory per device of one training run, by component, before anything is loaded.

Per device, the run holds a static part for its whole life (weights, quantization constants,
LoRA parameters, optimizer states, framework overhead) and a dynamic part that changes within a
step. Autograd frees each block's activations as backward passes it while that block's gradients
appear, so the sum "activations + gradients" over-states the peak; the dynamic peak is the
largest of three moments:

- start of backward: every activation, plus the logits and cross-entropy at their largest;
- the head's backward: activations, the logits' gradient and the head's weight gradient;
- the optimizer step: every gradient plus the step's temporaries (torch's foreach AdamW on CUDA
  allocates one fp32 tensor per parameter for ``sqrt(v)``).

With gradient accumulation the gradients live through the next micro-batch's forward, so they
add to the first two moments. The table shows every component at its own size and a negative
line, "freed during backward", that brings the sum down to the peak.

Preference objectives (dpo, orpo) train on pair rows: a prompt once, then both completions,
each conversation up to ``max_length``, so a row is planned at ``2 * max_length`` tokens
(``tuning_vocabulary.row_tokens``). DPO's reference (``tuning_vocabulary.REFERENCES``): ``base``
(the adapter disabled) adds no weights, and its no-grad forward ends before the policy's
activations exist; ``copy`` adds a frozen copy of the weights in the compute dtype; and
``precomputed`` adds a table of two floats per pair (negligible) after one no-grad pass over the
data. For full fine-tuning the plan notes the other choice's peak, so both are on the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from tuneforge.errors import ConfigError
from tuneforge.plan.activations import FP32, estimate_activations
from tuneforge.plan.config import ModelConfig
from tuneforge.plan.parameters import (
    ParameterCount,
    block_linear_weights,
    check_target_modules,
    count_parameters,
)
from tuneforge.tuning_vocabulary import (
    DEVICE_TYPES,
    DTYPES,
    LORA_DROPOUT,
    LORA_R,
    METHODS,
    OBJECTIVES,
    OPTIMIZERS,
    PREFERENCE_OBJECTIVES,
    REFERENCES,
    STRATEGIES,
    resolve_dtype,
    resolve_reference,
    resolve_strategy,
    row_tokens,
)

DTYPE_BYTES = {"bfloat16": 2, "float32": 4}

NF4_BLOCKSIZE = 64  # weights per first-level absmax (QLoRA paper, section 3)
NF4_NESTED_BLOCKSIZE = 256  # first-level constants per second-level fp32 constant
NF4_PER_TENSOR = 4 + 256 * 4 + 16 * 4  # fp32 offset, 8-bit code table, NF4 code table (bytes)
ADAM8BIT_BLOCKSIZE = 256  # bitsandbytes' blockwise 8-bit optimizer states
ADAM8BIT_MIN_SIZE = 4096  # smaller tensors keep fp32 states (bitsandbytes' min_8bit_size)
CUDA_CONTEXT_BYTES = 1 << 30  # CUDA context, kernels, cuBLAS workspace (not validated here)
NCCL_BUFFER_BYTES = 512 << 20  # communicator buffers of a multi-process run (not validated)
# CPU: math-library (oneDNN/OpenMP) workspace and allocator slack above the tensors themselves;
# bench/planner_accuracy.py measured 28-88 MiB of it in every row, so this stays below all.
CPU_RUNTIME_BYTES = 24 << 20
DDP_BUCKET_NOTE = "DDP gradient buckets (a second copy of the gradients, torch's default)"

GIB = 1 << 30
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": GIB, "k": 1 << 10, "m": 1 << 20, "g": GIB, "t": 1 << 40}


def parse_memory(text: str) -> int:
    """Bytes in a device size such as ``80GB``, ``48GiB``, ``24576MB`` or ``80`` (GiB).

    GPU makers' "80 GB" is 80 GiB of memory (an A100 80GB has 81,920 MiB), so GB and GiB both mean
    powers of two here.

    Raises:
        ConfigError: the text is not a size.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(
            f"gpu memory '{text}' is not a size; write it like 80GB, 48GiB or 24576MB"
        )
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(match.group(1)) * _UNITS[unit])


def gib(value: int | float) -> float:
    """Bytes to GiB."""
    return value / GIB


@dataclass
class MemoryPlan:
    """Predicted peak memory of one device, by component (bytes).

    Attributes:
        model: the model config's name.
        settings: the inputs of the estimate (method, batch size, ...), for printing.
        parameters: parameter counts of the prepared model.
        components: component name -> bytes on one device, in table order; the "freed during
            backward" entry is negative and makes the sum the peak.
        notes: assumptions worth reading next to the numbers.
    """

    model: str
    settings: dict
    parameters: ParameterCount
    components: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Predicted peak bytes on one device."""
        return sum(self.components.values())

    def fits(self, device_bytes: int) -> bool:
        """Whether the peak fits in ``device_bytes`` of device memory."""
        return self.total <= device_bytes

    def table(self, device_bytes: int | None = None) -> str:
        """A printable breakdown, with the verdict when ``device_bytes`` is given.

        In GiB; in MiB when the peak is under 1 GiB (small models would read as 0.00 GiB).
        """
        s = self.settings
        counts = self.parameters
        lora = f" r={s['lora_r']}" if s["method"] != "full" else ""
        unit, scale = ("GiB", GIB) if self.total >= GIB else ("MiB", 1 << 20)
        if s["objective"] in PREFERENCE_OBJECTIVES:
            reference = f", reference {s['reference']}" if s["reference"] else ""
            rows = (
                f"{s['objective']}{reference} | batch {s['batch_size']} pairs x "
                f"{s['row_length']} tokens (prompt once + chosen + rejected, each conversation "
                f"<= {s['max_length']})"
            )
        else:
            rows = (
                f"batch {s['batch_size']} x {s['max_length']} tokens "
                f"({'padded' if s['padding_mask'] else 'no padding mask'})"
            )
        lines = [
            f"model {self.model}: {counts.total:,} parameters, {counts.trainable:,} trainable "
            f"({counts.percent:.2f}%)",
            f"{s['method']}{lora} | {rows} x grad_accum {s['grad_accum']} | {s['dtype']} | "
            f"{s['optimizer']}",
            f"{s['gpus']} x {s['device']} ({s['strategy']}) | attention {s['attention']} | loss on "
            f"{100 * s['supervised_fraction']:.2f}% of tokens"
            + (" | gradient checkpointing" if s["gradient_checkpointing"] else ""),
            "",
            f"{'component (per device)':<44}{unit:>10}",
            "-" * 54,
        ]
        for name, value in self.components.items():
            if value:
                lines.append(f"{name:<44}{value / scale:>10.2f}")
        lines += ["-" * 54, f"{'predicted peak':<44}{self.total / scale:>10.2f}"]
        if device_bytes is not None:
            margin = device_bytes - self.total
            verdict = "FITS" if margin >= 0 else "DOES NOT FIT"
            lines.append(f"{'device memory':<44}{device_bytes / scale:>10.2f}")
            word = "headroom" if margin >= 0 else "short by"
            lines.append(f"{verdict}: {word} {gib(abs(margin)):.2f} GiB")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _nf4_bytes(numel: int) -> tuple[int, int]:
    """(packed 4-bit weight bytes, quantization-constant bytes) of one NF4 tensor.

    Double quantization (QLoRA, Dettmers et al. 2023): one 8-bit absmax per 64 weights, one fp32
    constant per 256 of those, plus per-tensor tables: 8/64 + 32/(64*256) = 0.127 bits per weight.
    """
    blocks = math.ceil(numel / NF4_BLOCKSIZE)
    constants = blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCKSIZE) + NF4_PER_TENSOR
    return math.ceil(numel / 2), constants


def _trainable_tensors(config: ModelConfig, method: str, r: int, targets: list[str]) -> list[int]:
    """Element counts of every trainable tensor (for 8-bit optimizer block accounting)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    shapes = config.linear_shapes()
    if method != "full":
        per_block = [n for name in targets for n in (r * shapes[name][0], shapes[name][1] * r)]
        return per_block * layers
    per_block = [h, h]  # the two RMSNorm weights
    for i, o, bias in shapes.values():
        per_block += [i * o] + ([o] if bias else [])
    if config.qk_norm:
        per_block += [config.head_dim, config.head_dim]
    head = [] if config.tie_word_embeddings else [config.vocab_size * h]
    return [config.vocab_size * h, h, *head] + per_block * layers


def _optimizer_bytes(tensors: list[int], optimizer: str) -> int:
    """AdamW's two moments: fp32 (8 bytes/param) or bitsandbytes blockwise 8-bit."""
    if optimizer == "adamw":
        return 8 * sum(tensors)
    total = 0
    for numel in tensors:
        if numel < ADAM8BIT_MIN_SIZE:
            total += 8 * numel
        else:  # two uint8 states, each with one fp32 absmax per 256 values
            total += 2 * numel + 2 * 4 * math.ceil(numel / ADAM8BIT_BLOCKSIZE)
    return total


def _check(**values) -> None:
    """Validate the settings (names from ``tuneforge.tuning_vocabulary``)."""
    for name, allowed in (
        ("method", METHODS),
        ("objective", OBJECTIVES),
        ("reference", REFERENCES),
        ("dtype", DTYPES),
        ("optimizer", OPTIMIZERS),
        ("strategy", STRATEGIES),
        ("device", DEVICE_TYPES),
    ):
        if values[name] not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got '{values[name]}'")
    for name in ("batch_size", "max_length", "gpus", "grad_accum"):
        if not isinstance(values[name], int) or values[name] < 1:
            raise ConfigError(f"{name} must be a positive integer, got {values[name]!r}")
    if not 0 < values["supervised_fraction"] <= 1:
        raise ConfigError("supervised_fraction must be in (0, 1]")


def estimate_memory(
    model_config: ModelConfig,
    *,
    method: str,
    batch_size: int,
    max_length: int,
    dtype: str = "bfloat16",
    lora_r: int = LORA_R,
    target_modules: list[str] | None = None,
    gradient_checkpointing: bool = False,
    optimizer: str = "adamw",
    gpus: int = 1,
    strategy: str = "auto",
    supervised_fraction: float = 1.0,
    lm_head_on_supervised_only: bool = True,
    grad_accum: int = 1,
    lora_dropout: float = LORA_DROPOUT,
    padding_mask: bool = False,
    device: str = "cuda",
    attention: str = "sdpa",
    objective: str = "sft",
    reference: str = "auto",
) -> MemoryPlan:
    """Predict the peak memory of one device during a training step (see the module docstring).

    Args:
        model_config: the model's shape (``load_model_config``).
        method: ``full`` (fp32 master weights), ``lora`` (frozen base in ``dtype``, fp32
            adapters) or ``qlora`` (decoder linears in NF4 with double quantization).
        batch_size: rows per micro-batch per device.
        max_length: tokens per row.
        dtype: compute dtype: ``bfloat16`` (autocast), ``float32``, or ``auto`` (bfloat16 on
            ``cuda``, as on every bf16-capable GPU; float32 on ``cpu``, the larger plan, since
            only CPUs with AVX512-BF16 train in bf16: a run's own plan, ``plan_for_run``,
            asks the CPU it runs on).
        lora_r: LoRA rank.
        target_modules: adapted linears (default: every linear of a block, never the head).
        gradient_checkpointing: recompute each block in backward, keeping only its input.
        optimizer: ``adamw`` (fp32 moments), ``adamw_8bit`` or ``paged_adamw_8bit``.
        gpus: data-parallel devices (processes).
        strategy: ``none`` (one device), ``ddp`` (full replicas), ``fsdp`` (FSDP2
            ``fully_shard`` per block: weights, gradients and optimizer states sharded over
            ``gpus``) or ``auto`` (ddp when ``gpus`` > 1, else none).
        supervised_fraction: share of positions that carry loss (the head runs only on them
            when ``lm_head_on_supervised_only``).
        grad_accum: micro-batches per optimizer step (>1 keeps gradients through forward).
        lora_dropout: LoRA dropout probability (> 0 keeps masks and dropped inputs).
        padding_mask: batches carry padding, so sdpa gets a mask and K/V are repeated for GQA.
        device: ``cuda`` adds the CUDA context and foreach-optimizer temporaries; ``cpu`` is
            what the CPU benchmark measures.
        attention: ``sdpa`` or ``eager`` (keeps the T x T probabilities; tuneforge trains
            short bf16 rows on CPU with it, see ``train.methods.attention_implementation``).
        objective: ``sft``, ``dpo`` or ``orpo`` (pair rows of ``2 * max_length`` tokens).
        reference: DPO's reference (``auto`` resolved as a run resolves it, for a run without
            a starting adapter).

    Returns:
        a MemoryPlan (bytes per device by component).

    Raises:
        ConfigError: an invalid setting.
    """
    _check(
        method=method,
        dtype=dtype,
        optimizer=optimizer,
        strategy=strategy,
        device=device,
        batch_size=batch_size,
        max_length=max_length,
        gpus=gpus,
        grad_accum=grad_accum,
        supervised_fraction=supervised_fraction,
        objective=objective,
        reference=reference,
    )
    reference = resolve_reference(reference, objective, method, init_adapter=False)
    if (reference == "base" and method == "full") or (reference == "copy" and method != "full"):
        raise ConfigError(
            f"reference {reference} does not apply to method {method}: base is a LoRA run's "
            "base with the adapter disabled, copy a full run's frozen copy"
        )
    row_length = row_tokens(objective, max_length)
    dtype = resolve_dtype(dtype, bf16_supported=device == "cuda")
    strategy = resolve_strategy(strategy, gpus)
    cfg = model_config
    targets = check_target_modules(cfg, target_modules) if method != "full" else []
    counts = count_parameters(cfg, method, lora_r, targets or None)
    c = DTYPE_BYTES[dtype]
    shards = gpus if strategy == "fsdp" else 1
    h, vocab, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    linear_per_block = block_linear_weights(cfg)
    head_weights = 0 if cfg.tie_word_embeddings else vocab * h
    notes: list[str] = []

    # Weights as stored. full: fp32 masters; lora: the frozen base in the compute dtype; qlora:
    # decoder linears in NF4, the rest (embedding, norms, biases, head) in the compute dtype.
    quant_constants = 0
    if method == "full":
        weights = FP32 * counts.base
    elif method == "lora":
        weights = c * counts.base
    else:
        packed = constants = 0
        for i, o, _ in cfg.linear_shapes().values():
            p, k = _nf4_bytes(i * o)
            packed, constants = packed + p, constants + k
        weights = layers * packed + c * (counts.base - counts.quantized)
        quant_constants = layers * constants
    lora_bytes = FP32 * counts.lora
    trainable = counts.trainable
    gradients = FP32 * trainable
    optimizer_states = _optimizer_bytes(_trainable_tensors(cfg, method, lora_r, targets), optimizer)

    # FSDP2 stores 1/N of every sharded tensor; the blocks in flight are gathered whole.
    weights, quant_constants, lora_bytes = (
        math.ceil(weights / shards),
        math.ceil(quant_constants / shards),
        math.ceil(lora_bytes / shards),
    )
    gradients = math.ceil(gradients / shards)
    optimizer_states = math.ceil(optimizer_states / shards)
    unsharded = 0
    if strategy == "fsdp" and gpus > 1:
        # two blocks gathered (the running one and the prefetched next) in the compute dtype
        # (4-bit storage for qlora), the root (embedding, head, final norm) kept gathered, and
        # one block's unsharded gradients before their reduce-scatter.
        block_params = linear_per_block + 2 * h
        block_bytes = block_params * c if method != "qlora" else (block_params + 1) // 2 + 2 * h * c
        block_trainable = trainable // layers if method != "full" else block_params
        root = c * (vocab * h + head_weights + h)
        unsharded = 2 * block_bytes + root + FP32 * block_trainable
        notes.append(
            f"FSDP over {gpus} devices: weights, gradients and optimizer states are 1/{gpus}"
        )

    # Activations: the residual stream is fp32 when the embedding is stored in fp32 (full
    # without FSDP mixed precision), else in the compute dtype.
    full_fp32_stream = method == "full" and strategy != "fsdp"
    stream = FP32 if (dtype == "float32" or full_fp32_stream) else c
    if method == "full" and strategy != "fsdp":
        autocast_weights = layers * linear_per_block + vocab * h
    else:
        autocast_weights = counts.lora
    acts = estimate_activations(
        cfg,
        method=method,
        batch_size=batch_size,
        max_length=row_length,
        compute_bytes=c,
        stream_bytes=stream,
        lora_modules=targets,
        lora_r=lora_r,
        lora_dropout=lora_dropout,
        gradient_checkpointing=gradient_checkpointing,
        supervised_fraction=supervised_fraction,
        lm_head_on_supervised_only=lm_head_on_supervised_only,
        autocast_linear_weights=autocast_weights,
        padding_mask=padding_mask,
        attention=attention,
    )

    # Optimizer-step temporaries: torch's foreach AdamW (the CUDA default) allocates sqrt(v) for
    # every parameter at once; on CPU it loops, one tensor at a time; bitsandbytes fuses it.
    tensors = _trainable_tensors(cfg, method, lora_r, targets)
    if optimizer != "adamw":
        step_temp = 0
    elif device == "cuda":
        step_temp = math.ceil(FP32 * sum(tensors) / shards)
    else:
        step_temp = FP32 * max(tensors)

    ddp_buckets = gradients if strategy == "ddp" and gpus > 1 else 0
    head_grad = FP32 * vocab * h if method == "full" else 0
    kept_grads = gradients if grad_accum > 1 else 0
    activations = acts.activations
    dynamic_peak = max(
        activations + acts.logits_peak + kept_grads,
        activations + acts.logits_saved + max(head_grad // shards, kept_grads),
        gradients + step_temp,
    )
    dynamic_sum = activations + acts.logits_peak + gradients + step_temp
    if device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + (NCCL_BUFFER_BYTES if gpus > 1 else 0)
        overhead_name = "framework (CUDA context, NCCL buffers)"
    else:
        overhead = CPU_RUNTIME_BYTES
        overhead_name = "framework (CPU math-library workspace)"

    copy_bytes = c * counts.total  # a frozen copy of every weight, in the compute dtype
    components = {
        "weights": weights,
        "reference model (frozen copy)": copy_bytes if reference == "copy" else 0,
        "quantization constants (NF4, double quant)": quant_constants,
        "LoRA parameters (fp32)": lora_bytes,
        "gradients (fp32)": gradients,
        f"optimizer states ({optimizer})": optimizer_states,
        "activations": activations,
        "logits + cross-entropy (fp32)": acts.logits_peak,
        "optimizer step temporaries": step_temp,
        "freed during backward (overlap)": dynamic_peak - dynamic_sum,
        "FSDP gathered blocks + root": unsharded,
        DDP_BUCKET_NOTE: ddp_buckets,
        overhead_name: overhead,
    }
    if acts.autocast_weight_copies:
        notes.append(
            f"activations include {gib(acts.autocast_weight_copies):.2f} GiB of bf16 weight "
            "copies that autocast keeps for backward"
        )
    if gradient_checkpointing:
        notes.append("gradient checkpointing: each block keeps its input; one block is recomputed")
    notes += _reference_notes(reference, method, sum(components.values()), copy_bytes)
    settings = {
        "method": method,
        "objective": objective,
        "reference": reference,
        "row_length": row_length,
        "batch_size": batch_size,
        "max_length": max_length,
        "grad_accum": grad_accum,
        "padding_mask": padding_mask,
        "dtype": dtype,
        "optimizer": optimizer,
        "gpus": gpus,
        "strategy": strategy,
        "device": device,
        "attention": attention,
        "supervised_fraction": supervised_fraction,
        "gradient_checkpointing": gradient_checkpointing,
        "lora_r": lora_r,
    }
    return MemoryPlan(cfg.name, settings, counts, components, notes)


def _reference_notes(reference: str | None, method: str, total: int, copy_bytes: int) -> list[str]:
    """What DPO's reference costs, and for full fine-tuning the other choice's peak."""
    if reference == "base":
        return [
            "reference: the base with the adapter disabled: no extra weights; its no-grad "
            "forward ends before the policy's activations are kept"
        ]
    alternative = "" if method != "full" else " (full fine-tuning: the other choice is listed)"
    if reference == "precomputed":
        notes = [
            "reference: log-probs precomputed once before training by a no-grad pass over the "
            f"data (8 bytes per pair){alternative}"
        ]
        if method == "full":
            notes.append(
                f"with reference copy instead: +{gib(copy_bytes):.2f} GiB of frozen weights, "
                f"peak {gib(total + copy_bytes):.2f} GiB, and no pass before training"
            )
        return notes
    if reference == "copy":
        return [
            f"reference: a frozen copy of the weights ({gib(copy_bytes):.2f} GiB); with reference "
            f"precomputed instead the peak would be {gib(total - copy_bytes):.2f} GiB, after one "
            "no-grad pass over the data before training"
        ]
    return []
