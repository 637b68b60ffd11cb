"""Column bounds (`startend_row_indices`): validation and element semantics.

The format (FlashMask's column-wise form, restated in shared/MASKS.md): int32 ``[B, Hm, Sk, n]``,
n in {1, 2, 4}; one row of the last dimension describes key column j. Rows are 0..Sq-1.

=======  ===  ===================  ============================================
causal   n    bounds               rows masked in column j
=======  ===  ===================  ============================================
True     1    LTS                  [LTS, Sq) plus the causal upper triangle
True     2    LTS, LTE             [LTS, LTE) plus the causal upper triangle
False    2    LTS, UTE             [LTS, Sq) and [0, UTE)
False    4    LTS, LTE, UTS, UTE   [LTS, LTE) and [UTS, UTE)
=======  ===  ===================  ============================================

The causal triangle is aligned bottom-right: row i sees column j only if j <= i + (Sk - Sq).
Values above Sq mean "past the end" (clamped to Sq); negative values are an error; an interval
whose start is not below its end is empty.

Everything here works on any device and never builds an ``Sq x Sk`` tensor unless asked to
(`masked_rows` builds ``R x Sk`` for the R rows it is given).
"""

from __future__ import annotations

import torch

#: Names of the bounds for each supported (causal, n) mode.
BOUND_NAMES: dict[tuple[bool, int], tuple[str, ...]] = {
    (True, 1): ("LTS",),
    (True, 2): ("LTS", "LTE"),
    (False, 2): ("LTS", "UTE"),
    (False, 4): ("LTS", "LTE", "UTS", "UTE"),
}


def check_bounds_meta(
    startend_row_indices: torch.Tensor,
    causal: bool,
    *,
    name: str = "startend_row_indices",
) -> None:
    """Check dtype, rank and mode of a bounds tensor (no values, no device sync).

    Raises ``ValueError``/``TypeError`` naming the argument, the value and the fix.
    """
    t = startend_row_indices
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(
            f"{name} has dtype {t.dtype}: it must be torch.int32 (use {name}.to(torch.int32))"
        )
    if t.dim() != 4:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} (rank {t.dim()}): it must be rank 4, "
            "[batch, mask_heads, seqlen_k, n] with n in {1, 2, 4}"
        )
    n = int(t.shape[-1])  # specialises a symbolic n: it is a compile-time choice of the kernels
    if n not in (1, 2, 4):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}: the last dimension must be 1, 2 or 4 "
            "(the number of row bounds per key column)"
        )
    if (bool(causal), n) not in BOUND_NAMES:
        if n == 1:
            raise ValueError(
                f"{name} has n=1 bound per column (LTS), which is only defined with causal=True; "
                "pass causal=True, or give n=2 bounds (LTS, UTE) for a non-causal mask"
            )
        raise ValueError(
            f"{name} has n=4 bounds per column (LTS, LTE, UTS, UTE), which is only defined with "
            "causal=False; pass causal=False (the upper interval can express the causal part)"
        )


def check_bounds_values(startend_row_indices: torch.Tensor, *, name: str = "startend_row_indices"):
    """Raise if any bound is negative (reads one scalar back from the device)."""
    t = startend_row_indices
    if t.numel() == 0:
        return
    lo = int(t.min())
    if lo < 0:
        idx = (t < 0).nonzero()[0].tolist()
        raise ValueError(
            f"{name} has a negative value {int(t[tuple(idx)])} at index {tuple(idx)}: bounds are "
            "query-row indices and must be >= 0 (use seqlen_q, or any larger value, for "
            "'past the end')"
        )


