"""Data: user files in, token ids, loss masks and packed batches out.

from tuneforge.data import DataConfig, prepare_data, make_batches
prepared = prepare_data(DataConfig(path="train.jsonl", max_length=512), tokenizer)
batches = make_batches(prepared.train, batch_size=8, max_length=512, packing=True,
                       pad_token_id=ensure_pad_token(tokenizer), seed=0, epoch=0)

Preference data (``{"prompt", "chosen", "rejected"}``) gives ``TokenizedPair``s instead; batch
them with ``make_pair_batches`` (``tuneforge.data.preference``: truncation rule, shared prompt).
"""

from tuneforge.data.batching import (
    Batch,
    count_real_tokens,
    ensure_pad_token,
    make_batches,
    pack_rows,
    packing_efficiency,
    pick_pad_token,
)
from tuneforge.data.config import DataConfig
from tuneforge.data.preference import TokenizedPair, make_pair_batches
from tuneforge.data.prepare import DataReport, PreparedData, prepare_data
from tuneforge.data.rendering import ChatRenderer, Rendered
from tuneforge.data.templates import FALLBACK_CHAT_TEMPLATE, ensure_chat_template
from tuneforge.data.tokenization import IGNORE_INDEX, TokenizedExample

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "IGNORE_INDEX",
    "Batch",
    "ChatRenderer",
    "DataConfig",
    "DataReport",
    "PreparedData",
    "Rendered",
    "TokenizedExample",
    "TokenizedPair",
    "count_real_tokens",
    "ensure_chat_template",
    "ensure_pad_token",
    "make_batches",
    "make_pair_batches",
    "pack_rows",
    "packing_efficiency",
    "pick_pad_token",
    "prepare_data",
]
