"""The causal-LM loss with the LM head applied only where a label is set.

A stock ``model(input_ids, labels=...)`` computes logits [B, T, V] for every position and then
discards the prompt positions. On the default model (V = 49,152, hidden 576) the head is about a
fifth of the forward FLOPs and its logits are most of the activation memory; with chat data most
positions are prompt tokens. Here the decoder body runs once, and the head (and the softmax) run
only on the rows whose next token carries a label.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def autocast_for(device: torch.device, compute_dtype: torch.dtype):
    """The context forward passes run in: autocast to ``compute_dtype`` unless it is fp32."""
    if compute_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype)


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder body and the output head of a causal LM, peft-wrapped or not.

    peft injects LoRA layers in place, so the base model's own decoder already carries them.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def output_size(model: nn.Module) -> int:
    """Rows of the output head: the vocabulary the loss normalises over (sharded or not)."""
    _, head = causal_lm_parts(model)
    return int(head.weight.shape[0])


def supervised_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift labels by one and find the supervised positions.

    Args:
        labels: [B, T] token ids, ``-100`` where no loss is taken (unshifted: ``labels[t]`` is
            the token at position t).

    Returns:
        (mask [B, T-1] bool: position t predicts a labelled token t+1; targets [N] ids).
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    return mask, shifted[mask]


def supervised_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy (nats) over the supervised tokens of a batch.

    Args:
        model: a causal LM (transformers, optionally peft-wrapped).
        batch: ``input_ids`` [B, T], ``labels`` [B, T], optional ``attention_mask`` [B, T] and
            ``position_ids`` [B, T] (packed rows restart positions per example).

    Returns:
        a scalar tensor; divide by the number of supervised tokens for the mean.
    """
    decoder, head = causal_lm_parts(model)
    mask, targets = supervised_targets(batch["labels"])
    hidden = decoder(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
        use_cache=False,
    ).last_hidden_state  # [B, T, H]
    rows = hidden[:, :-1][mask]  # [N, H]: only positions whose next token is supervised
    logits = head(rows)  # [N, V]
    # Cross-entropy in fp32 for stability; N is the supervised count, so this upcast is small.
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def supervised_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss in a batch (labels set at positions 1..T-1)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
