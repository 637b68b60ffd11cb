"""Correctness checks shared by tests and benchmarks: tolerance relative to PyTorch's own error.

The kernel's output is compared with `fm4.reference.attention_ref` (fp32 math) and so is a
same-precision PyTorch computation (`attention_ref(..., upcast=False)`); the kernel may be off by
at most ``factor`` times PyTorch's own error plus ``atol`` (FA4's rule). Rows that see no key
must give exactly 0 and lse -inf; nothing may be NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fm4.reference import attention_ref


@dataclass
class AttentionError:
    out_err: float  # max |out - ref|
    out_err_torch: float  # max |out_torch - ref| for PyTorch in the inputs' precision
    lse_err: float  # max |lse - lse_ref| over rows that see something


def check_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask,
    causal: bool,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    *,
    softmax_scale: float | None = None,
    factor: float = 2.0,
    atol: float = 1e-3,
    lse_rtol: float = 1e-3,
) -> AttentionError:
    """Assert that (out, lse) is attention of (q, k, v) under ``mask``; return the errors.

    Shapes: q ``(B, Sq, H, D)``, k/v ``(B, Sk, Hkv, D)``, out ``(B, Sq, H, D)``, lse
    ``(B, H, Sq)``. ``mask``: FlashMask, bounds tensor (read with ``causal``) or None.
    """
    out_ref, lse_ref = attention_ref(q, k, v, mask, causal, softmax_scale)
    out_pt, _ = attention_ref(q, k, v, mask, causal, softmax_scale, upcast=False)
    assert not torch.isnan(out).any(), "NaN in out"
    err = (out.float() - out_ref.float()).abs().max().item() if out.numel() else 0.0
    err_pt = (out_pt.float() - out_ref.float()).abs().max().item() if out.numel() else 0.0
    assert err <= factor * err_pt + atol, (
        f"out max error {err:.3e} exceeds {factor} x PyTorch's {err_pt:.3e} + {atol}"
    )
    seen = torch.isfinite(lse_ref)
    blind = ~seen.permute(0, 2, 1)  # (B, Sq, H): rows that see no key
    assert bool((out[blind] == 0).all()), "rows that see no key must be 0"
    lse_err = 0.0
    if lse is not None:
        assert not torch.isnan(lse).any(), "NaN in lse"
        assert torch.equal(seen, torch.isfinite(lse)), "rows that see no key must have lse -inf"
        assert bool((lse[~seen] < 0).all()), "lse of rows that see no key must be -inf"
        if seen.any():
            lse_err = (lse[seen] - lse_ref[seen]).abs().max().item()
            bound = lse_rtol * max(1.0, lse_ref[seen].abs().max().item())
            assert lse_err <= bound, f"lse max error {lse_err:.3e} exceeds {bound:.3e}"
    return AttentionError(err, err_pt, lse_err)


def poison_allocator(device: torch.device | str, nbytes: int = 256 << 20) -> None:
    """Fill (then free) a block of the caching allocator with NaN, so outputs allocated next start
    as NaN: an element a kernel forgets to write shows up."""
    torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(float("nan"))


@dataclass
class GradError:
    err: float  # max |grad - ref|
    err_torch: float  # max |grad_torch - ref| for PyTorch in the inputs' precision


def attention_bwd_same_precision(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask,
    causal: bool,
    *,
    dlse: torch.Tensor | None = None,
    softmax_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward formula with 16-bit GEMM inputs, as a 16-bit kernel computes it: scores and
    probabilities in fp32, P and dS rounded to the inputs' dtype before their GEMMs, GEMM
    outputs rounded to the dtype. Its distance to the fp32 reference is PyTorch's own error.
    Not chunked: for test sizes (memory ~ 12 x B x H x Sq x Sk bytes)."""
    from fm4.reference import _chunk_probs, _setup

    sri, causal_, scale, _ = _setup(q, k, v, mask, causal, softmax_scale, True)
    B, Sq, H, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    G = H // Hkv
    dt = q.dtype
    qc = q.permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, D)
    kc = k.permute(0, 2, 3, 1).unsqueeze(2)
    vc = v.permute(0, 2, 1, 3).unsqueeze(2)
    doc = dout.permute(0, 2, 1, 3).reshape(B, Hkv, G, Sq, -1)
    p, _ = _chunk_probs(qc.float(), kc.float(), sri, causal_, 0, Sq, Sq, Sk, scale)
    o = torch.matmul(p.to(dt), vc).float()
    delta = (doc.float() * o).sum(-1, keepdim=True)
    if dlse is not None:
        delta = delta - dlse.float().reshape(B, Hkv, G, Sq, 1)
    dp = torch.matmul(doc, vc.transpose(-1, -2)).float()
    ds = (p * (dp - delta)).to(dt)
    dq = torch.matmul(ds, kc.transpose(-1, -2)).float() * scale
    dk = torch.matmul(ds.transpose(-1, -2), qc).float().sum(2) * scale
    dv = torch.matmul(p.to(dt).transpose(-1, -2), doc).float().sum(2)
    dq = dq.reshape(B, H, Sq, D).permute(0, 2, 1, 3).to(dt)
    return dq, dk.permute(0, 2, 1, 3).to(dt), dv.permute(0, 2, 1, 3).to(dt)


def check_attention_grads(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask,
    causal: bool,
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    dlse: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    factor: float = 2.0,
    atol: float = 2e-3,
) -> dict[str, GradError]:
    """Assert that ``grads = (dq, dk, dv)`` are the gradients of attention under ``mask``.

    Shapes: dout/q/dq ``(B, Sq, H, D)``, k/v/dk/dv ``(B, Sk, Hkv, D)``, dlse ``(B, H, Sq)``.
    Per gradient: max error at most ``factor`` x PyTorch's same-precision error plus ``atol``
    scaled by the reference's magnitude (FA4's rule); rows that see no key get dq == 0 exactly;
    no NaN. Returns the errors per gradient name.
    """
    from fm4.reference import attention_bwd_ref

    ref = attention_bwd_ref(dout, q, k, v, mask, causal, softmax_scale, dlse=dlse)
    pt = attention_bwd_same_precision(
        dout, q, k, v, mask, causal, dlse=dlse, softmax_scale=softmax_scale
    )
    errs = {}
    for name, got, r, p in zip(("dq", "dk", "dv"), grads, ref, pt, strict=True):
        assert got.shape == r.shape and got.dtype == r.dtype, name
        assert not torch.isnan(got).any(), f"NaN in {name}"
        if got.numel() == 0:
            errs[name] = GradError(0.0, 0.0)
            continue
        err = (got.float() - r.float()).abs().max().item()
        err_pt = (p.float() - r.float()).abs().max().item()
        scale = max(1.0, r.float().abs().max().item())
        assert err <= factor * err_pt + atol * scale, (
            f"{name} max error {err:.3e} exceeds {factor} x PyTorch's {err_pt:.3e} "
            f"+ {atol} x {scale:.2f}"
        )
        errs[name] = GradError(err, err_pt)
    _, lse = attention_ref(q, k, v, mask, causal, softmax_scale)
    blind_rows = torch.isneginf(lse).permute(0, 2, 1)  # (B, Sq, H)
    assert bool((grads[0][blind_rows] == 0).all()), "rows that see no key must get dq == 0"
    return errs
