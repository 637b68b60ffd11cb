"""Correctness of an implementation's output on a slice, before it is timed.

The dense reference does not fit at 128K, so the check takes batch element 0, two query heads
(the first and the last) and three groups of query rows (first, middle, last), and compares them
with fp32 attention over all keys for those rows, masked by the FlashMask bounds
(`fm4.masks.bounds.masked_rows`). The tolerance is relative to PyTorch's own bf16 error on the
same rows: ``err <= 2 * err_pytorch + 1e-3`` (relative Frobenius norms); NaN never passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fm4.masks.bounds import masked_rows


@dataclass(frozen=True)
class CheckResult:
    """Relative error of the implementation and of a bf16 PyTorch computation, and the verdict."""

    err: float
    err_pytorch: float
    tol: float
    ok: bool

    def describe(self) -> str:
        return f"rel err {self.err:.2e} (PyTorch bf16 {self.err_pytorch:.2e}, tol {self.tol:.2e})"


def check_rows(seqlen_q: int, rows_per_group: int = 128) -> torch.Tensor:
    """Query rows checked: the first, middle and last ``rows_per_group`` rows (unique, sorted)."""
    r = min(rows_per_group, seqlen_q)
    mid = max(0, seqlen_q // 2 - r // 2)
    idx = torch.cat(
        [torch.arange(0, r), torch.arange(mid, mid + r), torch.arange(seqlen_q - r, seqlen_q)]
    )
    return torch.unique(idx.clamp(0, seqlen_q - 1))


def _safe_softmax(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; rows with every score -inf give zeros (FlashMask's rule)."""
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    d = p.sum(-1, keepdim=True)
    return p / torch.where(d == 0, torch.ones_like(d), d)


def reference_rows(q, k, v, mask, rows, heads, *, softmax_scale=None, dtype=torch.float32):
    """Attention output of batch 0 for query ``rows`` and ``heads``: ``(R, len(heads), Dv)``.

    q ``(B, Sq, H, D)``, k/v ``(B, Sk, Hkv, D)``; ``dtype`` float32 for the reference, bf16 for
    PyTorch's own error (products and probabilities rounded to bf16 as a bf16 program would).
    """
    _, sq, h_all, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    sri = mask.startend_row_indices
    sri0 = None if sri is None else sri[0:1]
    hm = 1 if sri is None else sri.shape[1]
    rows = rows.to(q.device)
    masked = masked_rows(sri0, mask.causal, rows, sq, sk)[0]  # (Hm|1, R, Sk)
    outs = []
    for h in heads:
        hk = h // (h_all // hkv)
        mh = 0 if masked.shape[0] == 1 else h // (h_all // hm)
        qh = q[0, rows, h].to(dtype)
        kh = k[0, :, hk].to(dtype)
        vh = v[0, :, hk].to(dtype)
        s = (qh @ kh.T).float() * scale
        s = s.masked_fill(masked[mh], -math.inf)
        p = _safe_softmax(s).to(dtype)
        outs.append((p @ vh).float())
    return torch.stack(outs, dim=1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not torch.isfinite(a).all():
        return float("nan")
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else num


def check_output(out, q, k, v, mask, *, rows_per_group: int = 128) -> CheckResult:
    """Compare ``out`` ``(B, Sq, H, Dv)`` with the reference on the slice (see module doc)."""
    sq, h_all = q.shape[1], q.shape[2]
    rows = check_rows(sq, rows_per_group)
    heads = sorted({0, h_all - 1})
    with torch.no_grad():
        ref = reference_rows(q, k, v, mask, rows, heads, dtype=torch.float32)
        pt = reference_rows(q, k, v, mask, rows, heads, dtype=q.dtype)
        got = out[0, rows.to(out.device)][:, heads].float()
    err = _rel(got, ref)
    err_pt = _rel(pt, ref)
    tol = 2.0 * err_pt + 1e-3
    ok = math.isfinite(err) and err <= tol
    return CheckResult(err, err_pt, tol, ok)
