"""Which implementation runs an attention call, by device.

Today every device runs the reference (`fm4.reference`: fp32 math, chunked over query rows);
the CuTe DSL kernels take over CUDA sm_90 when they land. ``FM4_BACKEND=reference`` forces the
reference everywhere (for debugging and comparisons).
"""

from __future__ import annotations

import os

import torch

from fm4.interface import check_attention_inputs
from fm4.masks.bounds import check_bounds_values
from fm4.reference import attention_bwd_ref, attention_ref

BACKENDS = ("auto", "reference")


def select_backend(device: torch.device) -> str:
    """The backend for a device: 'reference' for now (see the module docstring)."""
    choice = os.environ.get("FM4_BACKEND", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"FM4_BACKEND={choice!r}: choose one of {', '.join(BACKENDS)}")
    return "reference"


def kernel_status(device: torch.device | str) -> tuple[bool, str]:
    """Whether fm4's own GPU kernels serve ``device``, and why not (for benchmarks and tests)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False, f"{dev.type} runs the reference (fm4's kernels are for CUDA sm_90)"
    return False, "fm4's CuTe DSL attention kernels have not landed yet: CUDA runs the reference"


def _check_values(sri: torch.Tensor | None) -> None:
    # Reading the minimum back syncs the device; skip it while a CUDA graph is being captured.
    if sri is None:
        return
    if sri.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    check_bounds_values(sri)


def attention_forward(q, k, v, sri, causal, softmax_scale):
    """Validate, then run the forward on the selected backend: (out, lse), both contiguous."""
    check_attention_inputs(q, k, v, sri, causal, softmax_scale)
    _check_values(sri)
    select_backend(q.device)
    out, lse = attention_ref(q, k, v, sri, causal, softmax_scale)
    return out.contiguous(), lse.contiguous()


def attention_backward(dout, dlse, q, k, v, out, lse, sri, causal, softmax_scale):
    """Gradients (dq, dk, dv) on the selected backend."""
    select_backend(q.device)
    dq, dk, dv = attention_bwd_ref(dout, q, k, v, sri, causal, softmax_scale, dlse=dlse)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()
