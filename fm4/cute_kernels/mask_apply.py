"""Element-wise masking of one S tile in registers (sm_90 wgmma accumulator layout).

Applied only to tiles that need it: the "partial" n_blocks of the tile lists, or, with no bounds,
the n_blocks that cross the causal diagonal or the end of the keys. Unmasked tiles never call this.

Element (row i, column j) is masked (set to -inf) iff any of:
    j >= seqlen_k                                  (keys past the end)
    causal and j > i + (seqlen_k - seqlen_q)       (bottom-right aligned causal)
    n_bounds == 1:            i >= b0
    n_bounds == 2, causal:    b0 <= i < b1
    n_bounds == 2, !causal:   i >= b0 or i < b1
    n_bounds == 4:            b0 <= i < b1 or b2 <= i < b3
where b0..b3 = bounds[j, 0..3] (the FlashMask column bounds of the tile's mask head).

Each thread owns 2 rows and tile_n / 4 columns of a 64-row warpgroup slice; it reads the bounds
of its own columns once per n_block (n int32 per column), compares them with its rows and keeps
the outcome as one bit per element (:func:`mask_bits`, issued before the tile's Q K^T is waited
for), then sets the marked scores to -inf (:func:`apply_mask_bits`).
Supported: n_bounds in {0, 1, 2, 4}. Not supported: sliding windows given as scalars, pack-GQA.
"""

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32

from fm4.cute_kernels.softmax import acc_to_mn


@cute.jit
def mask_bits(
    tScS_mn: cute.Tensor,  # (rows, cols) view of this thread's (row, col) tile coordinates
    mBounds: cute.Tensor | None,  # (s_k, n) bounds of this (batch, mask head), or None
    m_block: Int32,
    n_block: Int32,
    seqlen_q: Int32,
    seqlen_k: Int32,
    tile_m: cutlass.Constexpr[int],
    tile_n: cutlass.Constexpr[int],
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """One int32 per row of this thread: bit c set iff element (row, column c) is masked.

    Needs no scores, so it runs before the tile's Q K^T completes: the bounds' load latency
    hides behind the GEMM (see the module docstring for the rule).
    """
    num_rows = cute.size(tScS_mn, mode=[0])
    num_cols = cute.size(tScS_mn, mode=[1])
    assert num_cols <= 32, "one 32-bit word of mask bits per row"
    bits = cute.make_rmem_tensor(num_rows, Int32)
    bits.fill(0)
    row0 = m_block * tile_m
    col0 = n_block * tile_n
    causal_offset = seqlen_k - seqlen_q
    for c in cutlass.range_constexpr(num_cols):
        col = col0 + tScS_mn[0, c][1]
        col_oob = col >= seqlen_k
        b = [Int32(0)] * 4
        if cutlass.const_expr(n_bounds > 0):
            col_safe = cutlass.min(col, seqlen_k - 1)
            for k in cutlass.range_constexpr(n_bounds):
                b[k] = mBounds[col_safe, k]
        for r in cutlass.range_constexpr(num_rows):
            i = row0 + tScS_mn[r, 0][0]
            masked = col_oob
            if cutlass.const_expr(causal):
                masked = masked or col > i + causal_offset
            if cutlass.const_expr(n_bounds == 1):
                masked = masked or i >= b[0]
            if cutlass.const_expr(n_bounds == 2 and causal):
                masked = masked or (i >= b[0] and i < b[1])
            if cutlass.const_expr(n_bounds == 2 and not causal):
                masked = masked or i >= b[0] or i < b[1]
            if cutlass.const_expr(n_bounds == 4):
                masked = masked or (i >= b[0] and i < b[1]) or (i >= b[2] and i < b[3])
            bits[r] = (bits[r] | Int32(1 << c)) if masked else bits[r]
    return bits


@cute.jit
def apply_mask_bits(acc_S: cute.Tensor, bits: cute.Tensor) -> None:
    """Set the scores whose bit is set in ``bits`` (from :func:`mask_bits`) to -inf."""
    acc_mn = acc_to_mn(acc_S)
    for r in cutlass.range_constexpr(cute.size(acc_mn, mode=[0])):
        for c in cutlass.range_constexpr(cute.size(acc_mn, mode=[1])):
            hit = (bits[r] & Int32(1 << c)) != 0
            acc_mn[r, c] = -Float32.inf if hit else acc_mn[r, c]
