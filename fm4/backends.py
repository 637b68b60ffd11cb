"""Which implementation runs an attention call, by device.

* CPU: the reference (`fm4.reference`, fp32 math, chunked over query rows).
* CUDA, sm_90 (H100/H200): fm4's CuTe DSL kernels, forward (`fm4.cute_kernels.fwd_sm90`) and
  backward (`fm4.cute_kernels.bwd_sm90`).
* Other CUDA devices, or inputs a kernel cannot take (e.g. head dims other than 64/128/256):
  a clear error. ``FM4_BACKEND=reference`` runs the reference
  anywhere, on request only.
"""

from __future__ import annotations

import os
import weakref

import torch

from fm4.interface import check_attention_inputs
from fm4.masks.bounds import check_bounds_values
from fm4.reference import attention_bwd_ref, attention_ref

BACKENDS = ("auto", "reference")


def _requested() -> str:
    choice = os.environ.get("FM4_BACKEND", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"FM4_BACKEND={choice!r}: choose one of {', '.join(BACKENDS)}")
    return choice


def kernel_status(device: torch.device | str, direction: str = "fwd") -> tuple[bool, str]:
    """Whether fm4's own GPU kernel serves ``device`` for ``direction`` ('fwd' or 'bwd'), and
    why not (for dispatch, benchmarks and test skips)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False, f"{dev.type} runs the reference (fm4's kernels are for CUDA sm_90)"
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    major, minor = torch.cuda.get_device_capability(dev)
    if major != 9:
        return False, (
            f"{torch.cuda.get_device_name(dev)} is sm_{major}{minor}: fm4's kernels run on sm_90 "
            "(H100/H200) only"
        )
    try:
        import cutlass  # noqa: F401
    except ImportError as e:
        return False, f"the CuTe DSL (nvidia-cutlass-dsl) is not importable: {e}"
    return True, ""


def select_backend(q, k, v, sri, causal) -> str:
    """'reference' or 'sm90' for these (validated) inputs; raises when no kernel fits."""
    if _requested() == "reference" or q.device.type != "cuda":
        return "reference"
    ok, reason = kernel_status(q.device)
    if not ok:
        raise NotImplementedError(
            f"fm4 has no kernel for this device: {reason}. Set FM4_BACKEND=reference to run the "
            "(slow) fp32 reference instead"
        )
    from fm4.cute_kernels.fwd_launch import can_implement

    ok, reason = can_implement(q, k, v, sri, causal)
    if not ok:
        raise ValueError(
            f"fm4's sm90 kernel cannot run these inputs: {reason}. Set FM4_BACKEND=reference to "
            "run the (slow) fp32 reference instead"
        )
    return "sm90"


# Bounds tensors already checked for negative values: id -> (weakref, version). A tensor that
# is reused unchanged (the same mask for every layer, or a timing loop) is read back once.
_validated: dict[int, tuple[weakref.ref, int]] = {}


def _check_values(sri: torch.Tensor | None) -> None:
    if sri is None:
        return
    # Reading the minimum back syncs the device; never inside a CUDA graph capture.
    if sri.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    seen = _validated.get(id(sri))
    if seen is not None and seen[0]() is sri and seen[1] == sri._version:
        return
    check_bounds_values(sri)
    if len(_validated) > 64:
        for key in [k for k, (ref, _) in _validated.items() if ref() is None]:
            del _validated[key]
    _validated[id(sri)] = (weakref.ref(sri), sri._version)


def attention_forward(q, k, v, sri, causal, softmax_scale):
    """Validate, then run the forward on the selected backend: (out, lse), both contiguous."""
    check_attention_inputs(q, k, v, sri, causal, softmax_scale)
    _check_values(sri)
    if select_backend(q, k, v, sri, causal) == "sm90":
        from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

        return attention_fwd_sm90(q, k, v, sri, causal, softmax_scale)
    out, lse = attention_ref(q, k, v, sri, causal, softmax_scale)
    return out.contiguous(), lse.contiguous()


def select_backend_bwd(q, k, v, out, dout, sri, causal, deterministic) -> str:
    """'reference' or 'sm90' for the backward of these inputs; raises when no kernel fits."""
    if _requested() == "reference" or q.device.type != "cuda":
        return "reference"
    ok, reason = kernel_status(q.device, "bwd")
    if not ok:
        raise NotImplementedError(
            f"fm4 has no backward kernel for this device: {reason}. Set FM4_BACKEND=reference to "
            "run the (slow) fp32 reference instead"
        )
    from fm4.cute_kernels.bwd_launch import can_implement

    ok, reason = can_implement(dout, q, k, v, out, sri, causal, deterministic)
    if not ok:
        raise ValueError(
            f"fm4's sm90 backward kernel cannot run these inputs: {reason}. Set "
            "FM4_BACKEND=reference to run the (slow) fp32 reference instead"
        )
    return "sm90"


def attention_backward(dout, dlse, q, k, v, out, lse, sri, causal, softmax_scale, deterministic):
    """Gradients (dq, dk, dv), contiguous, on the selected backend.

    ``deterministic``: bitwise-identical gradients from run to run (the sm90 kernel orders its
    dQ accumulation); the reference is deterministic anyway.
    """
    if select_backend_bwd(q, k, v, out, dout, sri, causal, deterministic) == "sm90":
        from fm4.cute_kernels.bwd_launch import attention_bwd_sm90

        return attention_bwd_sm90(
            dout, q, k, v, out, lse, sri, causal, softmax_scale, dlse, deterministic=deterministic
        )
    dq, dk, dv = attention_bwd_ref(dout, q, k, v, sri, causal, softmax_scale, dlse=dlse)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()
