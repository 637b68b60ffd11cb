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
