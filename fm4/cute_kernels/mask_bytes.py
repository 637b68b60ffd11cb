"""Partial blocks' masks from per-column row thresholds kept as bytes, compared four columns
per instruction (forward kernel knob ``rest_mask="bytes"``, Note [Byte masks] in
``fwd_sm90.py``).

For a fixed key column j, the rules of `fm4.cute_kernels.mask_apply` (module docstring) over the
64 rows of one consumer warpgroup are, apart from the causal diagonal:

    n = 1:            row o kept iff o < hi,            hi = b0
    n = 2, !causal:   row o kept iff lo <= o < hi,      lo = b1, hi = b0
    n = 2, causal:    row o masked iff lo <= o < hi,    lo = b0, hi = b1
    j >= seqlen_k:    every row masked

with o, lo and hi relative to the warpgroup's first row, lo and hi clamped to [0, 64]. Each
consumer thread turns one column's bounds into these bytes (``hi | 0x80`` and ``lo``) and
stores them in its warpgroup's smem buffer. A thread then reads the bytes of its own 2 x
tile_n / 8 columns as words of four, and for each of its rows compares four columns at once
without carries between bytes (every byte difference stays in [64, 192)):

    bit 7 of each byte of (HI | 0x80808080) - (o + 1) * 0x01010101   <=>   hi > o
    bit 7 of each byte of (o * 0x01010101 | 0x80808080) - LO         <=>   o >= lo

Word k's four flags (bits 7, 15, 23, 31) end at bits k, 8 + k, 16 + k, 24 + k of the row's
mask word, so thread column 4k + b (in accumulator order) is bit 8b + k (read by
:func:`apply_byte_bits`). The flags are packed Horner-style, ``m = (m >> 1) + f_k``, which
ptxas fuses into one shift-add (LEA.HI) per word: per row of 32 columns that is 8
subtractions, 8 logic ops and 7 shift-adds (16, 8 and 7 with two bounds), where bit words
compare and set one element at a time.

The apply then takes one predicate per element from the row word in bit order, so that ptxas
moves seven bits at a time into predicates (R2P, bits 0-6 of a byte) instead of testing each
element's bit with its own instruction; the row word is ORed with an always-zero value ptxas
cannot see through, so it is kept whole rather than its bits traced back to the flag words
(together, 46-60 fewer instructions in a partial block's loop, 5-7%; session 25).

Buffer layout (one per warpgroup and K / V stage, ``planes`` x tile_n bytes): plane 0 holds
``hi | 0x80``, plane 1 (n = 2) ``lo``; in a plane, the column ``2q + 8p + e`` (the sm_90
accumulator layout: q = lane % 4, e in {0, 1}) is byte ``q * tile_n / 4 + 2p + e``, so a
thread's columns are tile_n / 4 contiguous bytes.
"""

import cutlass
import cutlass.cute as cute
from cutlass import Int8, Int32, Uint32

from fm4.cute_kernels.mask_apply import acc_to_mn, int32_pattern, mask_if_bit

#: Rows of one consumer warpgroup: the thresholds' frame.
WG_ROWS = 64
_ONES = 0x01010101
_HIGH = 0x80808080


def byte_planes(n_bounds: int) -> int:
    """Bytes per column: hi, and lo with two bounds."""
    assert n_bounds in (1, 2), "byte masks: n = 1 or 2"
    return n_bounds


def buffer_words(tile_n: int, n_bounds: int) -> int:
    """32-bit words of one warpgroup's buffer for one K / V stage."""
    assert tile_n % 16 == 0, "a thread's columns come in words of four"
    return byte_planes(n_bounds) * tile_n // 4


def masked_inside(causal: bool, n_bounds: int) -> bool:
    """Whether [lo, hi) holds the masked rows (n = 2 causal) or the kept ones."""
    return n_bounds == 2 and causal


@cute.jit
def load_column_bounds(
    words: cute.Tensor,  # out: n_bounds int32
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    col: Int32,  # the global key column
    seqlen_k: Int32,
    n_bounds: cutlass.Constexpr[int],
) -> None:
    """The bounds of one key column (a column past the end reads the last one's)."""
    col_safe = cutlass.min(col, seqlen_k - 1)
    for k in cutlass.range_constexpr(n_bounds):
        words[k] = mBounds[col_safe, k]


