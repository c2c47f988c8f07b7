"""A KV cache with one slot per row, each row at its own positions (no padding).

The transformers caches keep every row of a batch at the same position, so rows of different
lengths are left-padded and a row can only join a batch before it starts. Here each row owns a
slot and starts at column 0 of it: a forward writes row ``b``'s new keys and values at its own
``positions[b]``, and attention reads columns ``[0, span)`` of every slot under a mask that hides
what lies beyond each row's own length. Rows join (their prompt is written into a free slot) and
leave (the last slot moves into the freed one) between decode steps: continuous batching.

``llama_forward`` reads it through ``update(key_states, value_states, layer_idx)`` (the method
transformers' attention layers call) and ``attention_mask()``; ``place`` computes what every
layer of a forward shares once, so that a decode step's layers do no index or mask arithmetic.
"""

from __future__ import annotations

import torch

COLUMN_BLOCK = 256  # columns are added in blocks of this many (tokens), so growth is rare


class SlotCache:
    """Keys and values of up to ``slots`` rows, ``[slots, kv_heads, columns, head_dim]`` a layer.

    Before each forward the caller ``place``s its rows: ``rows`` (the slot of each input row,
    ``[n]``), ``positions`` (each input token's position in its row, ``[n, q]``), ``span`` (how
    many columns attention reads: every row's length after this forward), and what every layer
    of the forward shares (where the new keys go, the attention mask) computed once.

    Args:
        layers: decoder layers of the model.
        kv_heads: key/value heads per layer.
        head_dim: size of one head.
        dtype: the model's dtype.
        device: the model's device.
    """

    def __init__(
        self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.shape = (0, kv_heads, 0, head_dim)
        self.dtype = dtype
        self.device = device
        self.keys = [torch.empty(self.shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(self.shape, dtype=dtype, device=device) for _ in range(layers)]
        self._flatten()
        self.rows = torch.zeros(0, dtype=torch.long, device=device)
        self.positions = torch.zeros((0, 1), dtype=torch.long, device=device)
        self.span = 0
        self.in_slot_order = True  # rows are slots 0..n-1: attention reads views, no copies
        # where each input token's (kv head, position) lands among the rows of a layer's cache
        # flattened to [slots * kv_heads * columns, head_dim]: [n, kv_heads, q]
        self._write_index = torch.zeros((0, kv_heads, 1), dtype=torch.long, device=device)
        self._mask: torch.Tensor | None = None

    @classmethod
    def for_model(cls, config, dtype: torch.dtype, device: torch.device) -> SlotCache:
        """A cache sized for a transformers decoder ``config`` (heads, head size, layers)."""
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return cls(config.num_hidden_layers, kv_heads, head_dim, dtype, device)

    @property
    def slots(self) -> int:
        """Rows the cache holds now (it grows on ``reserve``)."""
        return self.shape[0]

    @property
    def columns(self) -> int:
        """Positions each slot holds now (tokens; it grows on ``reserve``)."""
        return self.shape[2]

    def reserve(self, slots: int, columns: int) -> None:
        """Grow to at least ``slots`` rows of ``columns`` positions, keeping what is stored.

        Slots double and columns grow by ``COLUMN_BLOCK`` multiples, so that a batch growing a
        row or a token at a time reallocates rarely.
        """
        have_slots, heads, have_columns, head_dim = self.shape
        if slots <= have_slots and columns <= have_columns:
            return
        new_slots = max(have_slots, 1)
        while new_slots < slots:
            new_slots *= 2
        new_columns = max(have_columns, -(-columns // COLUMN_BLOCK) * COLUMN_BLOCK)
        self.shape = (new_slots, heads, new_columns, head_dim)
        for stored in (self.keys, self.values):
            for layer, old in enumerate(stored):
                grown = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
                grown[:have_slots, :, :have_columns] = old
                stored[layer] = grown
        self._flatten()

    def _flatten(self) -> None:
        """Each layer's keys and values as ``[slots * kv_heads * columns, head_dim]`` views,
        where ``update`` writes (made once per growth, not once per layer and step)."""
        self._flat_keys = [layer.view(-1, self.shape[3]) for layer in self.keys]
        self._flat_values = [layer.view(-1, self.shape[3]) for layer in self.values]

    def place(self, first_slot: int, positions: list[list[int]]) -> None:
        """Set the next forward's rows: slots ``first_slot, first_slot + 1, ...``, the tokens
        of slot ``first_slot + b`` at ``positions[b]`` (the same count for every row), growing
        the cache where they do not fit.

        Computes once what every layer's ``update`` and attention share: the columns the new
        keys and values go to and the attention mask (none when one new token per row sees
        every column, as when all rows have the same length).
        """
        count = len(positions)
        span = max(max(row) for row in positions) + 1
        self.reserve(first_slot + count, span)
        self.rows = torch.arange(first_slot, first_slot + count, device=self.device)
        self.positions = torch.tensor(positions, device=self.device)
        self.span = span
        self.in_slot_order = first_slot == 0
        _, kv_heads, columns, _ = self.shape
        heads = torch.arange(kv_heads, device=self.device)
        first_rows = (self.rows[:, None] * kv_heads + heads) * columns  # [n, kv_heads]
        self._write_index = first_rows[:, :, None] + self.positions[:, None, :]
        sees_all = all(len(row) == 1 and row[0] == span - 1 for row in positions)
        self._mask = None if sees_all else self._causal_mask()

    def copy_slot(self, source: int, target: int, length: int) -> None:
        """Copy positions ``[0, length)`` of slot ``source`` into slot ``target``, every layer."""
        if source == target or length == 0:
            return
        for stored in (self.keys, self.values):
            for layer in stored:
                layer[target, :, :length] = layer[source, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *_, **__
    ):
        """Store this forward's keys/values ``[n, kv_heads, q, head_dim]`` at their positions and
        return every input row's keys and values over ``[0, span)`` (what attention reads)."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # one index into the flattened cache, computed by ``place`` for every layer
        self._flat_keys[layer_idx].index_put_((self._write_index,), key_states)
        self._flat_values[layer_idx].index_put_((self._write_index,), value_states)
        if self.in_slot_order:
            count = key_states.shape[0]
            return keys[:count, :, : self.span], values[:count, :, : self.span]
        return keys[self.rows, :, : self.span], values[self.rows, :, : self.span]

    def attention_mask(self) -> torch.Tensor | None:
        """``[n, 1, q, span]``: token ``(b, i)`` sees the columns at or before its position;
        None when every token sees all ``span`` columns (attention then needs no mask)."""
        return self._mask

    def _causal_mask(self) -> torch.Tensor:
        columns = torch.arange(self.span, device=self.device)
        return (columns <= self.positions[:, :, None])[:, None]
