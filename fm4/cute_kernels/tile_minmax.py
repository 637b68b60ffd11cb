"""Per-n_block min/max of the normalised mask bounds: the GPU hot path of `fm4.masks.tiles`.

The exact twin of `fm4.masks.tiles.block_minmax_torch` (bit-identical results), written in the
CuTe DSL. For ``startend_row_indices`` int32 ``[B, Hm, Sk, n]`` it returns int32
``[B, Hm, Nt, n, 2]`` (``Nt = ceil(Sk / tile_n)``): ``[..., c, 0]`` the minimum and
``[..., c, 1]`` the maximum over the n_block's columns ``j < Sk`` of bound ``c`` after
normalisation (clamp to Sq; an empty two-sided interval becomes ``[Sq, Sq)``, see
Note [Empty intervals] in `fm4.masks.tiles`).

Supported:
    * the four modes of `fm4.masks.bounds.BOUND_NAMES`: (causal, n) in (True, 1), (True, 2),
      (False, 2), (False, 4); the pairing rule alone depends on ``causal`` (the (0, 1) pair when
      causal and n == 2; (0, 1) and (2, 3) when n == 4), so (False, 1) and (True, 4) also run
      and match the torch twin;
    * any ``tile_n >= 1`` (ragged last n_block included), any values (negatives pass through
      like in the torch twin, where a ragged block's padding columns count as ``Sq`` for the
      min and ``0`` for the max);
    * sm_90a and sm_100a (anything with ``redux.sync``, sm_80 on); compiled once per
      ``(n, causal, tile_n, arch)``: B, Hm, Sk and Sq are runtime values, a new length never
      recompiles.

Not supported: B or Hm above 65535 (grid z/y limits); tensors of 2**31 elements or more (see
below). The kernel reads compact bounds only: `block_minmax_cute` copies non-contiguous or
misaligned ones first.

Design: one CTA per (n_block, mask head, batch); thread t owns columns ``t, t + threads, ...`` of
the n_block, loads each column's n bounds with one vector load (4n bytes; the wrapper guarantees
4n-byte alignment), normalises them, keeps a running min/max per bound in registers, then
reduces across the warp with ``redux.sync`` and across warps through shared memory. Columns
past Sk are not loaded out of bounds: the load index is clamped to Sk - 1 and the value replaced
by the padding value (Sq for the min, 0 for the max), like the torch twin's padding.

Indexing is 32-bit: the fake tensors have int32 shapes and strides, so every offset is an int32
product. That is safe while ``B * Hm * Nt * n * 2`` and ``B * Hm * Sk * n`` stay below 2**31;
the largest case fm4 targets is ``B * Hm * Sk * n = 128K * 32 * 4 = 16M`` (and the output is
smaller than the input for tile_n >= 2). The wrapper checks the bound and raises otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import torch
from cutlass import Int32, const_expr

from fm4.cute_kernels.compile_utils import (
    compile_options,
    device_arch,
    fake_compact_tensor,
    fake_env_stream,
    get_or_compile,
    launch_on,
)

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
_WARP = 32


def _pairs(n: int, causal: bool) -> tuple[tuple[int, int], ...]:
    """The two-sided (start, end) bound pairs that normalisation canonicalises."""
    if n == 4:
        return ((0, 1), (2, 3))
    if causal and n == 2:
        return ((0, 1),)
    return ()


class BlockMinMax:
    """CuTe DSL kernel: per-n_block min/max of each normalised bound.

    Compile-time choices: ``n`` (bounds per column), ``causal`` (only through the pairing rule),
    ``tile_n`` (columns per n_block) and ``num_threads`` (a multiple of 32; default: tile_n
    rounded up to a warp, at most 256).
    """

    def __init__(self, n: int, causal: bool, tile_n: int, num_threads: int | None = None):
        if n not in (1, 2, 4):
            raise ValueError(f"n={n}: the bounds' last dimension must be 1, 2 or 4")
        if tile_n < 1:
            raise ValueError(f"tile_n={tile_n} must be positive")
        if num_threads is None:
            num_threads = min(256, _WARP * math.ceil(tile_n / _WARP))
        if num_threads % _WARP != 0 or not 0 < num_threads <= 1024:
            raise ValueError(f"num_threads={num_threads} must be a multiple of 32 in [32, 1024]")
        self.n = n
        self.causal = causal
        self.pairs = _pairs(n, causal)
        self.tile_n = tile_n
        self.num_threads = num_threads
        self.num_warps = num_threads // _WARP
        self.cols_per_thread = math.ceil(tile_n / num_threads)

    @cute.jit
    def __call__(
        self,
        mSri: cute.Tensor,  # (b, hm, sk, n) int32, compact
        mOut: cute.Tensor,  # (b, hm, nt, n, 2) int32, compact
        seqlen_q: Int32,
        stream: cuda.CUstream,
    ):
        batch, heads, _, _ = mSri.shape
        num_n_blocks = mOut.shape[2]
        self.kernel(mSri, mOut, seqlen_q).launch(
            grid=[num_n_blocks, heads, batch],
            block=[self.num_threads, 1, 1],
            stream=stream,
        )

    @cute.kernel
    def kernel(
        self,
        mSri: cute.Tensor,  # (b, hm, sk, n)
        mOut: cute.Tensor,  # (b, hm, nt, n, 2)
        seqlen_q: Int32,
    ):
        n = self.n
        tidx, _, _ = cute.arch.thread_idx()
        n_block, head, batch = cute.arch.block_idx()
        seqlen_k = mSri.shape[2]
        mS = mSri[batch, head, None, None]  # (sk, n)

        lo = [Int32(INT32_MAX)] * n
        hi = [Int32(INT32_MIN)] * n
        for k in cutlass.range_constexpr(self.cols_per_thread):
            col = tidx + k * self.num_threads  # column inside the n_block
            j = n_block * self.tile_n + col  # key column
            in_tile = col < self.tile_n
            valid = in_tile & (j < seqlen_k)
            j_load = cutlass.min(j, seqlen_k - 1)  # never read past Sk (Sk >= 1)
            rV = cute.make_rmem_tensor((n,), Int32)
            cute.autovec_copy(mS[j_load, None], rV)
            v = [cutlass.min(rV[c], seqlen_q) for c in range(n)]
            for s, e in self.pairs:
                empty = v[s] >= v[e]
                v[s] = cutlass.select_(empty, seqlen_q, v[s])
                v[e] = cutlass.select_(empty, seqlen_q, v[e])
            for c in cutlass.range_constexpr(n):
                # In the tile but past Sk: the torch twin's padding (Sq for min, 0 for max).
                # Past the tile (extra threads): the identities.
                v_lo = cutlass.select_(
                    valid, v[c], cutlass.select_(in_tile, seqlen_q, Int32(INT32_MAX))
                )
                v_hi = cutlass.select_(valid, v[c], cutlass.select_(in_tile, 0, Int32(INT32_MIN)))
                lo[c] = cutlass.min(lo[c], v_lo)
                hi[c] = cutlass.max(hi[c], v_hi)

        for c in cutlass.range_constexpr(n):
            lo[c] = cute.arch.warp_redux_sync(lo[c], "min")
            hi[c] = cute.arch.warp_redux_sync(hi[c], "max")

        gOut = mOut[batch, head, n_block, None, None]  # (n, 2)
        if const_expr(self.num_warps == 1):
            if tidx == 0:
                for c in cutlass.range_constexpr(n):
                    gOut[c, 0] = lo[c]
                    gOut[c, 1] = hi[c]
        else:
            smem = cutlass.memory.SmemAllocator()
            sRed = smem.allocate_tensor(
                Int32, cute.make_layout((n, 2, self.num_warps)), byte_alignment=16
            )  # (n, 2, warps)
            warp = cute.arch.warp_idx()
            if cute.arch.lane_idx() == 0:
                for c in cutlass.range_constexpr(n):
                    sRed[c, 0, warp] = lo[c]
                    sRed[c, 1, warp] = hi[c]
            cute.arch.barrier()
            if tidx < n:  # thread c finishes bound c
                r_lo = sRed[tidx, 0, 0]
                r_hi = sRed[tidx, 1, 0]
                for w in cutlass.range_constexpr(1, self.num_warps):
                    r_lo = cutlass.min(r_lo, sRed[tidx, 0, w])
                    r_hi = cutlass.max(r_hi, sRed[tidx, 1, w])
                gOut[tidx, 0] = r_lo
                gOut[tidx, 1] = r_hi


def _fake_tensors(n: int) -> tuple[Any, Any]:
    """Fake compact int32 tensors with symbolic B, Hm, Sk, Nt (int32 shapes and strides)."""
    b, hm, sk, nt = (cute.sym_int32() for _ in range(4))
    sri = fake_compact_tensor(cutlass.Int32, (b, hm, sk, n), align=4 * n)  # one vector load
    out = fake_compact_tensor(cutlass.Int32, (b, hm, nt, n, 2))
    return sri, out


def compile_block_minmax(
    n: int, causal: bool, tile_n: int, arch: str | None = None, options: str = ""
) -> Any:
    """Compile the kernel on fake tensors (no GPU needed) and return the compiled callable.

    ``arch``: e.g. ``"sm_90a"`` (passed as ``--gpu-arch``); None leaves it to the DSL, which
    takes ``CUTE_DSL_ARCH`` as it was when cutlass was imported, else the visible GPU, else
    sm_100a. ``options``: extra DSL compile options, e.g. ``"--keep-ptx --dump-dir DIR"`` (the
    PTX text is then in ``compiled.artifacts.PTX``). The callable takes torch tensors through
    TVM FFI, ``(sri int32 [B, Hm, Sk, n], out int32 [B, Hm, Nt, n, 2], seqlen_q: int)``, and
    launches on the current torch stream.
    """
    sri, out = _fake_tensors(n)
    return cute.compile(
        BlockMinMax(n, causal, tile_n),
        sri,
        out,
        Int32(0),
        fake_env_stream(),
        options=compile_options(arch, options),
    )


_compile_cache: dict[tuple[int, bool, int, str], Any] = {}


def block_minmax_cute(sri: torch.Tensor, causal: bool, seqlen_q: int, tile_n: int) -> torch.Tensor:
    """Per-n_block min/max of each normalised bound, on the GPU (twin of `block_minmax_torch`).

    sri: int32 ``[B, Hm, Sk, n]`` on CUDA, n in {1, 2, 4}. Returns int32 ``[B, Hm, Nt, n, 2]``,
    ``Nt = ceil(Sk / tile_n)`` ([..., 0] min, [..., 1] max), computed on the current stream.
    """
    if not sri.is_cuda:
        raise ValueError(f"block_minmax_cute needs a CUDA tensor, got one on {sri.device}")
    if sri.dtype != torch.int32 or sri.dim() != 4:
        raise TypeError(f"sri must be int32 [B, Hm, Sk, n], got {sri.dtype} {tuple(sri.shape)}")
    B, Hm, Sk, n = sri.shape
    if n not in (1, 2, 4):
        raise ValueError(f"sri has shape {tuple(sri.shape)}: n must be 1, 2 or 4")
    if tile_n < 1:
        raise ValueError(f"tile_n={tile_n} must be positive")
    if not 0 <= seqlen_q < 2**31:
        raise ValueError(f"seqlen_q={seqlen_q} must be in [0, 2**31)")
    nt = (Sk + tile_n - 1) // tile_n
    out = torch.empty(B, Hm, nt, n, 2, dtype=torch.int32, device=sri.device)
    if out.numel() == 0:
        return out
    if sri.numel() >= 2**31 or out.numel() >= 2**31:
        raise ValueError(f"sri of shape {tuple(sri.shape)} is too large for 32-bit indexing")
    if B > 65535 or Hm > 65535:
        raise ValueError(f"B={B}, Hm={Hm}: each must be at most 65535 (grid limits)")
    if not sri.is_contiguous():
        sri = sri.contiguous()
    elif sri.data_ptr() % (4 * n) != 0:  # a view at an odd offset: the kernel loads 4n bytes
        sri = sri.clone()
    # Canonical strides (torch calls a tensor contiguous whatever the strides of its size-1
    # dimensions; the compiled kernel has the strides of Sk and n static).
    sri = sri.as_strided(sri.shape, (Hm * Sk * n, Sk * n, n, 1))
    key = (n, bool(causal), tile_n, device_arch(sri.device))
    fn = get_or_compile(
        _compile_cache,
        key,
        lambda: compile_block_minmax(n, bool(causal), tile_n, arch=key[3]),
        name="block_minmax",
    )
    launch_on(sri.device, fn, sri, out, seqlen_q)
    return out
