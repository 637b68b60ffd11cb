"""Backend selection, without a GPU (device queries patched where needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fm4 import backends


def test_cpu_runs_reference():
    q = torch.zeros(1, 4, 2, 8)
    assert backends.select_backend(q, q, q, None, False) == "reference"
    ok, reason = backends.kernel_status("cpu")
    assert not ok and "reference" in reason


def test_non_hopper_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA A100")
    ok, reason = backends.kernel_status("cuda")
    assert not ok and "sm_80" in reason and "A100" in reason
    fake_q = SimpleNamespace(device=torch.device("cuda"))
    with pytest.raises(NotImplementedError, match=r"no kernel for this device.*FM4_BACKEND"):
        backends.select_backend(fake_q, None, None, None, False)
    monkeypatch.setenv("FM4_BACKEND", "reference")
    assert backends.select_backend(fake_q, None, None, None, False) == "reference"


def test_bad_backend_env(monkeypatch):
    monkeypatch.setenv("FM4_BACKEND", "triton")
    q = torch.zeros(1, 4, 2, 8)
    with pytest.raises(ValueError, match=r"FM4_BACKEND='triton'"):
        backends.select_backend(q, q, q, None, False)


def test_bounds_values_checked_once_per_tensor_version():
    sri = torch.full((1, 1, 8, 1), 8, dtype=torch.int32)
    backends._check_values(sri)
    assert backends._validated[id(sri)][1] == sri._version
    sri[0, 0, 3, 0] = -1  # an in-place change bumps the version: checked again
    with pytest.raises(ValueError, match="negative value -1"):
        backends._check_values(sri)
