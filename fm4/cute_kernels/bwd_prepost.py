"""Pre- and postprocess kernels of fm4's Hopper backward (around ``bwd_sm90.FlashMaskBwdSm90``).

Preprocess (``FlashMaskBwdPreprocess``), per (b, h, row) of the padded query length:
    Delta[b, h, i]     = sum_d dO[b, i, h, d] * O[b, i, h, d] - dlse[b, h, i]   (fp32)
    lse_log2[b, h, i]  = lse[b, h, i] * log2(e), or +inf where lse == -inf (a row that sees
                         nothing) and on padding rows i >= s_q, so that the main kernel's
                         P = exp2(S * scale_log2 - lse_log2) is exactly 0 there
    dQsem[b, h, i // tile_m] = 0                                               (int32)
    dQaccum[b, h, i, :] = 0 only with ``zero_dq_accum`` (deterministic mode; otherwise the main
                         kernel zeroes each m_block's tile before its first use: Note [dQ lazy
                         zero] in ``bwd_sm90.py``)                                  (fp32)
Postprocess (``FlashMaskBwdPostprocess``):
    dQ[b, i, h, :] = (dQaccum[b, h, i, :] * softmax_scale).to(dtype), dQaccum read in the main
    kernel's order (Note [dQ accumulator layout] in ``bwd_sm90.py``); with tickets, 0 where
    the m_block's ticket is 0 (no n_block visited it: the accumulator was never written)

Supported: bf16 / fp16, the main kernel's head dims; symbolic lengths. Not supported: varlen.
Both kernels are memory bound and simple. Preprocess: D / 8 threads per row, each moving 8
contiguous elements (one 16-byte load of dO and O), rows reduced with warp shuffles.
"""

import math

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import cutlass.memory
from cutlass import Float32, Int32, const_expr

# ============================================================================================
# Tuning table
# ============================================================================================
PREPOST_THREADS = 256  # threads per CTA
ELEMS_PER_THREAD = 8  # contiguous head-dim elements per thread (16 bytes of bf16 / fp16)
POST_ROW_PAD = 8  # postprocess: elements of padding per smem row (16 bytes: 4 banks)
# ============================================================================================

LOG2_E = math.log2(math.e)


