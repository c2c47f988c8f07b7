"""plan_for_run: a training config mapped onto the planner as the run resolves it."""

from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError
from tuneforge.plan import estimate_memory, load_model_config
from tuneforge.train.config import config_from_dict
from tuneforge.train.planning import plan_for_run, planned_device_type


def _config(**values):
    return config_from_dict({"model": "llama-7b", "batch_size": 2, "max_length": 256, **values})


@pytest.mark.parametrize(
    ("dtype", "device_type", "bf16_supported", "expected"),
    [
        ("auto", "cuda", True, "bfloat16"),  # what a GPU run of dtype auto computes in
        ("auto", "cuda", False, "float32"),
        ("auto", "cpu", True, "bfloat16"),  # a CPU with AVX512-BF16 / AMX
        ("auto", "cpu", False, "float32"),
        ("bfloat16", "cpu", False, "bfloat16"),
    ],
)
def test_auto_dtype_is_what_the_run_uses(dtype, device_type, bf16_supported, expected):
    plan = plan_for_run(
        _config(dtype=dtype), device_type=device_type, bf16_supported=bf16_supported
    )
    assert plan.settings["dtype"] == expected


def test_a_cpu_plan_asks_this_cpu_as_the_run_does():
    import torch

    from tuneforge.models.device import native_bf16

    expected = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"
    assert plan_for_run(_config(), device_type="cpu").settings["dtype"] == expected
    assert plan_for_run(_config(), device_type="cuda").settings["dtype"] == "bfloat16"


def test_world_size_strategy_attention_and_padding_are_the_runs():
    plan = plan_for_run(_config(strategy="fsdp"), device_type="cuda", world_size=4)
    assert "4 x cuda (fsdp)" in plan.table()
    assert plan_for_run(_config(), device_type="cuda", world_size=2).settings["strategy"] == "ddp"
    with pytest.raises(ConfigError, match="'none' \\(one process\\) but there are 2"):
        plan_for_run(_config(strategy="none"), device_type="cuda", world_size=2)
    # bf16 on CPU up to 512 tokens trains with eager attention (train.methods); packing: no mask
    short = plan_for_run(_config(dtype="bfloat16", packing=True), device_type="cpu")
    assert short.settings["attention"] == "eager" and short.settings["padding_mask"] is False
    long = plan_for_run(_config(dtype="bfloat16", max_length=1024), device_type="cpu")
    assert long.settings["attention"] == "sdpa" and long.settings["padding_mask"] is True


def test_plan_for_run_is_the_planner_with_the_runs_settings():
    config = _config(
        method="qlora", lora_r=4, grad_accum=3, optimizer="adamw_8bit", lora_dropout=0.1
    )
    plan = plan_for_run(config, device_type="cuda", supervised_fraction=0.25)
    direct = estimate_memory(
        load_model_config("llama-7b"),
        method="qlora",
        batch_size=2,
        max_length=256,
        dtype="bfloat16",
        lora_r=4,
        optimizer="adamw_8bit",
        grad_accum=3,
        lora_dropout=0.1,
        supervised_fraction=0.25,
        padding_mask=True,
    )
    assert plan.components == direct.components


def test_planned_device_auto_is_a_gpu():
    assert [planned_device_type(d) for d in ("auto", "cpu", "cuda", "cuda:1")] == [
        "cuda",
        "cpu",
        "cuda",
        "cuda",
    ]
