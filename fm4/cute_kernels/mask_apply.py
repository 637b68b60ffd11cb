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

The forward kernel's default for n_bounds 1 and 2 makes the same bits in two leaner steps
(``mask_impl="v2"``): :func:`load_bound_words` reads the bound words of the thread's columns with
vector loads at static offsets (one base address per tile), and :func:`bits_from_words` turns
the end-of-keys and causal rules into one column threshold per row (a shift, no per-column
compare) and compares only the bounds per element. :func:`mask_bits` stays for the backward
kernel, n_bounds 4 (v2 spills there) and the forward's ``mask_impl="v1"``.
With bound codes (``mask_impl="codes"``, Note [Bound codes] in `fm4.masks.tiles`), each partial
tile comes with 2 bits per bound saying whether the bound is ACTIVE in the tile or its comparison
is a constant there; :func:`bits_from_codes` loads and compares only the ACTIVE bounds (one after
the other, so at most one bound's words are live) and combines the per-bound bit words by the
mode's rule.
The backward kernel's ``sdp_swapab`` variant masks the transposed tile S^T (rows: key columns,
columns: query rows) with :func:`key_bound_words` (bounds of the thread's 2 key rows, once per
n_block) and :func:`mask_bits_transposed` (threshold bits per key row, same rule).
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


def int32_pattern(c: int) -> int:
    """A 32-bit pattern as the signed value an Int32 holds."""
    c &= 0xFFFFFFFF
    return c - (1 << 32) if c >= 1 << 31 else c


@cute.jit
def mask_if_bit(acc_mn: cute.Tensor, r: int, c: int, word: Int32, bit: int) -> None:
    """Set score (r, c) of an (rows, cols) view to -inf if ``bit`` of ``word`` is set."""
    hit = (word & Int32(int32_pattern(1 << bit))) != 0
    acc_mn[r, c] = -Float32.inf if hit else acc_mn[r, c]


@cute.jit
def apply_mask_bits(acc_S: cute.Tensor, bits: cute.Tensor) -> None:
    """Set the scores whose bit is set in ``bits`` (from :func:`mask_bits`) to -inf."""
    acc_mn = acc_to_mn(acc_S)
    for r in cutlass.range_constexpr(cute.size(acc_mn, mode=[0])):
        for c in cutlass.range_constexpr(cute.size(acc_mn, mode=[1])):
            mask_if_bit(acc_mn, r, c, bits[r], c)


