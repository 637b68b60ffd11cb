"""Tile flags and tile lists from the per-n_block min/max: the GPU hot path of `fm4.masks.tiles`.

The exact twin of ``classify_tiles`` followed by ``TileLists.from_flags`` (bit-identical results,
the entries past ``cnt`` included: the kernel writes zeros there, like the torch path), in one
CuTe DSL launch. From the min/max ``[B, Hm, Nt, n, 2]`` int32 (`fm4.cute_kernels.tile_minmax`) or
from nothing (no bounds: causal / ragged only), it writes

* ``flags`` int8 ``[B, Hm, Mt, Nt]`` (SKIP 0 / PARTIAL 1 / UNMASKED 2);
* forward lists: ``fwd_{partial,full}_cnt`` int32 ``[B, Hm, Mt]`` and ``fwd_{partial,full}_idx``
  int32 ``[B, Hm, Mt, Nt]``, the n_blocks of each m_block, ascending; with bounds also
  ``fwd_partial_code`` int32 ``[B, Hm, Mt, Nt]``, each partial entry's bound code
  (`fm4.masks.tiles.bound_codes`, Note [Bound codes]);
* optionally (``backward=True``, same launch) the backward lists: ``bwd_*_cnt`` ``[B, Hm, Nt]``,
  ``bwd_*_idx`` ``[B, Hm, Nt, Mt]``, the m_blocks of each n_block, ascending.

Without bounds, B = Hm = 1, like ``classify_tiles(None, ...)``.

Supported:
    * the four modes (causal, n) in (True, 1), (True, 2), (False, 2), (False, 4), plus the
      no-bounds case (``minmax=None``); like the torch code the rule is picked by n first, so
      (False, 1) and (True, 4) also run and match it;
    * any tile_m, tile_n >= 1 (ragged last m_block and n_block), Sq != Sk (causal offset
      Sk - Sq, Note [Ragged last block]), Sq or Sk = 1; empty B / Hm / Sq / Sk never launch;
    * sm_90a and sm_100a (anything with ``vote.sync``/``popc``); compiled once per
      ``(n, causal, tile_m, tile_n, backward, fill_tail, arch)``: B, Hm, Sq, Sk, Mt, Nt are
      runtime values.

Not supported: B or Hm above 65535 (grid limits); list tensors of 2**31 elements or more
(32-bit indexing; the wrapper checks and raises).

Design: one warp per list row: (b, hm, m_block) for the forward, (b, hm, n_block) for the
backward; ``num_warps`` rows per CTA; forward rows take the first ``ceil(Mt / num_warps)`` CTAs
of grid x and backward rows the rest, so one launch writes both. A warp walks its row's columns
32 at a time, lane l taking column ``base + l``: it classifies its tile (forward: its n_block's
2n min/max values in one or two vector loads, issued one step ahead so that the load latency
overlaps the previous step's work; backward: the row's n_block's values, loaded once per
warp), then ``vote.ballot`` of "partial" and of "unmasked" plus ``popc`` of the ballot
below the lane gives each hit its slot after the row's running count, so the indices come out
ascending without atomics or shared memory. Forward rows also store the int8 flags (32
consecutive bytes per step). With ``fill_tail`` (the default) the lanes then zero the slots past
``cnt``, which makes every output equal to the torch path's; without it those slots are left
as allocated (unspecified) and the kernel writes only ``cnt`` entries per list.
"""

from __future__ import annotations

from typing import Any

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import torch
from cutlass import Boolean, Int32, const_expr

from fm4.cute_kernels.compile_utils import (
    compile_options,
    device_arch,
    fake_compact_tensor,
    fake_env_stream,
    get_or_compile,
    launch_on,
)
from fm4.masks.tiles import CODE_ACTIVE, CODE_ALWAYS, interval_pairs

SKIP, PARTIAL, UNMASKED = 0, 1, 2  # the values of fm4.masks.tiles (checked by the tests)
_WARP = 32


