"""The torch.library ops: ``torch.ops.fm4.attention`` and ``torch.ops.fm4.attention_bwd``.

Both are functional (they allocate and return their outputs) and have fake implementations, so
torch.compile traces them (fullgraph, dynamic shapes); autograd goes from the forward to the
backward op. Which implementation runs is chosen by `fm4.backends.select_backend`.

Note [lse gradient]: the log-sum-exp output is differentiable: d lse_i / d s_ij = P_ij, which the
backward folds in as dS = P * (dP - (rowsum(dO * O) - dlse)).
"""

from __future__ import annotations

import torch

from fm4.backends import attention_backward, attention_forward
from fm4.interface import check_attention_inputs


@torch.library.custom_op("fm4::attention", mutates_args=())
def attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    startend_row_indices: torch.Tensor | None,
    causal: bool,
    softmax_scale: float | None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked attention forward. q ``(B, Sq, H, D)``, k/v ``(B, Sk, Hkv, D|Dv)``,
    startend_row_indices int32 ``[B, Hm, Sk, n]`` or None. Returns out ``(B, Sq, H, Dv)`` and
    lse fp32 ``(B, H, Sq)``. ``deterministic`` is for the backward (bitwise-reproducible
    gradients); the forward is deterministic anyway.
    """
    return attention_forward(q, k, v, startend_row_indices, causal, softmax_scale)


@attention_op.register_fake
def _attention_fake(q, k, v, startend_row_indices, causal, softmax_scale, deterministic=False):
    check_attention_inputs(q, k, v, startend_row_indices, causal, softmax_scale)
    B, Sq, H, _ = q.shape
    out = q.new_empty(B, Sq, H, v.shape[-1])
    lse = q.new_empty(B, H, Sq, dtype=torch.float32)
    return out, lse


@torch.library.custom_op("fm4::attention_bwd", mutates_args=())
def attention_bwd_op(
    dout: torch.Tensor,
    dlse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    startend_row_indices: torch.Tensor | None,
    causal: bool,
    softmax_scale: float | None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked attention backward: (dq, dk, dv) shaped like (q, k, v). See Note [lse gradient]."""
    return attention_backward(
        dout, dlse, q, k, v, out, lse, startend_row_indices, causal, softmax_scale, deterministic
    )


@attention_bwd_op.register_fake
def _attention_bwd_fake(
    dout, dlse, q, k, v, out, lse, startend_row_indices, causal, scale, deterministic=False
):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, sri, causal, scale, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, sri)
    ctx.causal = causal
    ctx.softmax_scale = scale
    ctx.deterministic = deterministic


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, sri = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = attention_bwd_op(
        dout.contiguous(),
        dlse,
        q,
        k,
        v,
        out,
        lse,
        sri,
        ctx.causal,
        ctx.softmax_scale,
        ctx.deterministic,
    )
    return dq, dk, dv, None, None, None, None


attention_op.register_autograd(_backward, setup_context=_setup_context)
