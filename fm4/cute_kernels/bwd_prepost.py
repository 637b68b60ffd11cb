"""Pre- and postprocess kernels of fm4's Hopper backward (around ``bwd_sm90.FlashMaskBwdSm90``).

Preprocess (``FlashMaskBwdPreprocess``), per (b, h, row) of the padded query length:
    Delta[b, h, i]     = sum_d dO[b, i, h, d] * O[b, i, h, d] - dlse[b, h, i]   (fp32)
    lse_log2[b, h, i]  = lse[b, h, i] * log2(e), or +inf where lse == -inf (a row that sees
                         nothing) and on padding rows i >= s_q, so that the main kernel's
                         P = exp2(S * scale_log2 - lse_log2) is exactly 0 there
    dQaccum[b, h, i, :] = 0                                                      (fp32)
Postprocess (``FlashMaskBwdPostprocess``):
    dQ[b, i, h, :] = (dQaccum[b, h, i, :] * softmax_scale).to(dtype)

Supported: bf16 / fp16, head dims 8 * 2^k up to 256 (64, 128, 256); symbolic lengths.
Not supported: varlen. Both kernels are memory bound and simple: D / 8 threads per row, each
moving 8 contiguous elements (one 16-byte load of dO and O), rows reduced with warp shuffles.
"""

import math

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32, const_expr

# ============================================================================================
# Tuning table
# ============================================================================================
PREPOST_THREADS = 256  # threads per CTA
ELEMS_PER_THREAD = 8  # contiguous head-dim elements per thread (16 bytes of bf16 / fp16)
# ============================================================================================

LOG2_E = math.log2(math.e)


class FlashMaskBwdPreprocess:
    """Delta, lse in the log2 domain, and a zeroed dQ accumulator (see the module docstring)."""

    def __init__(self, dtype: type[cutlass.Numeric], head_dim: int, has_dlse: bool, tile_m: int):
        tpr = head_dim // ELEMS_PER_THREAD
        if head_dim % ELEMS_PER_THREAD or tpr > 32 or tpr & (tpr - 1):
            raise ValueError(f"head_dim {head_dim}: needs 8, 16, 32, 64, 128 or 256")
        self.dtype = dtype
        self.head_dim = head_dim
        self.has_dlse = has_dlse
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
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32, out (zeroed)
        stream: cuda.CUstream,
    ):
        grid = (
            cute.size(mLSElog2.shape[2]) // self.rows_per_cta,
            cute.size(mLSElog2.shape[1]),
            cute.size(mLSElog2.shape[0]),
        )
        self.kernel(mO, mdO, mLSE, mdLSE, mLSElog2, mDelta, mdQaccum).launch(
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
    ):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, head, batch = cute.arch.block_idx()
        tpr = self.threads_per_row
        row = bidx * self.rows_per_cta + tidx // tpr
        chunk = tidx % tpr
        seqlen_q = mO.shape[1]
        vec = (ELEMS_PER_THREAD,)

        zeros = cute.make_rmem_tensor(ELEMS_PER_THREAD, Float32)
        zeros.fill(0.0)
        cute.autovec_copy(zeros, cute.local_tile(mdQaccum[batch, head, row, None], vec, (chunk,)))

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
    """dQ = dQaccum * softmax_scale in the input dtype (see the module docstring)."""

    def __init__(self, dtype: type[cutlass.Numeric], head_dim: int):
        tpr = head_dim // ELEMS_PER_THREAD
        if head_dim % ELEMS_PER_THREAD or tpr > 32 or tpr & (tpr - 1):
            raise ValueError(f"head_dim {head_dim}: needs 8, 16, 32, 64, 128 or 256")
        self.dtype = dtype
        self.head_dim = head_dim
        self.threads_per_row = head_dim // ELEMS_PER_THREAD
        self.rows_per_cta = PREPOST_THREADS // self.threads_per_row

    @cute.jit
    def __call__(
        self,
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32
        mdQ: cute.Tensor,  # (b, s_q, h, d), out
        softmax_scale: Float32,
        stream: cuda.CUstream,
    ):
        grid = (
            cute.ceil_div(cute.size(mdQ.shape[1]), self.rows_per_cta),
            cute.size(mdQ.shape[2]),
            cute.size(mdQ.shape[0]),
        )
        self.kernel(mdQaccum, mdQ, softmax_scale).launch(
            grid=grid, block=[PREPOST_THREADS, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self,
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d)
        mdQ: cute.Tensor,  # (b, s_q, h, d)
        softmax_scale: Float32,
    ):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, head, batch = cute.arch.block_idx()
        tpr = self.threads_per_row
        row = bidx * self.rows_per_cta + tidx // tpr
        chunk = tidx % tpr
        vec = (ELEMS_PER_THREAD,)
        if row < Int32(mdQ.shape[1]):
            acc = cute.local_tile(mdQaccum[batch, head, row, None], vec, (chunk,)).load()
            out = cute.local_tile(mdQ[batch, row, head, None], vec, (chunk,))
            out.store((acc * softmax_scale).to(self.dtype))