class TileListsKernel:
    """CuTe DSL kernel: tile flags plus forward (and backward) tile lists, one warp per row.

    Compile-time choices: ``n`` (bounds per column; None: no bounds), ``causal``, ``tile_m``,
    ``tile_n``, ``backward`` (also write the per-n_block lists), ``fill_tail`` (zero the list
    entries past cnt) and ``num_warps`` (rows per CTA).
    """

    def __init__(
        self,
        n: int | None,
        causal: bool,
        tile_m: int,
        tile_n: int,
        *,
        backward: bool,
        fill_tail: bool = True,
        num_warps: int = 4,
    ):
        if n not in (None, 1, 2, 4):
            raise ValueError(f"n={n}: the bounds' last dimension must be 1, 2 or 4 (or None)")
        if tile_m < 1 or tile_n < 1:
            raise ValueError(f"tile sizes must be positive, got ({tile_m}, {tile_n})")
        if not 1 <= num_warps <= 32:
            raise ValueError(f"num_warps={num_warps} must be in [1, 32]")
        self.n = n
        self.causal = causal
        self.tile_m = tile_m
        self.tile_n = tile_n
        self.backward = backward
        self.fill_tail = fill_tail
        self.num_warps = num_warps

    @cute.jit
    def __call__(
        self,
        mMinMax: cute.Tensor | None,  # (b, hm, nt, 2n) int32: lo0, hi0, lo1, hi1, ...
        mFlags: cute.Tensor,  # (b, hm, mt, nt) int8
        mFwdPartCnt: cute.Tensor,  # (b, hm, mt) int32
        mFwdPartIdx: cute.Tensor,  # (b, hm, mt, nt) int32
        mFwdFullCnt: cute.Tensor,  # (b, hm, mt) int32
        mFwdFullIdx: cute.Tensor,  # (b, hm, mt, nt) int32
        mBwdPartCnt: cute.Tensor | None,  # (b, hm, nt) int32
        mBwdPartIdx: cute.Tensor | None,  # (b, hm, nt, mt) int32
        mBwdFullCnt: cute.Tensor | None,  # (b, hm, nt) int32
        mBwdFullIdx: cute.Tensor | None,  # (b, hm, nt, mt) int32
        mFwdPartCode: cute.Tensor | None,  # (b, hm, mt, nt) int32, with bounds
        seqlen_q: Int32,
        seqlen_k: Int32,
        stream: cuda.CUstream,
    ):
        batch, heads, num_m, num_n = mFlags.shape
        w = self.num_warps
        grid_x = (num_m + (w - 1)) // w
        if const_expr(self.backward):
            grid_x = grid_x + (num_n + (w - 1)) // w
        self.kernel(
            mMinMax,
            mFlags,
            mFwdPartCnt,
            mFwdPartIdx,
            mFwdFullCnt,
            mFwdFullIdx,
            mBwdPartCnt,
            mBwdPartIdx,
            mBwdFullCnt,
            mBwdFullIdx,
            mFwdPartCode,
            seqlen_q,
            seqlen_k,
        ).launch(grid=[grid_x, heads, batch], block=[_WARP * w, 1, 1], stream=stream)

    @cute.kernel
    def kernel(
        self,
        mMinMax: cute.Tensor | None,
        mFlags: cute.Tensor,
        mFwdPartCnt: cute.Tensor,
        mFwdPartIdx: cute.Tensor,
        mFwdFullCnt: cute.Tensor,
        mFwdFullIdx: cute.Tensor,
        mBwdPartCnt: cute.Tensor | None,
        mBwdPartIdx: cute.Tensor | None,
        mBwdFullCnt: cute.Tensor | None,
        mBwdFullIdx: cute.Tensor | None,
        mFwdPartCode: cute.Tensor | None,
        seqlen_q: Int32,
        seqlen_k: Int32,
    ):
        w = self.num_warps
        _, _, num_m, num_n = mFlags.shape
        bx, head, batch = cute.arch.block_idx()
        warp = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        lane = cute.arch.lane_idx()
        lanes_below = Int32(cute.arch.lanemask_lt())
        fwd_ctas = (num_m + (w - 1)) // w
        if bx < fwd_ctas:
            m_block = bx * w + warp
            if m_block < num_m:
                gCode = None
                if const_expr(self.n is not None):
                    gCode = mFwdPartCode[batch, head, m_block, None]
                self.walk_row(
                    False,
                    mMinMax,
                    mFlags[batch, head, m_block, None],
                    gCode,
                    mFwdPartCnt[batch, head, None],
                    mFwdPartIdx[batch, head, m_block, None],
                    mFwdFullCnt[batch, head, None],
                    mFwdFullIdx[batch, head, m_block, None],
                    batch,
                    head,
                    m_block,
                    num_n,
                    seqlen_q,
                    seqlen_k,
                    lane,
                    lanes_below,
                )
        else:
            if const_expr(self.backward):
                n_block = (bx - fwd_ctas) * w + warp
                if n_block < num_n:
                    self.walk_row(
                        True,
                        mMinMax,
                        None,
                        None,
                        mBwdPartCnt[batch, head, None],
                        mBwdPartIdx[batch, head, n_block, None],
                        mBwdFullCnt[batch, head, None],
                        mBwdFullIdx[batch, head, n_block, None],
                        batch,
                        head,
                        n_block,
                        num_m,
                        seqlen_q,
                        seqlen_k,
                        lane,
                        lanes_below,
                    )

    def load_minmax(self, mMinMax: cute.Tensor, batch: Int32, head: Int32, n_block: Int32, rV):
        """The n_block's 2n values (lo0, hi0, lo1, hi1, ...) into ``rV``: 1 or 2 vector loads."""
        cute.autovec_copy(mMinMax[batch, head, n_block, None], rV)

    def classify(
        self,
        mm: list | None,
        m_block: Int32,
        n_block: Int32,
        seqlen_q: Int32,
        seqlen_k: Int32,
    ) -> Int32:
        """SKIP / PARTIAL / UNMASKED of tile (m_block, n_block): `classify_tiles`' rules."""
        m0 = m_block * self.tile_m
        m1 = cutlass.min(m0 + self.tile_m, seqlen_q)
        n0 = n_block * self.tile_n
        n1 = n0 + self.tile_n
        skip = Boolean(False)
        clean = n1 <= seqlen_k  # Note [Ragged last block]
        if const_expr(self.causal):
            off = seqlen_k - seqlen_q
            skip = m1 <= n0 - off
            clean = clean & (m0 >= n1 - 1 - off)
        if const_expr(self.n is not None):

            def lo(c: int) -> Int32:
                return mm[2 * c]

            def hi(c: int) -> Int32:
                return mm[2 * c + 1]

            # An interval [A, E) covers the tile if m0 >= max A and m1 <= min E, leaves it
            # untouched if m1 <= min A or m0 >= max E; one-sided ones drop the trivial half.
            if const_expr(self.n == 1):  # [LTS, Sq)
                cover = m0 >= hi(0)
                untouched = m1 <= lo(0)
            elif const_expr(self.causal and self.n == 2):  # [LTS, LTE)
                cover = (m0 >= hi(0)) & (m1 <= lo(1))
                untouched = (m1 <= lo(0)) | (m0 >= hi(1))
            elif const_expr(self.n == 2):  # [LTS, Sq) and [0, UTE)
                cover = (m0 >= hi(0)) | (m1 <= lo(1))
                untouched = (m1 <= lo(0)) & (m0 >= hi(1))
            else:  # [LTS, LTE) and [UTS, UTE)
                cover = ((m0 >= hi(0)) & (m1 <= lo(1))) | ((m0 >= hi(2)) & (m1 <= lo(3)))
                untouched = ((m1 <= lo(0)) | (m0 >= hi(1))) & ((m1 <= lo(2)) | (m0 >= hi(3)))
            skip = skip | cover
            clean = clean & untouched
        return cutlass.select_(skip, Int32(SKIP), cutlass.select_(clean, UNMASKED, PARTIAL))

    def bound_code(self, mm: list, m_block: Int32, seqlen_q: Int32) -> Int32:
        """The bound code of tile (m_block, the lane's n_block): `fm4.masks.tiles.bound_codes`'
        rule (Note [Bound codes])."""
        m0 = m_block * self.tile_m
        m1 = cutlass.min(m0 + self.tile_m, seqlen_q)
        always = [m0 >= mm[2 * k + 1] for k in range(self.n)]
        never = [m1 <= mm[2 * k] for k in range(self.n)]
        for a, e in interval_pairs(self.causal, self.n):
            never[e] = never[e] & (mm[2 * a + 1] < seqlen_q)  # an empty column: E stays ACTIVE
        code = Int32(0)
        for k in range(self.n):
            fixed = always[k] | never[k]
            code = code | (cutlass.select_(fixed, Int32(0), Int32(CODE_ACTIVE)) << (2 * k))
            code = code | (cutlass.select_(always[k], Int32(CODE_ALWAYS), Int32(0)) << (2 * k))
        return code

    @cute.jit
    def walk_row(
        self,
        transposed: cutlass.Constexpr[bool],
        mMinMax: cute.Tensor | None,
        gFlags: cute.Tensor | None,  # (num_cols,) int8, forward only
        gPartCode: cute.Tensor | None,  # (num_cols,) int32, forward with bounds only
        gPartCnt: cute.Tensor,  # (num_rows,)
        gPartIdx: cute.Tensor,  # (num_cols,)
        gFullCnt: cute.Tensor,  # (num_rows,)
        gFullIdx: cute.Tensor,  # (num_cols,)
        batch: Int32,
        head: Int32,
        row: Int32,
        num_cols: Int32,
        seqlen_q: Int32,
        seqlen_k: Int32,
        lane: Int32,
        lanes_below: Int32,
    ):
        """One list row: forward (row = m_block, columns = n_blocks) or transposed (backward)."""
        rMM = None
        rNext = None
        if const_expr(self.n is not None):
            rMM = cute.make_rmem_tensor((2 * self.n,), Int32)
            rNext = cute.make_rmem_tensor((2 * self.n,), Int32)
            # Backward: the row's n_block (uniform); forward: the first step's n_blocks (lanes
            # past the row's end load a valid n_block, their result is discarded).
            if const_expr(transposed):
                self.load_minmax(mMinMax, batch, head, row, rMM)
            else:
                self.load_minmax(mMinMax, batch, head, cutlass.min(lane, num_cols - 1), rMM)
        cnt_p = Int32(0)
        cnt_f = Int32(0)
        for base in cutlass.range(0, num_cols, _WARP, unroll=1):
            col = base + lane
            valid = col < num_cols
            mm = None
            if const_expr(self.n is not None):
                if const_expr(not transposed):  # prefetch the next step's n_blocks
                    nxt = cutlass.min(col + _WARP, num_cols - 1)
                    self.load_minmax(mMinMax, batch, head, nxt, rNext)
                mm = [rMM[i] for i in range(2 * self.n)]
            if const_expr(transposed):
                flag = self.classify(mm, col, row, seqlen_q, seqlen_k)
            else:
                flag = self.classify(mm, row, col, seqlen_q, seqlen_k)
            is_p = valid & (flag == PARTIAL)
            is_f = valid & (flag == UNMASKED)
            bal_p = cute.arch.vote_ballot_sync(is_p)
            bal_f = cute.arch.vote_ballot_sync(is_f)
            if is_p:
                slot = cnt_p + cute.arch.popc(bal_p & lanes_below)
                gPartIdx[slot] = col
                if const_expr(gPartCode is not None):
                    gPartCode[slot] = self.bound_code(mm, row, seqlen_q)
            if is_f:
                gFullIdx[cnt_f + cute.arch.popc(bal_f & lanes_below)] = col
            if const_expr(not transposed):  # noqa: SIM102 (compile-time test, then runtime one)
                if valid:
                    gFlags[col] = flag.to(cutlass.Int8)
            cnt_p = cnt_p + cute.arch.popc(bal_p)
            cnt_f = cnt_f + cute.arch.popc(bal_f)
            if const_expr(self.n is not None and not transposed):
                rMM.store(rNext.load())
        if const_expr(self.fill_tail):
            for j in cutlass.range(cnt_p + lane, num_cols, _WARP, unroll=1):
                gPartIdx[j] = Int32(0)
                if const_expr(gPartCode is not None):
                    gPartCode[j] = Int32(0)
            for j in cutlass.range(cnt_f + lane, num_cols, _WARP, unroll=1):
                gFullIdx[j] = Int32(0)
        if lane == 0:
            gPartCnt[row] = cnt_p
            gFullCnt[row] = cnt_f


