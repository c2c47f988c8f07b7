"""Activation memory of one training micro-batch, from first principles.

Autograd keeps, from the forward pass until the backward pass consumes it, every tensor that a
backward formula needs. We list those tensors for one Llama-family decoder block, per token, as
transformers (sdpa attention) and peft build it, and multiply by tokens and blocks. The list was
read off the autograd graph with ``torch.autograd.graph.saved_tensors_hooks`` and is checked
against it in ``tests/plan/test_activations.py``.

Per token and block (``h`` hidden, ``q`` = heads x head_dim, ``kv`` = kv heads x head_dim,
``i`` intermediate, ``c`` bytes of the compute dtype, ``s`` bytes of the residual stream, which is
fp32 unless the embedding itself is stored in bf16):

- 2 RMSNorms: each keeps its input upcast to fp32 (``4h``, the residual itself when it is fp32),
  its ``rsqrt`` (4 bytes) and its output ``s*h`` (the input of the following projections).
- under bf16 autocast over an fp32 residual stream (full fine-tuning without FSDP) every linear
  casts its input to bf16 by itself and keeps the copy: q, k, v and gate, up (``5 * 2h``).
- attention: q and k after RoPE and v (``c*(q + 2kv)``; ``c*3q`` when a padding mask makes
  transformers repeat K/V for grouped-query attention), the softmax log-sum-exp (4 bytes per
  head), the output (``c*q``) and its ``[B, T, q]`` copy that feeds o_proj (``c*q``). sdpa never
  stores the ``T x T`` probabilities; eager attention keeps them in fp32 and in ``c``
  (``heads * T * (4 + c)`` per token) with K and V repeated to every query head.
- gated MLP: gate, silu(gate), up and silu(gate) * up (``4 * c * i``).
- LoRA: each adapted linear keeps A's output (``c*r``); dropout > 0 adds the dropped input and
  its mask (``(c + 1) * in``).

Outside the blocks: the final norm (as above), the hidden rows fed to the head (``c*h`` per
supervised token), the cross-entropy in fp32 (log-softmax output, its gradient and the gradient
of the logits: ``3 * 4 * V`` bytes per supervised token at the start of backward), RoPE tables.

Gradient checkpointing keeps only each block's input (``s*h``) and recomputes one block at a time
during backward, so one block's full set is added once.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.plan.config import ModelConfig

FP32 = 4


@dataclass(frozen=True)
class ActivationEstimate:
    """Activation bytes of one micro-batch on one device.

    Attributes:
        per_token_block: bytes kept per token by one decoder block (without checkpointing).
        blocks: bytes kept by all decoder blocks (checkpointing applied).
        outside_blocks: final norm, head inputs, RoPE tables, targets.
        autocast_weight_copies: bf16 copies of fp32 weights made by autocast and kept for
            backward (full fine-tuning in bf16 without FSDP).
        dequantized_weight: the largest 4-bit weight dequantized to the compute dtype (qlora).
        logits_peak: logits and cross-entropy at their largest (start of backward).
        logits_saved: the logits-gradient left when the head's backward runs.
    """

    per_token_block: int
    blocks: int
    outside_blocks: int
    autocast_weight_copies: int
    dequantized_weight: int
    logits_peak: int
    logits_saved: int

    @property
    def activations(self) -> int:
        """Everything but the logits/cross-entropy term."""
        return (
            self.blocks
            + self.outside_blocks
            + self.autocast_weight_copies
            + self.dequantized_weight
        )


def block_bytes_per_token(
    config: ModelConfig,
    *,
    compute_bytes: int,
    stream_bytes: int,
    lora_modules: list[str],
    lora_r: int,
    lora_dropout: float = 0.0,
    padding_mask: bool = False,
    attention: str = "sdpa",
    seq_len: int = 0,
    trainable_norms: bool = True,
    lora_input_cast: bool = False,
) -> int:
    """Bytes one decoder block keeps for backward, per token (see the module docstring)."""
    h, i, q, kv = config.hidden_size, config.intermediate_size, config.q_dim, config.kv_dim
    c, s = compute_bytes, stream_bytes
    autocast_casts = c < s  # bf16 autocast over an fp32 residual stream
    # Stock peft casts an adapted layer's input to the fp32 LoRA weights and autocast casts it
    # back: each adapted linear then keeps its own bf16 copy. tuneforge turns that cast off
    # (``lora_input_cast=False``): the adapters read the input the base layer reads.
    lora_copies = bool(lora_modules) and c < FP32 and lora_input_cast
    norm = FP32 * h + FP32  # the input upcast to fp32 and rsqrt of the mean square
    if trainable_norms:
        norm += s * h  # x * rsqrt, kept for the norm weight's gradient
    if not autocast_casts and not lora_copies:
        norm += s * h  # the output, kept by the projections that read it
    total = 2 * norm
    if autocast_casts:  # q, k, v, gate, up each keep their own bf16 copy of the fp32 input
        total += 5 * c * h
    heads = config.num_attention_heads
    if attention == "eager":
        # q; K and V repeated to every query head; the fp32 softmax probabilities and their copy
        # in the compute dtype (T per head per query); the output's contiguous copy for o_proj
        total += 4 * c * q + (FP32 + c) * heads * seq_len
    else:
        kv_kept = 2 * q if padding_mask and q != kv else 2 * kv
        # q, k after RoPE, v; log-sum-exp; the output (o_proj reads it in place)
        total += c * (q + kv_kept) + FP32 * heads + c * q
    if config.qk_norm:  # per-head RMSNorm on q and k: input (fp32) and output
        total += (FP32 + c) * (q + kv)
    total += (3 if lora_copies else 4) * c * i  # gate, silu(gate), up [, their product]
    shapes = config.linear_shapes()
    for name in lora_modules:
        total += c * lora_r  # A's output, read by B
        if lora_copies:
            total += c * shapes[name][0]
        if lora_dropout > 0:
            total += (c + 1) * shapes[name][0]
    return total


def estimate_activations(
    config: ModelConfig,
    *,
    method: str,
    batch_size: int,
    max_length: int,
    compute_bytes: int,
    stream_bytes: int,
    lora_modules: list[str],
    lora_r: int,
    lora_dropout: float = 0.0,
    gradient_checkpointing: bool = False,
    supervised_fraction: float = 1.0,
    lm_head_on_supervised_only: bool = True,
    autocast_linear_weights: int = 0,
    padding_mask: bool = False,
    attention: str = "sdpa",
    lora_input_cast: bool = False,
) -> ActivationEstimate:
    """Activation bytes of one micro-batch of ``batch_size`` rows of ``max_length`` tokens.

    Args:
        compute_bytes: bytes per element of matmul outputs (2 for bf16 autocast, 4 for fp32).
        stream_bytes: bytes per element of the residual stream and norm outputs.
        lora_modules: adapted linear names (empty for full fine-tuning).
        autocast_linear_weights: fp32 weight elements that autocast copies to bf16 and keeps.
        supervised_fraction: share of positions whose next token carries loss (0..1].
        lm_head_on_supervised_only: the head runs only on supervised rows (tuneforge's loss);
            False = every position (a stock ``model(labels=...)``).
        attention: ``sdpa`` (no T x T probabilities kept) or ``eager``.
        lora_input_cast: peft's cast of adapter inputs to fp32 is on (stock peft under
            autocast); tuneforge's training turns it off.
    """
    tokens = batch_size * max_length
    per_token = block_bytes_per_token(
        config,
        compute_bytes=compute_bytes,
        stream_bytes=stream_bytes,
        lora_modules=lora_modules,
        lora_r=lora_r,
        lora_dropout=lora_dropout,
        padding_mask=padding_mask,
        attention=attention,
        seq_len=max_length,
        trainable_norms=method == "full",
        lora_input_cast=lora_input_cast,
    )
    layers = config.num_hidden_layers
    if gradient_checkpointing:
        blocks = tokens * (layers * stream_bytes * config.hidden_size + per_token)
    else:
        blocks = tokens * layers * per_token
    if method != "full":  # the frozen embedding's output needs no gradient: block 0's first
        blocks -= tokens * (FP32 * config.hidden_size + FP32)  # norm keeps only its output
    h, vocab = config.hidden_size, config.vocab_size
    if lm_head_on_supervised_only:
        rows = round(batch_size * (max_length - 1) * supervised_fraction)
    else:
        rows = tokens
    final_norm = tokens * (FP32 * h + FP32 + (stream_bytes * h if method == "full" else 0))
    rope = 2 * max_length * config.head_dim * FP32
    # the head keeps its input rows only when its weight trains (full); targets are int64
    head_rows = rows * compute_bytes * h if method == "full" else 0
    outside = final_norm + head_rows + rows * 8 + rope
    copies = compute_bytes * autocast_linear_weights if compute_bytes < FP32 else 0
    dequantized = 0
    if method == "qlora":
        dequantized = compute_bytes * max(i * o for i, o, _ in config.linear_shapes().values())
    # Cross-entropy in fp32: log-softmax output, its gradient, the logits' gradient (N x V each).
    logits_peak = 3 * FP32 * rows * vocab
    if compute_bytes < FP32 and not lm_head_on_supervised_only:
        logits_peak += compute_bytes * rows * vocab  # the bf16 logits before the fp32 upcast
    return ActivationEstimate(
        per_token_block=per_token,
        blocks=blocks,
        outside_blocks=outside,
        autocast_weight_copies=copies,
        dequantized_weight=dequantized,
        logits_peak=logits_peak,
        logits_saved=FP32 * rows * vocab,
    )