def _masked_intervals(
    bounds: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    device: torch.device,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The masked row intervals [start, end) of each column, clamped to [0, Sq].

    bounds: int64 ``[..., Sk, n]`` or None. Returns up to three (start, end) pairs, each of shape
    ``[..., Sk]`` (or ``[Sk]`` for the causal triangle).
    """
    sq = seqlen_q
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    if causal:
        # Row i is masked in column j when i < j - (Sk - Sq).
        j = torch.arange(seqlen_k, device=device, dtype=torch.int64)
        out.append((torch.zeros_like(j), (j - (seqlen_k - seqlen_q)).clamp(0, sq)))
    if bounds is None:
        return out
    b = bounds.to(torch.int64).clamp(max=sq)
    n = b.shape[-1]
    full = torch.full_like(b[..., 0], sq)
    zero = torch.zeros_like(b[..., 0])
    if causal and n == 1:
        out.append((b[..., 0], full))
    elif causal and n == 2:
        out.append((b[..., 0], b[..., 1]))
    elif not causal and n == 2:
        out.append((b[..., 0], full))
        out.append((zero, b[..., 1]))
    else:
        out.append((b[..., 0], b[..., 1]))
        out.append((b[..., 2], b[..., 3]))
    return out


def masked_rows(
    startend_row_indices: torch.Tensor | None,
    causal: bool,
    rows: torch.Tensor,
    seqlen_q: int,
    seqlen_k: int,
) -> torch.Tensor:
    """Which (row, column) elements are masked, for the given rows.

    Args:
        startend_row_indices: int32 ``[B, Hm, Sk, n]`` or None.
        rows: int64 ``[R]`` query-row indices in [0, Sq).
    Returns:
        bool ``[B, Hm, R, Sk]`` (``[1, 1, R, Sk]`` when there are no bounds); True = masked.
    """
    i = rows.to(torch.int64)[:, None]  # (R, 1)
    sri = startend_row_indices
    if sri is None:
        m = torch.zeros(1, 1, rows.numel(), seqlen_k, dtype=torch.bool, device=rows.device)
    else:
        m = torch.zeros(
            sri.shape[0], sri.shape[1], rows.numel(), seqlen_k, dtype=torch.bool, device=sri.device
        )
    for s, e in _masked_intervals(sri, causal, seqlen_q, seqlen_k, rows.device):
        s = s.unsqueeze(-2)  # (..., 1, Sk)
        e = e.unsqueeze(-2)
        m = m | ((i >= s) & (i < e))
    return m


def visible_rows_per_block(
    startend_row_indices: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    row_starts: torch.Tensor,
    row_ends: torch.Tensor,
) -> torch.Tensor:
    """Exact number of visible (unmasked) rows of each column inside each row range.

    Computed per column from its (at most three) masked intervals by inclusion-exclusion, so it
    costs O(B * Hm * R * Sk) integer work and never materialises rows.

    Args:
        row_starts, row_ends: int64 ``[R]``, row ranges [start, end) within [0, Sq].
    Returns:
        int64 ``[B, Hm, R, Sk]`` (``[1, 1, R, Sk]`` without bounds).
    """
    m0 = row_starts.to(torch.int64)[:, None]  # (R, 1)
    m1 = row_ends.to(torch.int64)[:, None]
    ivs = [
        (s.unsqueeze(-2).clamp(min=m0), e.unsqueeze(-2).clamp(max=m1))
        for s, e in _masked_intervals(
            startend_row_indices, causal, seqlen_q, seqlen_k, row_starts.device
        )
    ]

    def length(s: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return (e - s).clamp(min=0)

    covered = torch.zeros((), dtype=torch.int64, device=row_starts.device)
    k = len(ivs)
    for a in range(k):
        covered = covered + length(*ivs[a])
    for a in range(k):
        for b in range(a + 1, k):
            covered = covered - length(
                torch.maximum(ivs[a][0], ivs[b][0]), torch.minimum(ivs[a][1], ivs[b][1])
            )
    if k == 3:
        s = torch.maximum(torch.maximum(ivs[0][0], ivs[1][0]), ivs[2][0])
        e = torch.minimum(torch.minimum(ivs[0][1], ivs[1][1]), ivs[2][1])
        covered = covered + length(s, e)
    total = (m1 - m0).clamp(min=0)  # (R, 1)
    vis = (total - covered).expand(*covered.shape[:-2], row_starts.numel(), seqlen_k)
    while vis.dim() < 4:
        vis = vis.unsqueeze(0)
    return vis