def _fake_tensors(n: int | None, backward: bool) -> list[Any]:
    """Fake compact tensors with symbolic B, Hm, Mt, Nt: the kernel's tensor arguments in order."""
    b, hm, mt, nt = (cute.sym_int32() for _ in range(4))
    i32 = cutlass.Int32
    minmax = None
    if n is not None:  # one n_block's 2n values: 8n bytes, vector loads of up to 16 bytes
        minmax = fake_compact_tensor(i32, (b, hm, nt, 2 * n), align=min(16, 8 * n))
    fwd = [
        fake_compact_tensor(cutlass.Int8, (b, hm, mt, nt), align=1),
        fake_compact_tensor(i32, (b, hm, mt)),
        fake_compact_tensor(i32, (b, hm, mt, nt)),
        fake_compact_tensor(i32, (b, hm, mt)),
        fake_compact_tensor(i32, (b, hm, mt, nt)),
    ]
    bwd: list[Any] = [None] * 4
    if backward:
        bwd = [
            fake_compact_tensor(i32, (b, hm, nt)),
            fake_compact_tensor(i32, (b, hm, nt, mt)),
            fake_compact_tensor(i32, (b, hm, nt)),
            fake_compact_tensor(i32, (b, hm, nt, mt)),
        ]
    code = None if n is None else fake_compact_tensor(i32, (b, hm, mt, nt))
    return [minmax, *fwd, *bwd, code]