class FlashMaskBwdPreprocess:
    """Delta, lse in the log2 domain, zeroed dQ semaphores / tickets and, with
    ``zero_dq_accum``, a zeroed dQ accumulator (see the module docstring)."""

    def __init__(
        self,
        dtype: type[cutlass.Numeric],
        head_dim: int,
        has_dlse: bool,
        tile_m: int,
        zero_dq_accum: bool = True,
    ):
        tpr = head_dim // ELEMS_PER_THREAD
        if head_dim % ELEMS_PER_THREAD or tpr > 32 or tpr & (tpr - 1):
            raise ValueError(f"head_dim {head_dim}: needs 8, 16, 32, 64, 128 or 256")
        self.dtype = dtype
        self.head_dim = head_dim
        self.has_dlse = has_dlse
        self.tile_m = tile_m
        self.zero_dq_accum = zero_dq_accum
        self.threads_per_row = head_dim // ELEMS_PER_THREAD
        self.rows_per_cta = PREPOST_THREADS // self.threads_per_row
        # The padded length is a multiple of tile_m: the grid covers it exactly.
        assert tile_m % self.rows_per_cta == 0, (tile_m, self.rows_per_cta)

    @cute.jit
    def __call__(
        self,
        mO: cute.Tensor,  # (b, s_q, h, d)
        mdO: cute.Tensor,  # (b, s_q, h, d)
        mLSE: cute.Tensor,  # (b, h, s_q) fp32, natural log
        mdLSE: cute.Tensor | None,  # (b, h, s_q) fp32
        mLSElog2: cute.Tensor,  # (b, h, s_q_padded) fp32, out
        mDelta: cute.Tensor,  # (b, h, s_q_padded) fp32, out
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32, out (zeroed if zero_dq_accum)
        mdQsem: cute.Tensor,  # (b, h, s_q_padded / tile_m) int32, out (zeroed)
        stream: cuda.CUstream,
    ):
        grid = (
            cute.size(mLSElog2.shape[2]) // self.rows_per_cta,
            cute.size(mLSElog2.shape[1]),
            cute.size(mLSElog2.shape[0]),
        )
        self.kernel(mO, mdO, mLSE, mdLSE, mLSElog2, mDelta, mdQaccum, mdQsem).launch(
            grid=grid, block=[PREPOST_THREADS, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self,
        mO: cute.Tensor,  # (b, s_q, h, d)
        mdO: cute.Tensor,  # (b, s_q, h, d)
        mLSE: cute.Tensor,  # (b, h, s_q)
        mdLSE: cute.Tensor | None,  # (b, h, s_q)
        mLSElog2: cute.Tensor,  # (b, h, s_q_padded)
        mDelta: cute.Tensor,  # (b, h, s_q_padded)
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d)
        mdQsem: cute.Tensor,  # (b, h, s_q_padded / tile_m)
    ):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, head, batch = cute.arch.block_idx()
        tpr = self.threads_per_row
        row = bidx * self.rows_per_cta + tidx // tpr
        chunk = tidx % tpr
        seqlen_q = mO.shape[1]
        vec = (ELEMS_PER_THREAD,)

        if row % self.tile_m == 0 and chunk == 0:
            mdQsem[batch, head, row // self.tile_m] = Int32(0)
        if const_expr(self.zero_dq_accum):
            zeros = cute.make_rmem_tensor(ELEMS_PER_THREAD, Float32)
            zeros.fill(0.0)
            dst = cute.local_tile(mdQaccum[batch, head, row, None], vec, (chunk,))
            cute.autovec_copy(zeros, dst)

        dot = Float32(0.0)
        if row < seqlen_q:
            o = cute.local_tile(mO[batch, row, head, None], vec, (chunk,)).load().to(Float32)
            do = cute.local_tile(mdO[batch, row, head, None], vec, (chunk,)).load().to(Float32)
            dot = (o * do).reduce(cute.ReductionOp.ADD, Float32(0.0), 0)
        # Every lane takes part in the shuffles (rows past s_q add zeros).
        for k in cutlass.range_constexpr(tpr.bit_length() - 1):
            dot = dot + cute.arch.shuffle_sync_bfly(dot, offset=tpr >> (k + 1))

        if chunk == 0:
            lse_log2 = Float32.inf
            delta = Float32(0.0)
            if row < seqlen_q:
                lse = mLSE[batch, head, row]
                lse_log2 = Float32.inf if lse == -Float32.inf else lse * LOG2_E
                delta = dot
                if const_expr(mdLSE is not None):
                    delta = dot - mdLSE[batch, head, row]
            mLSElog2[batch, head, row] = lse_log2
            mDelta[batch, head, row] = delta


class FlashMaskBwdPostprocess:
    """dQ = dQaccum * softmax_scale in the input dtype (see the module docstring).

    One CTA per (m_block, h, b) with the main kernel's consumer threads: thread t reads the
    values that consumer thread t added (Note [dQ accumulator layout] in ``bwd_sm90.py``) with
    16-byte loads, writes them at their (row, column) of the dQ MMA's accumulator layout in a
    shared-memory tile, and the CTA then stores the tile's rows in 16-byte chunks. (Storing the
    accumulator layout's pairs of columns straight to global memory took 2.97 ms at B 16, H 32,
    8K, D 128 on an H100, against 1.07 ms for FA4's postprocess.)
    """

    def __init__(self, dtype: type[cutlass.Numeric], head_dim: int, has_tickets: bool = False):
        """``has_tickets``: the main kernel zeroed the accumulator's tiles it used; read the
        m_block's ticket word first and write zeros where it is 0 (no visitor: the tile was
        never written; Note [dQ lazy zero] in ``bwd_sm90.py``)."""
        from fm4.cute_kernels.bwd_sm90 import TILE_CONFIG_BWD_SM90

        if head_dim not in TILE_CONFIG_BWD_SM90:
            raise ValueError(
                f"head_dim {head_dim}: the sm90 backward takes {sorted(TILE_CONFIG_BWD_SM90)}"
            )
        self.dtype = dtype
        self.head_dim = head_dim
        self.has_tickets = has_tickets
        self.tile_m, self.tile_n, _ = TILE_CONFIG_BWD_SM90[head_dim]

    @cute.jit
    def __call__(
        self,
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32, Note [dQ accumulator layout]
        mdQ: cute.Tensor,  # (b, s_q, h, d), out
        mdQticket: cute.Tensor | None,  # (b, h, s_q_padded / tile_m) int32 if has_tickets
        softmax_scale: Float32,
        stream: cuda.CUstream,
    ):
        from fm4.cute_kernels.bwd_sm90 import NUM_CONSUMER_WARPGROUPS, bwd_tiled_mmas

        _, _, mma_dq = bwd_tiled_mmas(self.dtype, self.head_dim, self.tile_n)
        grid = (
            cute.ceil_div(cute.size(mdQ.shape[1]), self.tile_m),
            cute.size(mdQ.shape[2]),
            cute.size(mdQ.shape[0]),
        )
        self.kernel(mdQaccum, mdQ, mdQticket, softmax_scale, mma_dq).launch(
            grid=grid, block=[128 * NUM_CONSUMER_WARPGROUPS, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self,
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d)
        mdQ: cute.Tensor,  # (b, s_q, h, d)
        mdQticket: cute.Tensor | None,  # (b, h, s_q_padded / tile_m)
        softmax_scale: Float32,
        mma_dq: cute.TiledMma,
    ):
        tidx, _, _ = cute.arch.thread_idx()
        m_block, head, batch = cute.arch.block_idx()
        d = self.head_dim
        wg, t = tidx // 128, tidx % 128
        coords = mma_dq.get_slice(tidx).partition_C(cute.make_identity_tensor((self.tile_m, d)))
        n_vals = cute.size(coords)
        n_wg = mma_dq.size // 128
        gtile = cute.local_tile(mdQaccum[batch, head, None, None], (self.tile_m, d), (m_block, 0))
        src_ptr = gtile.iterator + wg * (self.tile_m * d // n_wg) + t * 4
        src_ptr = cute.make_ptr(  # 16-byte aligned: the 4 values load as one vector
            Float32, src_ptr.toint(), cute.AddressSpace.gmem, assumed_align=16
        )
        src = cute.make_tensor(src_ptr, cute.make_layout((4, n_vals // 4), stride=(1, 512)))
        vals = cute.make_rmem_tensor(n_vals, Float32)
        vals_4 = cute.make_tensor(vals.iterator, cute.make_layout((4, n_vals // 4)))
        if const_expr(self.has_tickets):
            vals.fill(0.0)
            if mdQticket[batch, head, m_block] != 0:
                cute.autovec_copy(src, vals_4)
        else:
            cute.autovec_copy(src, vals_4)
        out = cute.make_rmem_tensor(n_vals, self.dtype)
        out.store((vals.load() * softmax_scale).to(self.dtype))
        # Through smem, so that global memory sees whole rows: values e and e + 1 are adjacent
        # columns of one row (one 4-byte smem store per pair); the padded rows start 4 banks
        # apart, so a warp's 8 rows x 4 pairs hit 32 different banks.
        smem = cutlass.memory.SmemAllocator()
        sdQ = smem.allocate_tensor(
            self.dtype,
            cute.make_layout((self.tile_m, d), stride=(d + POST_ROW_PAD, 1)),
            byte_alignment=16,
        )
        for e in cutlass.range_constexpr(0, n_vals, 2):
            row, col = coords[e]
            dst = cute.local_tile(sdQ[row, None], (2,), (col // 2,))
            cute.autovec_copy(cute.make_tensor(out.iterator + e, cute.make_layout(2)), dst)
        cute.arch.sync_threads()
        # Each thread then moves 16-byte chunks of rows that lie inside the query length.
        seqlen_q = Int32(mdQ.shape[1])
        vec = (ELEMS_PER_THREAD,)
        chunks_per_row = d // ELEMS_PER_THREAD
        threads = 128 * n_wg
        assert self.tile_m * chunks_per_row % threads == 0, (self.tile_m, d, threads)
        for i in cutlass.range_constexpr(self.tile_m * chunks_per_row // threads):
            chunk = i * threads + tidx
            row = chunk // chunks_per_row
            grow = m_block * self.tile_m + row
            if grow < seqlen_q:
                col = chunk % chunks_per_row
                cute.autovec_copy(
                    cute.local_tile(sdQ[row, None], vec, (col,)),
                    cute.local_tile(mdQ[batch, grow, head, None], vec, (col,)),
                )
