"""Validation of attention inputs: the one place where arguments are checked.

`check_attention_inputs` reads only metadata (shapes, dtypes, devices), so the op's fake
implementation runs it too and torch.compile reports bad input at trace time. The bounds' values
(no negatives) are checked by `fm4.masks.bounds.check_bounds_values` in the real implementation.
Every error names the argument, the value and the fix.
"""

from __future__ import annotations

import math

import torch

from fm4.masks.bounds import check_bounds_meta

#: dtypes the GPU kernels take; the CPU reference path also takes fp32 and fp64.
KERNEL_DTYPES = (torch.float16, torch.bfloat16)
REFERENCE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_HEAD_DIM = 256


def default_softmax_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0


def check_attention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    startend_row_indices: torch.Tensor | None,
    causal: bool,
    softmax_scale: float | None,
    *,
    names: tuple[str, str, str] = ("q", "k", "v"),
) -> None:
    """Check the attention arguments' metadata; raise TypeError/ValueError on bad input.

    Layout: q ``(B, Sq, H, D)``, k ``(B, Sk, Hkv, D)``, v ``(B, Sk, Hkv, Dv)``,
    startend_row_indices int32 ``[B, Hm, Sk, n]`` with Hm in {1, Hkv, H}.
    """
    qn, kn, vn = names
    for name, t in zip(names, (q, k, v), strict=True):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} (rank {t.dim()}): it must be rank 4, "
                "(batch, seqlen, heads, head_dim); add a batch dimension with unsqueeze(0) or "
                "move heads after the sequence with transpose(1, 2)"
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            f"{qn}, {kn}, {vn} have dtypes {q.dtype}, {k.dtype}, {v.dtype}: they must share one "
            "dtype (cast with .to(q.dtype))"
        )
    dev = q.device
    for name, t in ((kn, k), (vn, v), ("startend_row_indices", startend_row_indices)):
        if t is not None and t.device != dev:
            raise ValueError(
                f"{name} is on {t.device} but {qn} is on {dev}: move all inputs to one device "
                f"(e.g. {name}.to({qn}.device))"
            )
    if dev.type == "cuda":
        if q.dtype not in KERNEL_DTYPES:
            raise TypeError(
                f"{qn} has dtype {q.dtype}: on CUDA fm4 takes torch.float16 or torch.bfloat16 "
                f"(cast with .to(torch.bfloat16)); {q.dtype} runs only on the CPU reference path "
                "(fm4.reference.attention_ref)"
            )
    elif q.dtype not in REFERENCE_DTYPES:
        raise TypeError(
            f"{qn} has dtype {q.dtype}: fm4 takes float16/bfloat16 (and float32/float64 on the "
            "CPU reference path)"
        )
    B, _, H, D = q.shape
    Bk, Sk, Hkv, Dk = k.shape
    Bv, Skv, Hv, Dv = v.shape
    if Bk != B or Bv != B:
        raise ValueError(
            f"batch sizes differ: {qn} {B}, {kn} {Bk}, {vn} {Bv} (dimension 0 of (B, S, H, D))"
        )
    if Skv != Sk:
        raise ValueError(
            f"{kn} has {Sk} keys but {vn} has {Skv} values (dimension 1): they must be equal"
        )
    if Hv != Hkv:
        raise ValueError(
            f"{kn} has {Hkv} heads but {vn} has {Hv} (dimension 2): they must be equal"
        )
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(
            f"{qn} has {H} heads and {kn}/{vn} have {Hkv}: the query heads must be a multiple of "
            "the key/value heads (GQA/MQA); repeat the key/value heads or change num_heads"
        )
    if Dk != D:
        raise ValueError(
            f"{qn} has head_dim {D} but {kn} has {Dk} (dimension 3): they must be equal"
        )
    for name, d in ((qn, D), (vn, Dv)):
        if d <= 0 or d > MAX_HEAD_DIM or d % 8 != 0:
            raise ValueError(
                f"{name} has head_dim {d}: fm4 supports head dims that are multiples of 8 up to "
                f"{MAX_HEAD_DIM} (pad the head dimension with zeros)"
            )
    if softmax_scale is not None and not math.isfinite(softmax_scale):
        raise ValueError(f"softmax_scale={softmax_scale}: it must be a finite number, or None")
    sri = startend_row_indices
    if sri is None:
        return
    check_bounds_meta(sri, causal)
    Bm, Hm, Skm, _ = sri.shape
    if Bm != B:
        raise ValueError(
            f"startend_row_indices has batch {Bm} (shape {tuple(sri.shape)}) but {qn} has batch "
            f"{B}: dimension 0 must equal the batch (use .expand({B}, -1, -1, -1))"
        )
    if Skm != Sk:
        raise ValueError(
            f"startend_row_indices has shape {tuple(sri.shape)}: dimension 2 must be the key "
            f"length {Sk} of {kn} (one row of bounds per key column)"
        )
    if Hm not in (1, Hkv, H):
        raise ValueError(
            f"startend_row_indices has {Hm} mask heads (shape {tuple(sri.shape)}): it must be 1, "
            f"the number of key/value heads {Hkv}, or the number of query heads {H}"
        )