@cute.jit
def store_column_bytes(
    sBytes: cute.Tensor,  # this warpgroup's buffer of one stage, as planes * tile_n int8
    words: cute.Tensor,  # the column's bounds (load_column_bounds)
    col_local: Int32,  # the column within the tile (< tile_n)
    col: Int32,  # the global key column
    row_base: Int32,  # the warpgroup's first global row
    seqlen_k: Int32,
    tile_n: cutlass.Constexpr[int],
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> None:
    """Column ``col``'s threshold bytes in the buffer (module docstring)."""
    lo = Int32(0)
    hi = Int32(0)
    if cutlass.const_expr(n_bounds == 1):
        hi = words[0] - row_base
    if cutlass.const_expr(n_bounds == 2 and not causal):
        lo = words[1] - row_base
        hi = words[0] - row_base
    if cutlass.const_expr(n_bounds == 2 and causal):
        lo = words[0] - row_base
        hi = words[1] - row_base
    if col >= seqlen_k:  # every row masked
        lo = Int32(0)
        hi = Int32(WG_ROWS) if cutlass.const_expr(masked_inside(causal, n_bounds)) else Int32(0)
    at = ((col_local >> 1) & 3) * (tile_n // 4) + 2 * (col_local >> 3) + (col_local & 1)
    hi = cutlass.min(cutlass.max(hi, 0), WG_ROWS)
    sBytes[at] = Int8(hi | 0x80)
    if cutlass.const_expr(n_bounds == 2):
        sBytes[tile_n + at] = Int8(cutlass.min(cutlass.max(lo, 0), WG_ROWS))


def row_words(rows: list) -> tuple:
    """Each of a thread's warpgroup-relative rows o as the words (o + 1) * 0x01010101 and
    o * 0x01010101 | 0x80808080."""
    return (
        [(o + 1) * Int32(_ONES) for o in rows],
        [(o * Int32(_ONES)) | Int32(int32_pattern(_HIGH)) for o in rows],
    )


@cute.jit
def byte_mask_bits(
    sHi: cute.Tensor,  # this thread's words of plane 0 (16-byte aligned)
    sLo: cute.Tensor | None,  # ... of plane 1 (n = 2), or None
    rows: tuple,  # row_words of the thread's rows
    inside: cutlass.Constexpr[bool],  # masked_inside(...)
    opaque_zero: Int32,  # always 0, but not known to ptxas (module docstring)
) -> cute.Tensor:
    """One int32 per row of this thread: its masked columns, column 4k + b at bit 8b + k."""
    num_words = cute.size(sHi)
    assert num_words <= 8, "a byte of the row word holds at most 8 words' flags (tile_n <= 128)"
    hi = cute.make_rmem_tensor(num_words, Int32)
    hi.store(sHi.load())
    lo = None
    if cutlass.const_expr(sLo is not None):
        lo = cute.make_rmem_tensor(num_words, Int32)
        lo.store(sLo.load())
    y_rows, o_rows = rows
    bits = cute.make_rmem_tensor(len(y_rows), Int32)
    for r in cutlass.range_constexpr(len(y_rows)):
        m = Int32(0)
        for k in cutlass.range_constexpr(num_words):
            f = hi[k] - y_rows[r]  # bit 7 of each byte: hi > o
            if cutlass.const_expr(sLo is not None):
                f = f & (o_rows[r] - lo[k])  # ... and o >= lo
            if cutlass.const_expr(not inside):
                f = f ^ Int32(-1)  # kept -> masked
            f = f & Int32(int32_pattern(_HIGH))
            if cutlass.const_expr(k == 0):
                m = f
            else:  # earlier words' flags move down one bit per word
                m = (m.to(Uint32) >> 1).to(Int32) + f
        if cutlass.const_expr(num_words < 8):  # word k's flags to bit k of each byte
            m = (m.to(Uint32) >> (8 - num_words)).to(Int32)
        bits[r] = m | opaque_zero
    return bits


@cute.jit
def apply_byte_bits(acc_S: cute.Tensor, bits: cute.Tensor) -> None:
    """Set the scores flagged in ``bits`` (:func:`byte_mask_bits`' layout) to -inf, visiting
    the columns in bit order (module docstring: R2P)."""
    acc_mn = acc_to_mn(acc_S)
    num_cols = cute.size(acc_mn, mode=[1])
    per_byte = num_cols // 4
    for r in cutlass.range_constexpr(cute.size(acc_mn, mode=[0])):
        for bit_rank in cutlass.range_constexpr(num_cols):
            b, k = divmod(bit_rank, per_byte)
            mask_if_bit(acc_mn, r, 4 * k + b, bits[r], 8 * b + k)
