"""Test assets for the adapters tests: random LoRA adapters made with peft on tiny models.

The adapters' B matrices are initialised non-zero (``init_lora_weights=False``) so every
adapter changes the outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_lora(
    model_dir: Path,
    out: Path,
    *,
    seed: int = 1,
    r: int = 4,
    targets="all-linear",
    plain_peft: bool = False,
    quantize: bool = False,
    **config,
) -> Path:
    """Save a random LoRA adapter for the model in ``model_dir`` (tuneforge or plain peft)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from tuneforge.adapters import save_adapter

    kwargs = {}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, **kwargs)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False, **config
    )
    peft_model = get_peft_model(model, lora)
    if plain_peft:
        peft_model.save_pretrained(str(out))
    else:
        save_adapter(peft_model, out, AutoTokenizer.from_pretrained(str(model_dir)))
    return Path(out)


def load_base(model_dir: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(str(model_dir))


def sample_ids(tokenizer) -> torch.Tensor:
    texts = ["The capital of France is Paris.", "Please return the order as JSON."]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    width = min(len(r) for r in rows)
    return torch.tensor([r[:width] for r in rows])


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float()


def save_lively_model(folder: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A tiny Llama whose greedy continuations vary (matrices drawn with std 0.2, not 0.02).

    At the default init a width-32 model repeats one token forever, which would let a batch
    that mixes up adapters pass a token-equality test by accident.
    """
    from tiny import build_llama, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_llama(tokenizer, seed=seed, hidden_size=hidden_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return Path(folder)