def compile_tile_lists(
    n: int | None,
    causal: bool,
    tile_m: int,
    tile_n: int,
    *,
    backward: bool,
    fill_tail: bool = True,
    arch: str | None = None,
    options: str = "",
) -> Any:
    """Compile the kernel on fake tensors (no GPU needed) and return the compiled callable.

    ``arch``: e.g. ``"sm_90a"``; None leaves it to the DSL (see `compile_options`). ``options``:
    extra DSL options, e.g. ``"--keep-ptx --dump-dir DIR"`` (then ``compiled.artifacts.PTX``).
    The callable takes, through TVM FFI, ``(minmax int32 [B, Hm, Nt, 2n] or None, flags int8
    [B, Hm, Mt, Nt], fwd_partial_cnt, fwd_partial_idx, fwd_full_cnt, fwd_full_idx, bwd_partial_cnt,
    bwd_partial_idx, bwd_full_cnt, bwd_full_idx (None without backward), fwd_partial_code (None
    without bounds), seqlen_q, seqlen_k)``
    and launches on the current torch stream.
    """
    kernel = TileListsKernel(n, causal, tile_m, tile_n, backward=backward, fill_tail=fill_tail)
    return cute.compile(
        kernel,
        *_fake_tensors(n, backward),
        Int32(0),
        Int32(0),
        fake_env_stream(),
        options=compile_options(arch, options),
    )


