"""The plan of preference runs: pair rows, and DPO's reference (both choices for full)."""

from __future__ import annotations

import pytest

from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.plan import estimate_memory, gib, load_model_config

LLAMA_7B_PARAMETERS = 6_738_415_616


def test_a_pair_row_is_planned_at_twice_max_length():
    config = load_model_config("llama-7b")
    dpo = estimate_memory(config, method="lora", batch_size=2, max_length=256, objective="dpo")
    as_sft = estimate_memory(config, method="lora", batch_size=2, max_length=512)
    for name in ("activations", "logits + cross-entropy (fp32)"):
        assert dpo.components[name] == as_sft.components[name]
    # LoRA: the reference is the base with the adapter disabled, no extra weights.
    assert dpo.settings["reference"] == "base" and dpo.total == as_sft.total
    assert "batch 2 pairs x 512 tokens (prompt once + chosen + rejected" in dpo.table()
    orpo = estimate_memory(config, method="lora", batch_size=2, max_length=256, objective="orpo")
    assert orpo.settings["reference"] is None and orpo.total == dpo.total


def test_full_dpo_plans_both_references():
    config = load_model_config("llama-7b")
    kwargs = dict(method="full", batch_size=1, max_length=512, objective="dpo")
    precomputed = estimate_memory(config, **kwargs)  # auto: precomputed
    copy = estimate_memory(config, reference="copy", **kwargs)
    assert precomputed.settings["reference"] == "precomputed"
    frozen = copy.components["reference model (frozen copy)"]
    assert frozen == 2 * LLAMA_7B_PARAMETERS  # bf16 weights
    assert copy.total - precomputed.total == frozen
    assert f"with reference copy instead: +{gib(frozen):.2f} GiB" in precomputed.table()
    assert f"peak {gib(copy.total):.2f} GiB" in precomputed.table()
    assert f"precomputed instead the peak would be {gib(precomputed.total):.2f}" in copy.table()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(method="full", reference="base"), "reference base does not apply to method full"),
        (dict(method="lora", reference="copy"), "reference copy does not apply to method lora"),
        (dict(method="lora", objective="kto"), "objective must be one of sft, dpo, orpo"),
    ],
)
def test_references_that_do_not_fit_the_method_are_refused(kwargs, message):
    config = load_model_config("llama-7b")
    with pytest.raises(ConfigError, match=message):
        estimate_memory(config, batch_size=1, max_length=64, **{"objective": "dpo", **kwargs})


def test_cli_plan_takes_the_objective_and_the_reference(capsys):
    args = ["plan", "--model", "llama-7b", "--method", "full", "--objective", "dpo",
            "--batch-size", "1", "--max-length", "512", "--gpu-memory", "80GB"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "full | dpo, reference precomputed | batch 1 pairs x 1024 tokens" in out
    assert "with reference copy instead" in out
    assert main([*args, "--reference", "copy"]) == 0
    assert "reference model (frozen copy)" in capsys.readouterr().out
