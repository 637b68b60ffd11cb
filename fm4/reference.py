"""Reference attention with FlashMask masks: fp32 math on upcast inputs, chunked over rows.

Tests, benchmarks and users share it; it is also what `torch.ops.fm4.attention` runs on the CPU.

Note [Masked rows]: a query row that sees no key at all has output 0 and log-sum-exp -inf, and
gets zero gradient; nothing is NaN. The online-softmax kernels reach the same result by treating
a row maximum of -inf as 0 before exponentiating and a row sum of 0 as "write 0".
"""

from __future__ import annotations

import math

import torch

from fm4.masks.bounds import masked_rows
from fm4.masks.flashmask import FlashMask, as_flashmask

#: Scores held at once per chunk (elements of fp32), to bound memory at long lengths.
_CHUNK_ELEMENTS = 1 << 27


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: FlashMask | torch.Tensor | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    *,
    upcast: bool = True,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + mask) v, with the mask given as FlashMask column bounds.

    Args:
        q: ``(B, Sq, H, D)``; k: ``(B, Sk, Hkv, D)``; v: ``(B, Sk, Hkv, Dv)``; H % Hkv == 0.
        mask: a FlashMask, an int32 ``startend_row_indices`` ``[B, Hm, Sk, n]`` (then
            ``causal`` says how to read it), or None (just ``causal``).
        causal: used when ``mask`` is not a FlashMask (a FlashMask carries its own).
        softmax_scale: default ``1 / sqrt(D)``.
        upcast: compute in fp32 (fp64 for fp64 inputs); else in the input dtype, the way a
            same-precision PyTorch implementation would (used to measure PyTorch's own error).
        chunk_rows: query rows per chunk (default: as many as fit ~128M scores).
    Returns:
        out ``(B, Sq, H, Dv)`` in q's dtype, and lse ``(B, H, Sq)`` fp32 (natural log).
    """
    fm = as_flashmask(mask, causal)
    causal_eff = fm.causal if fm is not None else causal
    sri = fm.startend_row_indices if fm is not None else None
    B, Sq, H, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    Dv = v.shape[-1]
    G = H // Hkv
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    cdt = (torch.float64 if q.dtype == torch.float64 else torch.float32) if upcast else q.dtype
    out = q.new_zeros(B, Sq, H, Dv)
    lse = torch.full((B, H, Sq), -math.inf, dtype=torch.float32, device=q.device)
    if min(B, Sq, H) == 0:
        return out, lse
    qc = q.to(cdt).permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)  # (B, Hkv, G, Sq, D)
    kc = k.to(cdt).permute(0, 2, 3, 1).unsqueeze(2)  # (B, Hkv, 1, D, Sk)
    vc = v.to(cdt).permute(0, 2, 1, 3).unsqueeze(2)  # (B, Hkv, 1, Sk, Dv)
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_ELEMENTS // max(1, B * H * Sk))
    Hm = 1 if sri is None else sri.shape[1]
    outs, lses = [], []
    for r0 in range(0, Sq, chunk_rows):
        r1 = min(Sq, r0 + chunk_rows)
        s = torch.matmul(qc[:, :, :, r0:r1], kc) * scale  # (B, Hkv, G, R, Sk)
        s = s.reshape(B, Hm, H // Hm, r1 - r0, Sk)
        rows = torch.arange(r0, r1, device=q.device)
        masked = masked_rows(sri, causal_eff, rows, Sq, Sk).unsqueeze(2)  # (B|1, Hm|1, 1, R, Sk)
        s = s.masked_fill(masked, -math.inf).reshape(B, Hkv, G, r1 - r0, Sk)
        # Note [Masked rows]: a row max of -inf becomes 0, a row sum of 0 writes 0.
        m = s.amax(-1, keepdim=True).detach()
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m)
        denom = p.sum(-1, keepdim=True)
        o = torch.matmul(p, vc) / torch.where(denom == 0, torch.ones_like(denom), denom)
        outs.append(o.reshape(B, H, r1 - r0, Dv))
        empty = denom == 0
        lse_c = torch.where(empty, -math.inf, m + torch.log(torch.where(empty, 1.0, denom)))
        lses.append(lse_c.reshape(B, H, r1 - r0))
    out = torch.cat(outs, dim=2).permute(0, 2, 1, 3).to(q.dtype).contiguous()
    lse = torch.cat(lses, dim=2).to(torch.float32)
    return out, lse


def attention_bwd_ref(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: FlashMask | torch.Tensor | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    *,
    dlse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of `attention_ref`'s out (and lse, given ``dlse``), by
    recomputation and autograd. dout ``(B, Sq, H, Dv)``; dlse fp32 ``(B, H, Sq)`` or None.
    """
    with torch.enable_grad():
        qr, kr, vr = (t.detach().requires_grad_(True) for t in (q, k, v))
        out, lse = attention_ref(qr, kr, vr, mask, causal, softmax_scale)
        outs, grads = [out], [dout]
        if dlse is not None:
            # Fully masked rows have lse = -inf and no gradient (Note [Masked rows]).
            outs.append(lse)
            grads.append(torch.where(torch.isinf(lse), 0.0, dlse.to(lse.dtype)))
        dq, dk, dv = torch.autograd.grad(outs, (qr, kr, vr), grads, allow_unused=True)
    grads_out = [
        torch.zeros_like(t) if g is None else g
        for g, t in zip((dq, dk, dv), (q, k, v), strict=True)
    ]
    return grads_out[0], grads_out[1], grads_out[2]