_compile_cache: dict[tuple[Any, ...], Any] = {}


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def tile_lists_from_minmax(
    minmax: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    tile_m: int,
    tile_n: int,
    *,
    backward: bool = True,
    fill_tail: bool = True,
    device: torch.device | str | None = None,
) -> Any:
    """Flags and lists (a ``fm4.masks.tiles.TileLists``) on the GPU, on the current stream.

    minmax: int32 ``[B, Hm, Nt, n, 2]`` on CUDA (`block_minmax_cute`'s output, ``Nt =
    ceil(Sk / tile_n)``), or None for no bounds (then B = Hm = 1 and ``device`` picks the GPU,
    default the current one). ``fill_tail=False`` leaves the list entries past cnt unspecified.
    """
    from fm4.masks.tiles import TileLists

    if tile_m <= 0 or tile_n <= 0:
        raise ValueError(f"tile sizes must be positive, got tile_m={tile_m}, tile_n={tile_n}")
    if not (0 <= seqlen_q < 2**31 and 0 <= seqlen_k < 2**31):
        raise ValueError(f"seqlen_q={seqlen_q}, seqlen_k={seqlen_k} must be in [0, 2**31)")
    mt, nt = _cdiv(seqlen_q, tile_m), _cdiv(seqlen_k, tile_n)
    if minmax is None:
        dev = torch.device(device if device is not None else "cuda")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        B, Hm, n = 1, 1, None
    else:
        dev = minmax.device
        if minmax.dtype != torch.int32 or minmax.dim() != 5 or minmax.shape[-1] != 2:
            raise TypeError(
                f"minmax must be int32 [B, Hm, Nt, n, 2], got {minmax.dtype} {tuple(minmax.shape)}"
            )
        B, Hm, nt_in, n, _ = minmax.shape
        if n not in (1, 2, 4):
            raise ValueError(f"minmax has shape {tuple(minmax.shape)}: n must be 1, 2 or 4")
        if nt_in != nt:
            raise ValueError(f"minmax has {nt_in} n_blocks, Sk={seqlen_k} / {tile_n} needs {nt}")
    if dev.type != "cuda":
        raise ValueError(f"tile_lists_from_minmax needs a CUDA device, got {dev}")
    if B * Hm * mt * nt == 0:  # nothing to classify: no launch
        flags = torch.empty(B, Hm, mt, nt, dtype=torch.int8, device=dev)
        codes = None if n is None else torch.zeros(B, Hm, mt, nt, dtype=torch.int32, device=dev)
        return TileLists.from_flags(flags, tile_m, tile_n, backward=backward, codes=codes)
    if B * Hm * mt * nt >= 2**31:
        raise ValueError(f"{B}x{Hm}x{mt}x{nt} tiles: too many for 32-bit indexing")
    if B > 65535 or Hm > 65535:
        raise ValueError(f"B={B}, Hm={Hm}: each must be at most 65535 (grid limits)")
    mm2 = None
    if minmax is not None:
        if not minmax.is_contiguous() or minmax.data_ptr() % min(16, 8 * n) != 0:
            minmax = minmax.contiguous() if not minmax.is_contiguous() else minmax.clone()
        # Canonical strides (size-1 dims of a "contiguous" tensor may have any stride).
        mm2 = minmax.as_strided((B, Hm, nt, 2 * n), (Hm * nt * 2 * n, nt * 2 * n, 2 * n, 1))
    # Separate allocations: fewer host microseconds than views of one buffer.
    i32 = torch.int32
    flags = torch.empty(B, Hm, mt, nt, dtype=torch.int8, device=dev)
    fwd = [
        torch.empty(B, Hm, mt, dtype=i32, device=dev),
        torch.empty(B, Hm, mt, nt, dtype=i32, device=dev),
        torch.empty(B, Hm, mt, dtype=i32, device=dev),
        torch.empty(B, Hm, mt, nt, dtype=i32, device=dev),
    ]
    bwd: list[Any] = [None] * 4
    if backward:
        bwd = [
            torch.empty(B, Hm, nt, dtype=i32, device=dev),
            torch.empty(B, Hm, nt, mt, dtype=i32, device=dev),
            torch.empty(B, Hm, nt, dtype=i32, device=dev),
            torch.empty(B, Hm, nt, mt, dtype=i32, device=dev),
        ]
    key = (n, bool(causal), tile_m, tile_n, bool(backward), bool(fill_tail), device_arch(dev))
    fn = get_or_compile(
        _compile_cache,
        key,
        lambda: compile_tile_lists(
            n, bool(causal), tile_m, tile_n, backward=backward, fill_tail=fill_tail, arch=key[-1]
        ),
        name="tile_lists",
    )
    code = None if n is None else torch.empty(B, Hm, mt, nt, dtype=i32, device=dev)
    launch_on(dev, fn, mm2, flags, *fwd, *bwd, code, seqlen_q, seqlen_k)
    lists = TileLists(tile_m, tile_n, flags, *fwd, fwd_partial_code=code)
    if backward:
        lists.bwd_partial_cnt, lists.bwd_partial_idx, lists.bwd_full_cnt, lists.bwd_full_idx = bwd
    return lists


