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


def _setup(q, k, v, mask, causal, softmax_scale, upcast):
    fm = as_flashmask(mask, causal)
    causal_eff = fm.causal if fm is not None else causal
    sri = fm.startend_row_indices if fm is not None else None
    D = q.shape[-1]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    cdt = (torch.float64 if q.dtype == torch.float64 else torch.float32) if upcast else q.dtype
    return sri, causal_eff, scale, cdt


def _chunk_probs(qc, kc, sri, causal, r0, r1, Sq, Sk, scale):
    """Softmax probabilities and lse of query rows [r0, r1).

    qc ``(B, Hkv, G, Sq, D)``, kc ``(B, Hkv, 1, D, Sk)``. Returns p ``(B, Hkv, G, R, Sk)``
    (rows that see nothing are all zero) and lse ``(B, Hkv, G, R, 1)`` (-inf there).
    """
    B, Hkv, G = qc.shape[:3]
    H = Hkv * G
    Hm = 1 if sri is None else sri.shape[1]
    s = torch.matmul(qc[:, :, :, r0:r1], kc) * scale  # (B, Hkv, G, R, Sk)
    s = s.reshape(B, Hm, H // Hm, r1 - r0, Sk)
    rows = torch.arange(r0, r1, device=qc.device)
    masked = masked_rows(sri, causal, rows, Sq, Sk).unsqueeze(2)  # (B|1, Hm|1, 1, R, Sk)
    s = s.masked_fill(masked, -math.inf).reshape(B, Hkv, G, r1 - r0, Sk)
    # Note [Masked rows]: a row max of -inf becomes 0, a row sum of 0 writes 0.
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    denom = p.sum(-1, keepdim=True)
    empty = denom == 0
    p = p / torch.where(empty, torch.ones_like(denom), denom)
    lse = torch.where(empty, -math.inf, m + torch.log(torch.where(empty, 1.0, denom)))
    return p, lse


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
        Differentiable in both (autograd), for tests.
    """
    sri, causal, scale, cdt = _setup(q, k, v, mask, causal, softmax_scale, upcast)
    B, Sq, H, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = H // Hkv
    if min(B, Sq, H, Sk) == 0:  # nothing to see: out 0, lse -inf (Note [Masked rows])
        lse = torch.full((B, H, Sq), -math.inf, dtype=torch.float32, device=q.device)
        return q.new_zeros(B, Sq, H, Dv), lse
    qc = q.to(cdt).permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)  # (B, Hkv, G, Sq, D)
    kc = k.to(cdt).permute(0, 2, 3, 1).unsqueeze(2)  # (B, Hkv, 1, D, Sk)
    vc = v.to(cdt).permute(0, 2, 1, 3).unsqueeze(2)  # (B, Hkv, 1, Sk, Dv)
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_ELEMENTS // max(1, B * H * Sk))
    outs, lses = [], []
    for r0 in range(0, Sq, chunk_rows):
        r1 = min(Sq, r0 + chunk_rows)
        p, lse = _chunk_probs(qc, kc, sri, causal, r0, r1, Sq, Sk, scale)
        outs.append(torch.matmul(p, vc).reshape(B, H, r1 - r0, Dv))
        lses.append(lse.reshape(B, H, r1 - r0))
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
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of `attention_ref`'s out (and lse, given ``dlse``).

    The explicit formula the kernels use (no autograd, so it runs inside a custom op):
    P = softmax(S), dV = P^T dO, dP = dO V^T, Delta = rowsum(dO * O) - dlse,
    dS = P * (dP - Delta), dQ = scale * dS K, dK = scale * dS^T Q.

    Args:
        dout: ``(B, Sq, H, Dv)``; dlse: ``(B, H, Sq)`` or None. Rows that see nothing get
            zero gradient (Note [Masked rows]).
    Returns:
        dq ``(B, Sq, H, D)``, dk ``(B, Sk, Hkv, D)``, dv ``(B, Sk, Hkv, Dv)``, in the inputs' dtype.
    """
    sri, causal, scale, cdt = _setup(q, k, v, mask, causal, softmax_scale, True)
    B, Sq, H, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    G = max(1, H // max(1, Hkv))
    dq = torch.zeros(B, Hkv, G, Sq, D, dtype=cdt, device=q.device)
    dk = torch.zeros(B, Hkv, Sk, D, dtype=cdt, device=q.device)
    dv = torch.zeros(B, Hkv, Sk, Dv, dtype=cdt, device=q.device)
    if min(B, Sq, H, Sk) > 0:
        qc = q.to(cdt).permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)
        kc = k.to(cdt).permute(0, 2, 3, 1).unsqueeze(2)  # (B, Hkv, 1, D, Sk)
        vc = v.to(cdt).permute(0, 2, 1, 3).unsqueeze(2)  # (B, Hkv, 1, Sk, Dv)
        doc = dout.to(cdt).permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, Dv)
        dlc = None if dlse is None else dlse.to(cdt).reshape(B, Hkv, G, Sq, 1)
        if chunk_rows is None:
            chunk_rows = max(1, _CHUNK_ELEMENTS // max(1, B * H * Sk))
        for r0 in range(0, Sq, chunk_rows):
            r1 = min(Sq, r0 + chunk_rows)
            p, _ = _chunk_probs(qc, kc, sri, causal, r0, r1, Sq, Sk, scale)
            do = doc[:, :, :, r0:r1]  # (B, Hkv, G, R, Dv)
            o = torch.matmul(p, vc)
            delta = (do * o).sum(-1, keepdim=True)
            if dlc is not None:
                delta = delta - dlc[:, :, :, r0:r1]
            dp = torch.matmul(do, vc.transpose(-1, -2))  # (B, Hkv, G, R, Sk)
            ds = p * (dp - delta) * scale
            dq[:, :, :, r0:r1] = torch.matmul(ds, kc.transpose(-1, -2))
            dk += torch.matmul(ds.transpose(-1, -2), qc[:, :, :, r0:r1]).sum(2)
            dv += torch.matmul(p.transpose(-1, -2), do).sum(2)
    dq_out = dq.reshape(B, H, Sq, D).permute(0, 2, 1, 3).to(q.dtype).contiguous()
    dk_out = dk.permute(0, 2, 1, 3).to(k.dtype).contiguous()
    dv_out = dv.permute(0, 2, 1, 3).to(v.dtype).contiguous()
    return dq_out, dk_out, dv_out
