"""``auto`` dtype: bf16 where the device computes it natively (``models.device.native_bf16``),
fp32 elsewhere; an explicit dtype always wins."""

from __future__ import annotations

import pytest
import torch

from tuneforge.models import device as device_module
from tuneforge.models import load_model, resolve_dtype


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch, native, expected):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: native)
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32  # the override


def test_cpu_detection_needs_avx512_bf16_and_onednn(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not device_module.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert device_module.native_bf16(torch.device("cpu")) == onednn


def test_load_model_follows_auto_and_keeps_an_explicit_float32(tiny_model_dir):
    auto = resolve_dtype("auto", torch.device("cpu"))
    assert load_model(str(tiny_model_dir), device="cpu").model.dtype == auto
    kept = load_model(str(tiny_model_dir), dtype="float32", device="cpu").model.dtype
    assert kept == torch.float32