def build_tile_lists_cute(
    sri: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    tile_m: int,
    tile_n: int,
    *,
    backward: bool = True,
    fill_tail: bool = True,
    device: torch.device | str | None = None,
) -> Any:
    """`fm4.masks.tiles.build_tile_lists` on the GPU: min/max kernel, then the lists kernel.

    sri: int32 ``[B, Hm, Sk, n]`` on CUDA, or None (no bounds; ``device`` picks the GPU).
    Two launches in all (one without bounds), on the current stream.
    """
    minmax = None
    if sri is not None:
        from fm4.cute_kernels.tile_minmax import block_minmax_cute

        if seqlen_q == 0:  # no m_blocks: skip the min/max launch too
            B, Hm, Sk, n = sri.shape
            minmax = sri.new_empty(B, Hm, _cdiv(Sk, tile_n), n, 2)
        else:
            minmax = block_minmax_cute(sri, causal, seqlen_q, tile_n)
    return tile_lists_from_minmax(
        minmax,
        causal,
        seqlen_q,
        seqlen_k,
        tile_m,
        tile_n,
        backward=backward,
        fill_tail=fill_tail,
        device=device,
    )


def list_counts(lists: tuple, batch: Int32, head: Int32, num_heads: Int32, row: Int32) -> tuple:
    """Device side: the counts of one row of the lists (inline at trace).

    ``lists``: ``(partial_cnt, partial_idx, full_cnt, full_idx)`` of one direction (forward:
    rows are m_blocks; backward: n_blocks), ``[B, Hm, rows]`` / ``[B, Hm, rows, cols]``;
    ``head`` is a query head of ``num_heads``, mapped to its mask head (Hm in {1, H_kv, H}).
    Returns ``(mask_head, n_partial, n_total)``.
    """
    cnt_p, _, cnt_f, _ = lists
    head_m = head // (num_heads // cnt_p.shape[1])
    n_partial = cnt_p[batch, head_m, row]
    return head_m, n_partial, n_partial + cnt_f[batch, head_m, row]


def list_idx_rows(lists: tuple, batch: Int32, head_m: Int32, row: Int32) -> tuple:
    """Device side: ``(partial_idx_row, full_idx_row)`` of one row of the lists, for the mask
    head ``head_m`` (from :func:`list_counts`)."""
    _, idx_p, _, idx_f = lists
    return idx_p[batch, head_m, row, None], idx_f[batch, head_m, row, None]


def list_row(lists: tuple, batch: Int32, head: Int32, num_heads: Int32, row: Int32) -> tuple:
    """Device side: one row of the lists, as the attention kernels read it (inline at trace):
    ``(n_partial, n_total, partial_idx_row, full_idx_row)`` (see :func:`list_counts`)."""
    head_m, n_partial, n_total = list_counts(lists, batch, head, num_heads, row)
    return (n_partial, n_total, *list_idx_rows(lists, batch, head_m, row))