# --------------------------------------------------------------------------------------------
# Leaner mask bits (forward kernel knob ``mask_impl="v2"``), same rule as :func:`mask_bits`
# --------------------------------------------------------------------------------------------
def _pair_pattern(col_offs: list[int]) -> bool:
    """Whether a thread's column offsets are 0, 1, 8, 9, 16, 17, ... (the sm_90 wgmma layout)."""
    return all(off == 8 * (c // 2) + c % 2 for c, off in enumerate(col_offs))


@cute.jit
def load_bound_words(
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    col_first: Int32,  # global column of this thread's first column (offset 0)
    col_tile_end: Int32,  # first column past the tile
    seqlen_k: Int32,
    col_offs: cutlass.Constexpr[list],  # static column offsets of this thread's columns
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """The bound words of this thread's columns, ``num_cols * n_bounds`` int32 (column-major).

    Fast path (a tile inside the keys, bounds contiguous in (s_k, n), the thread's column pairs
    aligned): one vector load per pair of adjacent columns (n = 4: per column) at static offsets
    from one base address. Otherwise each column is read at ``min(col, seqlen_k - 1)``, as in
    :func:`mask_bits`. Column c's words are ``words[c * n_bounds + k]``.
    """
    num_cols = len(col_offs)
    words = cute.make_rmem_tensor(num_cols * n_bounds, Int32)
    pairs = _pair_pattern(col_offs)
    # Bytes read at once: two adjacent columns (n = 1, 2) or one column (n = 4).
    vec_cols = 2 if cutlass.const_expr(pairs and n_bounds < 4) else 1
    vec_bytes = vec_cols * n_bounds * 4
    row_ptr = cute.domain_offset((col_first, 0), mBounds).iterator
    addr = row_ptr.toint()
    fast = (
        col_tile_end <= seqlen_k and mBounds.stride[0] == n_bounds and (addr & (vec_bytes - 1)) == 0
    )
    if fast:
        ptr = cute.make_ptr(Int32, addr, cute.AddressSpace.gmem, assumed_align=vec_bytes)
        for c in cutlass.range_constexpr(0, num_cols, vec_cols):
            src = cute.make_tensor(
                ptr + col_offs[c] * n_bounds, cute.make_layout(vec_cols * n_bounds)
            )
            dst = cute.make_tensor(
                words.iterator + c * n_bounds, cute.make_layout(vec_cols * n_bounds)
            )
            dst.store(src.load())
    else:
        _clamped_bound_words(words, mBounds, col_first, seqlen_k, col_offs, n_bounds)
    return words


@cute.jit
def _clamped_bound_words(
    words: cute.Tensor,  # out: len(offs) * n_bounds int32
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    first: Int32,  # global key / column index of offset 0
    seqlen_k: Int32,
    offs: cutlass.Constexpr[list],  # static offsets of this thread's keys / columns
    n_bounds: cutlass.Constexpr[int],
) -> None:
    """``words[c * n_bounds + k]`` = bound k of key ``first + offs[c]``, read at
    ``min(first + offs[c], seqlen_k - 1)`` (keys past the end read the last key's bounds)."""
    for c in cutlass.range_constexpr(len(offs)):
        key_safe = cutlass.min(first + offs[c], seqlen_k - 1)
        for k in cutlass.range_constexpr(n_bounds):
            words[c * n_bounds + k] = mBounds[key_safe, k]


@cute.jit
def _threshold_bits(
    rel: Int32, col_offs: cutlass.Constexpr[list], pairs: cutlass.Constexpr[bool]
) -> Int32:
    """Bit c set iff ``col_offs[c] >= rel`` (columns at or past a threshold, relative)."""
    num_cols = len(col_offs)
    b = Int32(0)
    if cutlass.const_expr(pairs):
        span = 8 * (num_cols // 2)
        rel_c = cutlass.min(cutlass.max(rel, 0), span)
        k = 2 * (rel_c >> 3) + cutlass.min(rel_c & 7, 2)  # columns below the threshold
        b = Int32(0) if k >= num_cols else (Int32(-1) << k)
        if cutlass.const_expr(num_cols < 32):
            b = b & Int32((1 << num_cols) - 1)
    else:
        for c in cutlass.range_constexpr(num_cols):
            b = (b | Int32(1 << c)) if col_offs[c] >= rel else b
    return b


@cute.jit
def _row_limit(i: Int32, seqlen_q: Int32, seqlen_k: Int32, causal: cutlass.Constexpr[bool]):
    """First masked column of row i from the end of the keys and the causal rule."""
    lim = seqlen_k
    if cutlass.const_expr(causal):
        lim = cutlass.min(lim, i + (seqlen_k - seqlen_q) + 1)
    return lim


@cute.jit
def _bound_masked(
    i: Int32, w: list, causal: cutlass.Constexpr[bool], n_bounds: cutlass.Constexpr[int]
):
    """Whether row i is masked by one column's bound words ``w`` (the module's rule)."""
    masked = False
    if cutlass.const_expr(n_bounds == 1):
        masked = i >= w[0]
    if cutlass.const_expr(n_bounds == 2 and causal):
        masked = i >= w[0] and i < w[1]
    if cutlass.const_expr(n_bounds == 2 and not causal):
        masked = i >= w[0] or i < w[1]
    if cutlass.const_expr(n_bounds == 4):
        masked = (i >= w[0] and i < w[1]) or (i >= w[2] and i < w[3])
    return masked


@cute.jit
def bits_from_words(
    words: cute.Tensor | None,  # from load_bound_words, or None without bounds
    row_first: Int32,  # global row of this thread's first row
    col_first: Int32,  # global column of this thread's first column
    seqlen_q: Int32,
    seqlen_k: Int32,
    row_offs: cutlass.Constexpr[list],  # static row offsets of this thread's rows
    col_offs: cutlass.Constexpr[list],
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """Mask bits (same layout and rule as :func:`mask_bits`) from this thread's bound words.

    The end-of-keys and causal parts are one column threshold per row, turned into bits
    arithmetically; only the bounds are compared per element.
    """
    num_cols = len(col_offs)
    assert num_cols <= 32, "one 32-bit word of mask bits per row"
    pairs = _pair_pattern(col_offs)
    bits = cute.make_rmem_tensor(len(row_offs), Int32)
    for r in cutlass.range_constexpr(len(row_offs)):
        i = row_first + row_offs[r]
        b = _threshold_bits(_row_limit(i, seqlen_q, seqlen_k, causal) - col_first, col_offs, pairs)
        if cutlass.const_expr(n_bounds > 0):
            for c in cutlass.range_constexpr(num_cols):
                w = [words[c * n_bounds + k] for k in range(n_bounds)]
                b = (b | Int32(1 << c)) if _bound_masked(i, w, causal, n_bounds) else b
        bits[r] = b
    return bits


# --------------------------------------------------------------------------------------------
# Bound codes (forward kernel ``mask_impl="codes"``), same rule as :func:`mask_bits`
# --------------------------------------------------------------------------------------------
@cute.jit
def load_bound_k_words(
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    k: cutlass.Constexpr[int],  # which bound
    col_first: Int32,
    col_tile_end: Int32,
    seqlen_k: Int32,
    col_offs: cutlass.Constexpr[list],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """Bound k of this thread's columns, ``len(col_offs)`` int32 (:func:`load_bound_words` for
    one bound: n = 1 reads column pairs as 8-byte vectors, n > 1 one word per column at static
    offsets from one base address; clamped reads off the fast path)."""
    words = None
    if cutlass.const_expr(n_bounds == 1):
        words = load_bound_words(mBounds, col_first, col_tile_end, seqlen_k, col_offs, 1)
    else:
        words = cute.make_rmem_tensor(len(col_offs), Int32)
        addr = cute.domain_offset((col_first, k), mBounds).iterator.toint()
        if col_tile_end <= seqlen_k and mBounds.stride[0] == n_bounds:
            ptr = cute.make_ptr(Int32, addr, cute.AddressSpace.gmem, assumed_align=4)
            for c in cutlass.range_constexpr(len(col_offs)):
                words[c] = cute.make_tensor(ptr + col_offs[c] * n_bounds, cute.make_layout(1))[0]
        else:
            for c in cutlass.range_constexpr(len(col_offs)):
                words[c] = mBounds[cutlass.min(col_first + col_offs[c], seqlen_k - 1), k]
    return words


@cute.jit
def _ge_bits(g: cute.Tensor, w: list, row_first: Int32, row_offs: cutlass.Constexpr[list]) -> None:
    """``g[r]``: bit c set iff row ``row_first + row_offs[r]`` >= ``w[c]``."""
    for r in cutlass.range_constexpr(len(row_offs)):
        i = row_first + row_offs[r]
        b = Int32(0)
        for c in cutlass.range_constexpr(len(w)):
            b = (b | Int32(1 << c)) if i >= w[c] else b
        g[r] = b


def _full_mask(num_cols: int) -> Int32:
    """The bits of all ``num_cols`` columns of a row's mask word."""
    return Int32(-1) if num_cols == 32 else Int32((1 << num_cols) - 1)


def _active_bits(n_bounds: int) -> int:
    """The ACTIVE bits of all bounds in a bound code (bit 2k for bound k)."""
    return sum(1 << (2 * k) for k in range(n_bounds))


@cute.jit
def load_code_words(
    words: cute.Tensor,  # out: len(col_offs) * n_bounds int32 (column-major, as load_bound_words)
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    code: Int32,  # the tile's bound code (Note [Bound codes])
    col_first: Int32,
    col_tile_end: Int32,
    seqlen_k: Int32,
    col_offs: cutlass.Constexpr[list],
    n_bounds: cutlass.Constexpr[int],
) -> None:
    """n = 1, 2: this thread's bound words of a partial tile (:func:`load_bound_words`), read
    only when a bound is ACTIVE in ``code``; otherwise ``words`` is left as it was (its values
    are then never compared)."""
    assert n_bounds in (1, 2), "n = 4 loads bound by bound (bits_from_codes)"
    if (code & _active_bits(n_bounds)) != 0:
        words.store(
            load_bound_words(mBounds, col_first, col_tile_end, seqlen_k, col_offs, n_bounds).load()
        )


@cute.jit
def bits_from_code_words(
    words: cute.Tensor,  # from load_code_words with the same code
    code: Int32,
    row_first: Int32,
    col_first: Int32,
    seqlen_q: Int32,
    seqlen_k: Int32,
    row_offs: cutlass.Constexpr[list],
    col_offs: cutlass.Constexpr[list],
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """n = 1, 2: mask bits (layout and rule of :func:`mask_bits`) of a partial tile from its
    bound code and its bound words (loaded beforehand, e.g. a block ahead): only the ACTIVE
    bounds are compared."""
    assert n_bounds in (1, 2), "n = 4 loads bound by bound (bits_from_codes)"
    num_rows = len(row_offs)
    ge = _const_ge(code, len(col_offs), num_rows, n_bounds)
    if (code & _active_bits(n_bounds)) != 0:
        for k in cutlass.range_constexpr(n_bounds):
            if ((code >> (2 * k)) & 1) != 0:
                w = [words[c * n_bounds + k] for c in range(len(col_offs))]
                _ge_bits(ge[k], w, row_first, row_offs)
    return _combine_ge(ge, row_first, col_first, seqlen_q, seqlen_k, row_offs, col_offs, causal)


@cute.jit
def _const_ge(
    code: Int32,
    num_cols: cutlass.Constexpr[int],
    num_rows: cutlass.Constexpr[int],
    n_bounds: cutlass.Constexpr[int],
) -> list:
    """ge[k][r] for every bound k, each row the constant of "row >= bound k" (bit 2k + 1 of the
    code, all columns); ACTIVE bounds overwrite theirs with :func:`_ge_bits`."""
    full = _full_mask(num_cols)
    ge = []
    for k in cutlass.range_constexpr(n_bounds):
        g = cute.make_rmem_tensor(num_rows, Int32)
        const = (Int32(0) - ((code >> (2 * k + 1)) & 1)) & full
        for r in cutlass.range_constexpr(num_rows):
            g[r] = const
        ge.append(g)
    return ge


@cute.jit
def _combine_ge(
    ge: list,
    row_first: Int32,
    col_first: Int32,
    seqlen_q: Int32,
    seqlen_k: Int32,
    row_offs: cutlass.Constexpr[list],
    col_offs: cutlass.Constexpr[list],
    causal: cutlass.Constexpr[bool],
) -> cute.Tensor:
    """The mask bits from the per-bound "row >= bound" words (the mode's rule), with the
    end-of-keys and causal thresholds as in :func:`bits_from_words`."""
    num_cols = len(col_offs)
    n_bounds = len(ge)
    pairs = _pair_pattern(col_offs)
    full = _full_mask(num_cols)
    bits = cute.make_rmem_tensor(len(row_offs), Int32)
    for r in cutlass.range_constexpr(len(row_offs)):
        i = row_first + row_offs[r]
        b = _threshold_bits(_row_limit(i, seqlen_q, seqlen_k, causal) - col_first, col_offs, pairs)
        g = [ge[k][r] for k in range(n_bounds)]
        m = Int32(0)
        if cutlass.const_expr(n_bounds == 1):
            m = g[0]
        if cutlass.const_expr(n_bounds == 2 and causal):
            m = g[0] & (g[1] ^ full)
        if cutlass.const_expr(n_bounds == 2 and not causal):
            m = g[0] | (g[1] ^ full)
        if cutlass.const_expr(n_bounds == 4):
            m = (g[0] & (g[1] ^ full)) | (g[2] & (g[3] ^ full))
        bits[r] = b | (m & full)
    return bits


@cute.jit
def bits_from_codes(
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    code: Int32,  # the tile's bound code (Note [Bound codes])
    row_first: Int32,  # global row of this thread's first row
    col_first: Int32,  # global column of this thread's first column
    col_tile_end: Int32,  # first column past the tile
    seqlen_q: Int32,
    seqlen_k: Int32,
    row_offs: cutlass.Constexpr[list],
    col_offs: cutlass.Constexpr[list],
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """Mask bits (layout and rule of :func:`mask_bits`) of a partial tile from its bound code:
    bound k is compared only when ACTIVE (bit 2k), otherwise "row >= bound k" is the constant
    of bit 2k + 1 for every element. Loads: n = 1, 2 as :func:`load_bound_words` when a bound
    is ACTIVE; n = 4 bound by bound (:func:`load_bound_k_words`). End-of-keys and causal as in
    :func:`bits_from_words` (a threshold per row)."""
    num_cols = len(col_offs)
    num_rows = len(row_offs)
    assert num_cols <= 32, "one 32-bit word of mask bits per row"
    ge = _const_ge(code, num_cols, num_rows, n_bounds)
    if cutlass.const_expr(n_bounds == 2):
        # Both bounds' words in one go (v2's vector loads, 64 registers), compares per ACTIVE
        # bound.
        if (code & _active_bits(2)) != 0:
            w2 = load_bound_words(mBounds, col_first, col_tile_end, seqlen_k, col_offs, 2)
            for k in cutlass.range_constexpr(2):
                if ((code >> (2 * k)) & 1) != 0:
                    _ge_bits(ge[k], [w2[c * 2 + k] for c in range(num_cols)], row_first, row_offs)
    else:
        # One bound at a time: at most one bound's words live (n = 4: all four are 128).
        for k in cutlass.range_constexpr(n_bounds):
            if ((code >> (2 * k)) & 1) != 0:
                w = load_bound_k_words(
                    mBounds, k, col_first, col_tile_end, seqlen_k, col_offs, n_bounds
                )
                _ge_bits(ge[k], [w[c] for c in range(num_cols)], row_first, row_offs)
    return _combine_ge(ge, row_first, col_first, seqlen_q, seqlen_k, row_offs, col_offs, causal)


@cute.jit
def fill_mask_bias(
    acc_S: cute.Tensor,  # out: the S accumulator, before its Q K^T
    words: cute.Tensor,  # n = 1: this thread's bound words (load_code_words with this code)
    code: Int32,  # the tile's bound code (Note [Bound codes])
    row_first: Int32,
    col_first: Int32,
    col_tile_end: Int32,
    seqlen_q: Int32,
    seqlen_k: Int32,
    row_offs: cutlass.Constexpr[list],
    col_offs: cutlass.Constexpr[list],
    causal: cutlass.Constexpr[bool],
) -> None:
    """n = 1: the mask of a partial tile as the S accumulator's start value, 0 where visible
    and -inf where masked (the module's rule), so that Q K^T accumulated on top of it is the
    masked S and no mask work follows the GEMM (Note [Mask as bias] in fwd_sm90.py). One
    compare and one select per element; the end-of-keys / causal compare is added only when
    the tile reaches the end of the keys or, causal, the diagonal of the warp's rows."""
    acc_mn = acc_to_mn(acc_S)
    num_rows = len(row_offs)
    num_cols = len(col_offs)
    pairs = _pair_pattern(col_offs)
    lim = [
        _row_limit(row_first + row_offs[r], seqlen_q, seqlen_k, causal) - col_first
        for r in range(num_rows)
    ]
    # The threshold masks nothing in this warp's part of the tile: every row's first masked
    # column is at or past the tile's end (checked with a vote: a warp-uniform branch).
    thr_free = True
    for r in cutlass.range_constexpr(num_rows):
        thr_free = thr_free and lim[r] >= col_tile_end - col_first
    thr_free = cute.arch.vote_all_sync(thr_free)
    active = (code & 1) != 0
    if active and thr_free:
        for r in cutlass.range_constexpr(num_rows):
            i = row_first + row_offs[r]
            for c in cutlass.range_constexpr(num_cols):
                acc_mn[r, c] = -Float32.inf if i >= words[c] else Float32(0.0)
    elif active:
        # The threshold as bits per row (a shift; unpacked 7 at a time with R2P), then the
        # bound's compare on top.
        for r in cutlass.range_constexpr(num_rows):
            tb = _threshold_bits(lim[r], col_offs, pairs)
            for c in cutlass.range_constexpr(num_cols):
                acc_mn[r, c] = -Float32.inf if (tb & Int32(1 << c)) != 0 else Float32(0.0)
        for r in cutlass.range_constexpr(num_rows):
            i = row_first + row_offs[r]
            for c in cutlass.range_constexpr(num_cols):
                acc_mn[r, c] = -Float32.inf if i >= words[c] else acc_mn[r, c]
    elif (code & 2) != 0:
        # "row >= bound" ALWAYS: the whole tile (a partial tile's bound is NEVER instead, as
        # ALWAYS masks all of it and the lists skip such tiles; taken as given either way).
        acc_S.fill(-Float32.inf)
    else:
        for r in cutlass.range_constexpr(num_rows):
            tb = _threshold_bits(lim[r], col_offs, pairs)
            for c in cutlass.range_constexpr(num_cols):
                acc_mn[r, c] = -Float32.inf if (tb & Int32(1 << c)) != 0 else Float32(0.0)


# --------------------------------------------------------------------------------------------
# Transposed tiles (backward kernel knob ``sdp_swapab``), same rule as :func:`mask_bits`
# --------------------------------------------------------------------------------------------
# The accumulator of S^T = K Q^T has the key columns j as its rows and the query rows i as its
# columns. A thread holds few key rows (2 per 64-row atom) and many query columns (16 of 64 at
# offsets 0, 1, 8, 9, ...). Every rule of the module docstring is, for a fixed key j, an
# interval test on i, so each key row's bits are a few threshold masks (no per-element compare),
# and the bounds are read once per key row, not once per element column.


@cute.jit
def key_bound_words(
    mBounds: cute.Tensor,  # (s_k, n) bounds of this (batch, mask head)
    key_first: Int32,  # global key index of this thread's first accumulator row
    seqlen_k: Int32,
    key_offs: cutlass.Constexpr[list],  # static key offsets of this thread's rows
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """The bound words of this thread's key rows, ``len(key_offs) * n_bounds`` int32; row r's
    words are ``words[r * n_bounds + k]``. Keys past the end read the last key's bounds (their
    rows are masked whole by :func:`mask_bits_transposed`). They depend on the n_block only, so
    a kernel reads them once per (n_block, mask head)."""
    words = cute.make_rmem_tensor(len(key_offs) * n_bounds, Int32)
    _clamped_bound_words(words, mBounds, key_first, seqlen_k, key_offs, n_bounds)
    return words


@cute.jit
def mask_bits_transposed(
    words: cute.Tensor | None,  # from key_bound_words, or None without bounds
    key_first: Int32,  # global key index of this thread's first accumulator row
    query_first: Int32,  # global query index of this thread's first accumulator column
    seqlen_q: Int32,
    seqlen_k: Int32,
    key_offs: cutlass.Constexpr[list],  # static key offsets of this thread's rows
    query_offs: cutlass.Constexpr[list],  # static query offsets of this thread's columns
    causal: cutlass.Constexpr[bool],
    n_bounds: cutlass.Constexpr[int],
) -> cute.Tensor:
    """One int32 per key row of this thread: bit c set iff element (query column c, key row) is
    masked, by the rule of :func:`mask_bits` with rows and columns exchanged (apply with
    :func:`apply_mask_bits` on the S^T accumulator).

    For key j and query i = query_first + query_offs[c]: keys past the end mask every query;
    causal masks i < j - (seqlen_k - seqlen_q); each bound b masks i >= b (or i < b) as a
    threshold on the static offsets.
    """
    num_cols = len(query_offs)
    assert num_cols <= 32, "one 32-bit word of mask bits per key row"
    pairs = _pair_pattern(query_offs)
    full = Int32(-1) if cutlass.const_expr(num_cols == 32) else Int32((1 << num_cols) - 1)
    bits = cute.make_rmem_tensor(len(key_offs), Int32)
    for r in cutlass.range_constexpr(len(key_offs)):
        j = key_first + key_offs[r]
        # ge[k]: bits of the queries i >= bound k (thresholds relative to query_first)
        ge = []
        if cutlass.const_expr(n_bounds > 0):
            ge = [
                _threshold_bits(words[r * n_bounds + k] - query_first, query_offs, pairs)
                for k in range(n_bounds)
            ]
        b = Int32(0)
        if cutlass.const_expr(causal):  # i < j - (seqlen_k - seqlen_q)
            b = _threshold_bits(j - (seqlen_k - seqlen_q) - query_first, query_offs, pairs) ^ full
        if cutlass.const_expr(n_bounds == 1):
            b = b | ge[0]
        if cutlass.const_expr(n_bounds == 2 and causal):
            b = b | (ge[0] & (ge[1] ^ full))
        if cutlass.const_expr(n_bounds == 2 and not causal):
            b = b | ge[0] | (ge[1] ^ full)
        if cutlass.const_expr(n_bounds == 4):
            b = b | (ge[0] & (ge[1] ^ full)) | (ge[2] & (ge[3] ^ full))
        bits[r] = full if j >= seqlen_k else b
    return bits
