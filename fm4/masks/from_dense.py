"""Extract column bounds from a dense mask, when the format can express it."""

from __future__ import annotations

import torch


def _runs(masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked runs of each column. masked: bool ``[B, H, Sq, Sk]``.

    Returns the run count ``[B, H, Sk]`` and the first two runs' (start, end) as
    ``[B, H, Sk, 2, 2]`` (unused runs: (Sq, Sq)); rows are along dim 2.
    """
    B, H, Sq, Sk = masked.shape
    m = masked.to(torch.int8)
    prev = torch.nn.functional.pad(m, (0, 0, 1, 0))[:, :, :-1]
    nxt = torch.nn.functional.pad(m, (0, 0, 0, 1))[:, :, 1:]
    start = (m == 1) & (prev == 0)  # row i starts a run
    end = (m == 1) & (nxt == 0)  # row i ends a run (exclusive end i + 1)
    count = start.sum(2)
    rows = torch.arange(Sq, device=masked.device)[None, None, :, None]
    big = torch.full_like(rows.expand(B, H, Sq, Sk), Sq)
    s_rank = start.cumsum(2)
    e_rank = end.cumsum(2)
    out = torch.full((B, H, Sk, 2, 2), Sq, dtype=torch.int64, device=masked.device)
    for r in range(2):
        s_r = torch.where(start & (s_rank == r + 1), rows, big).amin(2)
        e_r = torch.where(end & (e_rank == r + 1), rows + 1, big).amin(2)
        out[..., r, 0] = s_r
        out[..., r, 1] = e_r
    return count, out


def _first_bad(bad: torch.Tensor) -> tuple[int, int, int]:
    b, h, j = (int(x) for x in bad.nonzero()[0])
    return b, h, j


def bounds_from_dense(
    visible: torch.Tensor, *, causal: bool | None = None, n: int | None = None
) -> tuple[torch.Tensor | None, bool]:
    """Bounds (int32 ``[B, H, Sk, n]`` or None) and causal flag reproducing ``visible`` exactly.

    visible: bool ``[B, H, Sq, Sk]``, True = attend. Raises ValueError naming the first column
    that no allowed (causal, n) mode can express.
    """
    if visible.dtype != torch.bool or visible.dim() != 4:
        raise ValueError(
            f"from_dense needs a bool tensor [B, H, Sq, Sk], got {visible.dtype} of shape "
            f"{tuple(visible.shape)}"
        )
    if n is not None and n not in (1, 2, 4):
        raise ValueError(f"n={n} must be 1, 2, 4 or None")
    Sq, Sk = visible.shape[2:]
    masked = ~visible
    i = torch.arange(Sq, device=visible.device)[:, None]
    j = torch.arange(Sk, device=visible.device)[None, :]
    tri = j > i + (Sk - Sq)  # the causal triangle
    modes = [
        (c, k)
        for c, k in ((True, 1), (True, 2), (False, 2), (False, 4))
        if (causal is None or c == causal) and (n is None or k == n)
    ]
    if not modes:
        raise ValueError(f"(causal={causal}, n={n}) is not a mode of the format")
    # Masks without bounds first.
    if n is None and causal is not True and not bool(masked.any()):
        return None, False
    if n is None and causal is not False and bool((masked == tri).all()):
        return None, True
    last_err = ""
    for c, k in modes:
        if c and bool((tri & ~masked).any()):
            b, h, jj = _first_bad((tri & ~masked).any(2))
            last_err = (
                f"column {jj} (batch {b}, head {h}) is visible above the causal diagonal, so no "
                "causal mode fits"
            )
            continue
        rest = masked & ~tri if c else masked
        count, runs = _runs(rest)
        (s0, e0), (s1, e1) = (runs[..., 0, 0], runs[..., 0, 1]), (runs[..., 1, 0], runs[..., 1, 1])
        sq = torch.full_like(s0, Sq)
        zero = torch.zeros_like(s0)
        if c and k == 1:
            # One run reaching the last row (or none). With causal, the run may also start at
            # the diagonal: [LTS, Sq) where rows above the diagonal are already masked.
            ok = (count == 0) | ((count == 1) & (e0 == Sq))
            cols = [torch.where(count == 0, sq, s0)]
        elif c and k == 2:
            ok = count <= 1
            cols = [torch.where(count == 0, sq, s0), torch.where(count == 0, sq, e0)]
        elif not c and k == 2:
            # At most a run from row 0 (UTE) and a run to the last row (LTS).
            top = (count >= 1) & (s0 == 0)
            lts = torch.where(top, torch.where(count == 2, s1, sq), torch.where(count == 1, s0, sq))
            lts_end = torch.where(
                top, torch.where(count == 2, e1, sq), torch.where(count == 1, e0, sq)
            )
            ute = torch.where(top, e0, zero)
            ok = (count <= 2) & (lts_end == Sq) & ((count < 2) | top)
            # A single run from 0 to Sq (fully masked column) is one interval: fine either way.
            cols = [lts, ute]
        else:
            ok = count <= 2
            one_top = (count == 1) & (s0 == 0)
            lts = torch.where((count == 0) | one_top, sq, torch.where(count == 2, s1, s0))
            lte = torch.where((count == 0) | one_top, sq, torch.where(count == 2, e1, e0))
            uts = torch.where(one_top | (count == 2), s0, zero)
            ute = torch.where(one_top | (count == 2), e0, zero)
            cols = [lts, lte, uts, ute]
        if bool(ok.all()):
            return torch.stack(cols, -1).to(torch.int32).contiguous(), c
        b, h, jj = _first_bad(~ok)
        last_err = (
            f"column {jj} (batch {b}, head {h}) has {int(count[b, h, jj])} masked run(s) of rows "
            f"that (causal={c}, n={k}) cannot express"
        )
    raise ValueError(f"this dense mask is not representable as FlashMask bounds: {last_err}")
