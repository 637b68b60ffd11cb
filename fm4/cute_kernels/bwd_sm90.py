"""fm4 backward attention kernel for Hopper (sm_90a), FlashMask column-bound masks (main kernel).

Supported:
    bf16 / fp16 q, k, v, out, dout in (b, s, h, d) layout (d contiguous); head dims 64, 128, 256;
    GQA / MQA (h % h_kv == 0: one CTA loops over the query heads of its kv head, see
    Note [GQA in the CTA]); any seqlen_q, seqlen_k (symbolic); no mask, causal (bottom-right
    aligned), or FlashMask bounds [b, hm, s_k, n] (n in {1, 2, 4}, hm in {1, h_kv, h}) visited
    through per-n_block tile lists (partial / unmasked); rows that see no key contribute zero.
    Head dim 256: tile 64 x 64, one Q / dO stage, the two consumer warpgroups split d for
    dK / dV (Note [dK dV split]).
Not supported (yet): head_dim_v != head_dim, varlen, dropout, softcap, score modifiers, fp8.
    The persistent scheduler (knob ``persistent``, Note [Persistent backward]) is correct on
    the GPU but not faster: off by default.

Structure (FA3 design; one CTA per (n_block, kv head, batch), 384 threads):
    warpgroup 0, warp 0      producer: TMA loads of K and V once, then Q and dO per m_block
                             through a ``Q_STAGES``-deep mbarrier pipeline.
    warpgroup 0, warp 1      dQ warp: adds each m_block's dQ, staged in smem by the consumers,
                             to the fp32 accumulator with bulk reductions
                             (``cp.reduce.async.bulk``; Note [dQ accumulator layout]).
    warpgroup 0, warp 2      stats warp (``sdp_swapab`` only): lse / Delta rows of each m_block
                             into smem (Note [SdP swapAB]).
    warpgroups 1 and 2       consumers. Each owns half of the tile's key columns for S / dP
                             and the same half of the rows of dK / dV:
                               S  = Q K^T, dP = dO V^T          (wgmma, smem x smem)
                               P  = exp2(S * scale_log2 - lse_log2)  (mask on partial tiles)
                               dS = P * (dP - Delta)
                               P, dS -> smem (stmatrix)
                               dV += P^T dO, dK += dS^T Q       (registers, whole CTA life)
                               dQ  = dS K (each WG half of d) -> smem -> the dQ warp
    epilogue                 dK * scale and dV -> smem (aliasing sK / sV) -> TMA store.
    Knob ``sdp_swapab`` (default on, ``SDP_SWAPAB``): S^T and dP^T instead, P^T / dS^T as
    register operands of dV / dK, no P in smem (Note [SdP swapAB]).
    tile_n 64 (head dim 256): each consumer owns half of d of dK / dV instead (Note [dK dV
    split]).

The preprocess (``bwd_prepost.py``) gives lse in the log2 domain (+inf for rows that see
nothing and for padding rows, so P == 0 there: Note [Masked rows] of ``softmax.py``), Delta
(0 on padding rows) and zeroed dQ tickets (Note [dQ lazy zero]; in deterministic mode a
zeroed dQ accumulator and semaphores instead); the postprocess turns dQ into the input dtype
times the softmax scale.

Note [GQA in the CTA]
    dK / dV of a kv head are the sum over the query heads of its group. The CTA of (n_block,
    kv head, batch) loops over those heads (and each head's m_blocks) with dK / dV in
    registers, so dK / dV need no fp32 buffer, no atomics and no postprocess, and are
    deterministic. The price is parallelism: the grid is n_blocks x h_kv x b, small for MQA at
    short lengths. FA4's alternative (grid over query heads, fp32 dK / dV accumulated with TMA
    reduce-add, converted in the postprocess) is the next step when that grid is too small.

Note [dQ accumulator layout]
    The fp32 accumulator is allocated as [b, h, s_q_padded, d], and the (tile_m, d) tile of
    an m_block is one contiguous range of tile_m * d floats. Inside it, the values are NOT in
    (row, column) order but in the order the consumers hold them: warpgroup w owns the range
    [w * tile_m * d / 2, (w + 1) * tile_m * d / 2), and its thread t's accumulator value e sits
    at (e // 4) * 512 + t * 4 + e % 4 of that range. The consumers write this order to smem with
    16-byte stores (no bank conflicts, no shuffles), the dQ warp adds each warpgroup's range
    with one bulk reduction, and the postprocess reads it back with the same tiled MMA to find
    each value's (row, column).

Note [SdP swapAB]
    With ``sdp_swapab`` the consumers compute S^T = K Q^T and dP^T = V dO^T (FA3 / FA4's choice
    for head dim 128): a warpgroup's wgmma M is its 64 key columns, N the tile's 64 query rows.
    The accumulators of P^T and dS^T, converted to 16 bits in place, are then the register A
    operands of dV += P^T dO and dK += dS^T Q (RS wgmma, as the forward's P V): P never goes to
    smem (no sP buffer) and dK reads dS from registers. dS still goes to smem for dQ = dS K,
    which needs the query rows as M: stmatrix with .trans writes the (key, query) registers as
    (query, key) rows, in the layout ``sdp_swapab`` off uses.
    - lse and Delta belong to the accumulator's columns: 16 query rows per thread instead of 2.
      They are staged in smem, one slot per Q stage, by the stats warp (warp 2 of the producer
      warpgroup, otherwise idle): it walks the consumers' m_block sequence, loads the m_block's
      tile_m lse and Delta values from global memory (two each per lane), waits until the
      slot is free, stores them and arrives on the Q stage's full mbarrier, which therefore
      counts 1 + 32 arrivals (the TMA thread's and the stats warp's lanes): the consumers'
      existing Q wait covers the slots. After reading a slot (lse after the S GEMM is issued,
      Delta after the dP wait) every consumer thread arrives on the slot's "empty" mbarrier
      (count: all consumer threads), which the stats warp waits on before refilling it.
      Consumer cost: one mbarrier arrive and 8 + 8 eight-byte smem loads per m_block.
      Measured and not kept (H100, 8K, bwd alone; NOTES.md): the producer bulk-copying the
      rows into the slots on the Q / dO mbarriers (sessions 3-5: 0.5-4% faster than this, but
      compute-sanitizer racecheck reports the consumers' reads against the next bulk copy,
      even with a proxy fence and a warp barrier before the release); consumer threads loading
      the next m_block's rows and storing them before the PdS barrier (session 4: ~40 more
      instructions per m_block, 3-6% slower than this); each thread loading its 16 + 16 values
      from global memory (n = 4 spills). The slot hand-off with named barriers instead of the
      empty mbarrier (consumers' bar.arrive, or the stats warp joining the PdS bar.sync) is as
      fast, but racecheck reports the reads against the next refill as WAR hazards; with
      per-thread mbarrier arrivals it reports none.
    - Mask of partial tiles: a thread's rows are 2 key columns, so it reads the bounds of those
      2 keys once per (n_block, head) (``mask_apply.key_bound_words``) and turns each rule into
      threshold bit masks over its 16 static query offsets (``mask_bits_transposed``): a few
      integer operations per key row and m_block, no compare per element.
    - Barriers: no per-warpgroup P barrier (dV reads registers); the consumer-wide PdS barrier
      once per m_block after dS is written (plus once before the write with one dS buffer);
      dQ staging as with sdp_swapab off. ``early_dv`` issues dV += P^T dO before dS is
      computed, otherwise after the PdS barrier.

Note [dK dV split]
    At head dim 256 the dK and dV accumulators of a (64 keys, 256) tile take 64 x 256 x 2 fp32
    per warpgroup: 256 registers per thread, more than a consumer has. With tile_n 64 the two
    consumer warpgroups split d instead of the keys: warpgroup w accumulates columns
    [w * d / 2, (w + 1) * d / 2) of dK and dV for all 64 keys (128 registers). S = Q K^T and
    dP = dO V^T are still split by key columns (32 per warpgroup, as ``sdp_swapab`` off), so
    both warpgroups' P and dS go to smem before either dV or dK GEMM reads them: ``early_dv``
    and ``sdp_swapab`` are off, and the PdS barrier is the only hand-off. Shared memory at
    d = 256 (Q, dO, K, V 32 KB each, P and dS 8 KB each, the dQ staging buffer 64 KB: 208 KB)
    leaves room for one Q / dO stage only, so the next m_block's loads wait for this one's
    GEMMs: correct but not tuned (no performance target at d = 256). Head dim 128 takes tile_n
    64 too (a tuning knob; the GPU tests run it there); head dim 64 does not (each warpgroup's
    32 columns of d would start inside a 128-byte swizzle row of sQ / sdO).

Note [Persistent backward]
    Why: a least-squares fit of the committed H100 run (8K, 11 masks, backward alone = fwd+bwd
    minus fwd) over (unmasked tiles, partial tiles, CTAs) per SM gives ~2.2 us per unmasked
    64 x 128 tile, ~2.3 us per partial one and ~21 us per CTA (FA4 mask_mod's backward, also
    one CTA per n_block: ~21 us per CTA too). On sliding_window (~10 m_blocks per n_block)
    that fixed part is about half of the backward; on causal (65) an eighth.
    What: with ``persistent`` the grid is min(work items, SMs); a work item is one (n_block,
    kv head, batch), numbered n_block fastest (the one-CTA grid's order). CTA c starts with
    item c; its producer warp claims the next from a global counter (``tile_scheduler``) and
    pushes each item into a two-slot smem queue that the consumer warpgroups, the dQ warp and
    the stats warp pop. Every pipeline state carries over from item to item. Per item the
    producer issues the first Q / dO load, then K and V (the consumers free sK / sV only once
    the item's epilogue has been read out of them by the TMA store), then the rest; the
    consumers zero dK / dV, run the m_blocks, store dK / dV through sK / sV as before and
    release K / V. Hidden that way: the CTA launch and exit, the first Q / dO and lse / Delta
    loads of the next item, the dQ warp's and the stats warp's start. Not hidden: the K / V
    load latency after the epilogue (no smem for a second K / V buffer at d = 128).
    Measured (H100, 8K, B = 16, H = 32, backward kernels alone, three interleaved rounds,
    session 8), default / persistent / persistent with ``dkv_store="direct"``, ms:
    sliding_window 10.46 / 10.53 / 11.27, share_question 13.27 / 15.92 / 15.88,
    causal_document 15.02 / 15.80 / 16.08, document 23.53 / 23.60 / 26.18, causal
    39.80 / 41.33 / 41.93, full 74.00 / 73.76 / 75.20. No gain anywhere: the ~21 us per CTA of
    the fit is not the CTA launch, exit or first loads. Both knobs stay off (GPU-tested:
    dK / dV bitwise equal to the default, deterministic mode bitwise, 24 tests).
    With ``deterministic`` (Note [Deterministic dQ]) the dQ warp of item i waits only for items
    of lower index (lower n_blocks of the same kv head and batch). Items are claimed in index
    order and a CTA runs its items in the order it claimed them, so the lowest unfinished item
    always runs and waits for nothing: no deadlock, provided every CTA of the grid is running
    (items 0 .. grid - 1 belong to their CTAs from the start). The launcher therefore caps the
    grid at one CTA per SM; an SM held by another kernel only delays the CTA waiting for it.

Note [dQ lazy zero]
    The preprocess does not zero the fp32 dQ accumulator (at 8K, B 16, H 32, D 128 that wrote
    2.15 GB, about half of its 1.49 ms on an H100). The main kernel's dQ warp zeroes each
    m_block's tile before its first use, off the consumers' path. A ticket word per (b, h,
    m_block) (int32, zeroed by the preprocess; ``mdQsem``) names the first visitor. For the
    m_blocks i of its sequence the dQ warp
      - takes the ticket of m_block i + 2 (lane 0, relaxed ``atom.add`` 1) after issuing
        m_block i's reductions (the value is first used an iteration later);
      - zeroes m_block i + 1's tile if its ticket was 0 (32 lanes, 16-byte coalesced stores,
        a proxy fence per lane), right after freeing the staging buffer for m_block i, i.e.
        while the consumers compute m_block i's dQ;
      - waits (lane 0, ``ld.acquire``) until m_block i's ticket has the flag
        ``DQ_STORED_FLAG``, unless it zeroed the tile itself, and fences the async proxy;
      - issues m_block i's bulk reductions (every visitor adds);
      - sets the flag of m_block i + 1 if it zeroed it (warp sync, then lane 0's
        ``red.release``): a whole dQ wait after the stores were issued, and before any other
        CTA in lock step with it checks that flag.
    The first m_block's ticket is taken, and its tile zeroed and released, before the loop.
    The zeroing CTA releases without waiting for another CTA, and a CTA waits only for a
    flag whose owner has already taken its ticket, so there is no deadlock. An m_block nobody
    visits keeps ticket 0, and the postprocess writes zeros for it without reading the
    accumulator. Deterministic mode keeps the preprocess's zero fill and its fixed order.
    Measured (H100, 8K, backward alone, 4 interleaved rounds, session 13): 0.3-0.9 ms faster
    on the sparse masks (sliding_window 9.21 -> 8.36 ms, share_question 12.46 -> 11.88),
    within noise on the dense ones (full 73.10 -> 73.34). Tried first and dropped: the first
    visitor bulk-*storing* its dQ, the others waiting for that store to complete (no zeros
    written at all): on full, causal, qk_sparse and random_eviction many CTAs reach an
    m_block together and waited, 2 ms slower; starting each CTA's m_block sequence at a
    rotated position made full and document slower still. Taking the ticket and zeroing only
    one m_block ahead (flag checked right as the first visitor sets it): full 84 ms.

Note [Deterministic dQ]
    Without ``deterministic``, the order in which the n_blocks that visit an m_block add their
    dQ varies between runs, and so do the fp32 sums. With it: a semaphore per (b, h, m_block)
    (int32, zeroed by the preprocess) counts the additions done. Before adding, the dQ warp of
    the CTA of n_block computes its rank: the number of n_blocks below it that visit the
    m_block (n_block itself without bounds, where the visitors are 0, 1, ...; with bounds, a
    warp-wide count over the forward tile lists of the same tiling). It waits (ld.acquire)
    until the semaphore equals the rank, issues the bulk reductions, waits for them to
    complete, and increments the semaphore (red.release). The additions then always happen in
    ascending n_block order.
    No deadlock: a CTA only waits for CTAs of lower n_block of the same (kv head, batch),
    which are launched before it. Cost: the additions to one m_block are serialised.
"""

import enum

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import cutlass.memory
import cutlass.pipeline as pipeline
import cutlass.utils.hopper_helpers as sm90_utils
from cutlass import Float32, Int32, const_expr
from cutlass.cute.nvgpu import cpasync, warp, warpgroup
from cutlass.tensor_utils import LayoutEnum

from fm4.cute_kernels.fwd_sm90 import _gemm, _select, _transpose_view
from fm4.cute_kernels.mask_apply import (
    apply_mask_bits,
    key_bound_words,
    mask_bits,
    mask_bits_transposed,
)
from fm4.cute_kernels.pipeline_utils import tma_load, tma_pipeline
from fm4.cute_kernels.smem_struct import aligned_buf, make_struct, tile_buf
from fm4.cute_kernels.softmax import acc_to_frg_a, acc_to_mn
from fm4.cute_kernels.sync_utils import (
    atom_add_relaxed_gpu,
    bulk_reduce_add_f32,
    fence_proxy_async_global,
    ld_acquire_gpu,
    red_release_add_gpu,
    thread_idx_x_here,
)
from fm4.cute_kernels.tile_lists import list_row
from fm4.cute_kernels.tile_scheduler import (
    TILE_INFO_WORDS,
    TILE_QUEUE_STAGES,
    claim_tile,
    pop_tile,
    push_tile,
    tile_queue,
)

# ============================================================================================
# Tuning table (the only place with tuning constants)
# ============================================================================================
# head_dim -> (tile_m, tile_n, Q / dO pipeline stages)
TILE_CONFIG_BWD_SM90: dict[int, tuple[int, int, int]] = {
    64: (64, 128, 2),
    128: (64, 128, 2),
    256: (64, 64, 1),  # Note [dK dV split]: 208 KB of smem with one stage
}
# P / dS smem buffers: 2 lets a warpgroup write this m_block's P / dS while the other may still
# read last m_block's (one consumer-wide barrier per m_block instead of two); 1 saves 32 KB.
PDS_STAGES = 2
# Write P to smem and issue dV += P^T dO as soon as P is ready (a warpgroup reads only its own
# half of P), overlapping the dV GEMM with dS; else P and dS go to smem together.
EARLY_DV = True
# Compute S^T = K Q^T and dP^T = V dO^T (Note [SdP swapAB]), per number of bounds: P^T and dS^T
# stay in registers as the A operands of dV += P^T dO and dK += dS^T Q; no P in smem.
SDP_SWAPAB: dict[int, bool] = {0: True, 1: True, 2: True, 4: True}
# Each owns tile_n / 2 key columns of S, dP (and of dK, dV at tile_n 128), d / 2 of dQ (and of
# dK, dV at tile_n 64: Note [dK dV split]).
NUM_CONSUMER_WARPGROUPS = 2
# One CTA per SM looping over (n_block, kv head, batch) work items taken from a global counter
# (Note [Persistent backward]). Correct, not faster (H100, session 8): off.
PERSISTENT_BWD = False
# How dK / dV leave the CTA: "tma" (through sK / sV, one TMA store each) or "direct" (each
# thread stores its accumulator values to global memory: no smem, no barrier; with
# ``persistent`` the next item's K / V then load during the epilogue). "direct": correct, not
# faster (H100, session 8).
DKV_STORE = "tma"
# The main kernel zeroes each m_block's dQ accumulator tile one m_block ahead of its first
# use, instead of the preprocess zeroing all of it (Note [dQ lazy zero]).
DQ_LAZY_ZERO = True
REGS_PRODUCER = 24  # setmaxnreg for the producer warpgroup (TMA warp, dQ warp)
REGS_CONSUMER = 240  # setmaxnreg for each consumer warpgroup
SMEM_ALIGN_BYTES = 1024  # alignment of each smem buffer (128B swizzle atoms)
# ============================================================================================

THREADS_PER_WG = 128
# Note [dQ lazy zero]: the flag bit of an m_block's ticket word (the low bits count visitors).
DQ_STORED_FLAG = 1 << 30


def dq_lazy_zero_on(deterministic: bool, knob: bool | None = None) -> bool:
    """Whether the main kernel zeroes the dQ accumulator (not the preprocess; Note [dQ lazy
    zero]): ``knob`` (default ``DQ_LAZY_ZERO``), never in deterministic mode."""
    return (DQ_LAZY_ZERO if knob is None else bool(knob)) and not deterministic


class NamedBarrierBwd(enum.IntEnum):
    """Barrier ids of the backward kernel (0 is ``__syncthreads``).

    To move into ``named_barrier.py`` next to ``NamedBarrierFwd`` (owned by another change).
    """

    # All consumer threads: dK / dV staged in smem, ready for the TMA store.
    Epilogue = 1
    # All consumer threads: P / dS of this m_block written (and last m_block's read).
    PdS = 2
    # Consumer warpgroup w + the dQ warp: dQ of warpgroup w staged in smem (Full), or the
    # staging buffer free again (Empty). Ids dQFull + w and dQEmpty + w.
    dQFull = 3
    dQEmpty = 5
    # Consumer warpgroup w alone: its half of P written, its dV GEMM may read it (id P + w).
    P = 7


def _smem_layout(dtype, rows: int, cols: int, stages: int | None = None, major: int = 0):
    """Swizzled row-major smem layout of a (rows, cols) tile, optionally with a stage mode.

    ``major``: the widest extent of the contiguous (cols) dimension any wgmma reads at once
    when it uses this buffer as an MN-major operand (default ``cols``); it picks the swizzle.
    """
    atom = warpgroup.make_smem_layout_atom(
        sm90_utils.get_smem_layout_atom(LayoutEnum.ROW_MAJOR, dtype, major or cols), dtype
    )
    if stages is None:
        return cute.tile_to_shape(atom, (rows, cols), order=(0, 1))
    return cute.tile_to_shape(atom, (rows, cols, stages), order=(0, 1, 2))


def _shared_storage(
    dtype,
    stages: int,
    tile_m: int,
    head_dim: int,
    layouts: tuple,
    sdp_swapab: bool,
    persistent: bool = False,
):
    """The kernel's smem: mbarriers, (persistent: the work-item queue), (sdp_swapab: the lse /
    Delta slots of each Q stage, fp32, filled by the stats warp), Q, dO, K, V, (without
    sdp_swapab: P), dS, dQ."""
    sQ_layout, sdO_layout, sK_layout, sV_layout, sPdS_layout = layouts

    def buf(layout):
        return tile_buf(dtype, layout, SMEM_ALIGN_BYTES)

    fields = {
        "mbar_kv": cute.struct.MemRange[cutlass.Int64, 2],
        "mbar_q": cute.struct.MemRange[cutlass.Int64, stages * 2],
        "mbar_do": cute.struct.MemRange[cutlass.Int64, stages * 2],
    }
    if persistent:  # Note [Persistent backward]
        fields["mbar_tile"] = cute.struct.MemRange[cutlass.Int64, 2 * TILE_QUEUE_STAGES]
        fields["sTile"] = cute.struct.MemRange[cutlass.Int32, TILE_INFO_WORDS * TILE_QUEUE_STAGES]
    if sdp_swapab:
        fields["mbar_stats"] = cute.struct.MemRange[cutlass.Int64, stages]  # slot free
        for name in ("sLSE", "sDelta"):  # 8-byte loads of pairs of rows
            fields[name] = aligned_buf(Float32, tile_m * stages, 16)
    fields.update(sQ=buf(sQ_layout), sdO=buf(sdO_layout), sK=buf(sK_layout), sV=buf(sV_layout))
    if not sdp_swapab:
        fields["sP"] = buf(sPdS_layout)
    fields["sdS"] = buf(sPdS_layout)
    # dQ of one m_block, fp32, in the order of Note [dQ accumulator layout].
    fields["sdQ"] = aligned_buf(Float32, tile_m * head_dim, SMEM_ALIGN_BYTES)
    return make_struct("SharedStorage", fields)


def bwd_tiled_mmas(
    dtype, head_dim: int, tile_n: int, sdp_swapab: bool = False, tile_m: int = 64
) -> tuple:
    """The backward's three tiled MMAs (S / dP, dK / dV, dQ); the postprocess uses the dQ one to
    read the accumulator's layout (Note [dQ accumulator layout]; the same with ``sdp_swapab``).
    tile_n 64: dK / dV split over d (Note [dK dV split]).
    """
    wgs = NUM_CONSUMER_WARPGROUPS
    split_d = tile_n < 64 * wgs
    K = cute.nvgpu.OperandMajorMode.K
    MN = cute.nvgpu.OperandMajorMode.MN
    if sdp_swapab:  # Note [SdP swapAB]
        assert not split_d, "sdp_swapab needs tile_n 128"
        # S^T = K Q^T and dP^T = V dO^T: warpgroup w computes key rows [w * 64, w * 64 + 64).
        mma_sdp = sm90_utils.make_trivial_tiled_mma(
            dtype, dtype, K, K, Float32, (wgs, 1, 1), tiler_mn=(64, tile_m)
        )
        # dV += P^T dO and dK += dS^T Q, P^T / dS^T from registers: the S^T / dP^T accumulators
        # of the same warpgroup, whose rows are the same key columns.
        mma_dkv = sm90_utils.make_trivial_tiled_mma(
            dtype,
            dtype,
            K,
            MN,
            Float32,
            (wgs, 1, 1),
            tiler_mn=(64, head_dim),
            a_source=warpgroup.OperandSource.RMEM,
        )
    else:
        # S = Q K^T and dP = dO V^T: warpgroup w computes columns [w * 64, w * 64 + 64).
        mma_sdp = sm90_utils.make_trivial_tiled_mma(
            dtype, dtype, K, K, Float32, (1, wgs, 1), tiler_mn=(64, tile_n // wgs)
        )
        if split_d:
            # dV = P^T dO and dK = dS^T Q: warpgroup w computes columns [w * d / 2, (w + 1) *
            # d / 2) of the (tile_n, d) result for all tile_n = 64 keys (Note [dK dV split]).
            mma_dkv = sm90_utils.make_trivial_tiled_mma(
                dtype, dtype, MN, MN, Float32, (1, wgs, 1), tiler_mn=(64, head_dim // wgs)
            )
        else:
            # dV = P^T dO and dK = dS^T Q: warpgroup w computes rows [w * 64, w * 64 + 64) of
            # the (tile_n, d) result, i.e. exactly the key columns whose P / dS it produced.
            mma_dkv = sm90_utils.make_trivial_tiled_mma(
                dtype, dtype, MN, MN, Float32, (wgs, 1, 1), tiler_mn=(64, head_dim)
            )
    # dQ = dS K: warpgroup w computes columns [w * d / 2, (w + 1) * d / 2) of (tile_m, d).
    mma_dq = sm90_utils.make_trivial_tiled_mma(
        dtype, dtype, K, MN, Float32, (1, wgs, 1), tiler_mn=(64, head_dim // wgs)
    )
    return mma_sdp, mma_dkv, mma_dq


class FlashMaskBwdSm90:
    """Hopper backward main kernel; one CTA per (n_block, kv head, batch).

    Compile-time configuration only; batch, lengths and head counts are read at run time.
    """

    def __init__(
        self,
        dtype: type[cutlass.Numeric],
        head_dim: int,
        causal: bool,
        n_bounds: int,
        deterministic: bool = False,
        tile_m: int | None = None,
        tile_n: int | None = None,
        num_stages: int | None = None,
        pds_stages: int | None = None,
        early_dv: bool | None = None,
        sdp_swapab: bool | None = None,
        persistent: bool | None = None,
        dkv_store: str | None = None,
        dq_lazy_zero: bool | None = None,
    ):
        """dtype: cutlass.BFloat16 or cutlass.Float16; n_bounds: 0 (no bounds) or 1, 2, 4.
        ``tile_m``, ``tile_n``, ``num_stages``, ``pds_stages``, ``early_dv``, ``sdp_swapab``,
        ``persistent``: tuning knobs (default: the tuning table). With ``sdp_swapab`` (Note
        [SdP swapAB]), ``pds_stages`` counts the dS buffers and ``early_dv`` issues dV += P^T dO
        before dS is computed (else after the dS barrier). ``persistent``: one CTA per SM
        over a queue of work items (Note [Persistent backward]). ``dkv_store``: "tma" or
        "direct" (``DKV_STORE``). ``dq_lazy_zero``: Note [dQ lazy zero]
        (``DQ_LAZY_ZERO``; off with ``deterministic``)."""
        if head_dim not in TILE_CONFIG_BWD_SM90:
            raise ValueError(
                f"head_dim {head_dim} not supported by the sm90 backward "
                f"(supported: {list(TILE_CONFIG_BWD_SM90)})"
            )
        if n_bounds not in (0, 1, 2, 4):
            raise ValueError(f"n_bounds must be 0, 1, 2 or 4, got {n_bounds}")
        cfg_m, cfg_n, cfg_stages = TILE_CONFIG_BWD_SM90[head_dim]
        self.dtype = dtype
        self.head_dim = head_dim
        self.causal = causal
        self.n_bounds = n_bounds
        self.has_lists = n_bounds > 0
        self.deterministic = deterministic
        self.tile_m = tile_m or cfg_m
        self.tile_n = tile_n or cfg_n
        self.num_stages = num_stages or cfg_stages
        self.pds_stages = pds_stages or min(PDS_STAGES, self.num_stages)
        if self.tile_m != 64:
            raise ValueError(f"tile_m must be 64 (one wgmma atom of S), got {self.tile_m}")
        if self.tile_n not in (64, 64 * NUM_CONSUMER_WARPGROUPS):
            raise ValueError(f"tile_n must be 64 or 128, got {self.tile_n}")
        if self.tile_n == 64 and head_dim < 128:
            raise ValueError(
                f"tile_n 64 (dK / dV split over d) needs head_dim >= 128, got {head_dim}: "
                "use tile_n 128"
            )
        if self.pds_stages not in (1, self.num_stages):
            raise ValueError(f"pds_stages must be 1 or num_stages, got {self.pds_stages}")
        # tile_n 64: the consumers split d of dK / dV (Note [dK dV split]); both warpgroups'
        # P and dS feed each dV / dK GEMM, so neither early dV nor S^T / dP^T applies.
        self.split_d = self.tile_n == 64
        if self.split_d and (sdp_swapab or early_dv):
            raise ValueError(
                "tile_n 64 (dK / dV split over d) needs sdp_swapab and early_dv off, got "
                f"sdp_swapab={sdp_swapab}, early_dv={early_dv}"
            )
        self.early_dv = EARLY_DV if early_dv is None else early_dv
        self.sdp_swapab = SDP_SWAPAB[n_bounds] if sdp_swapab is None else bool(sdp_swapab)
        if self.split_d:
            self.early_dv = self.sdp_swapab = False
        self.persistent = PERSISTENT_BWD if persistent is None else bool(persistent)
        self.dkv_store = DKV_STORE if dkv_store is None else dkv_store
        if self.dkv_store not in ("tma", "direct"):
            raise ValueError(f"dkv_store must be 'tma' or 'direct', got {self.dkv_store!r}")
        self.dq_lazy_zero = dq_lazy_zero_on(deterministic, dq_lazy_zero)
        self.num_mma_threads = THREADS_PER_WG * NUM_CONSUMER_WARPGROUPS
        self.num_threads = self.num_mma_threads + THREADS_PER_WG

    # ----------------------------------------------------------------------------------------
    # Host side
    # ----------------------------------------------------------------------------------------
    def _tiled_mmas(self):
        return bwd_tiled_mmas(self.dtype, self.head_dim, self.tile_n, self.sdp_swapab, self.tile_m)

    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,  # (b, s_q, h, d)
        mK: cute.Tensor,  # (b, s_k, h_kv, d)
        mV: cute.Tensor,  # (b, s_k, h_kv, d)
        mdO: cute.Tensor,  # (b, s_q, h, d)
        mLSElog2: cute.Tensor,  # (b, h, s_q_padded) fp32, from the preprocess
        mDelta: cute.Tensor,  # (b, h, s_q_padded) fp32, from the preprocess
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32 (Note [dQ lazy zero])
        mdK: cute.Tensor,  # (b, s_k, h_kv, d)
        mdV: cute.Tensor,  # (b, s_k, h_kv, d)
        softmax_scale: Float32,
        mBounds: cute.Tensor | None,  # (b, hm, s_k, n) int32
        mPartialCnt: cute.Tensor | None,  # (b, hm, n_blocks) int32
        mPartialIdx: cute.Tensor | None,  # (b, hm, n_blocks, m_blocks) int32
        mFullCnt: cute.Tensor | None,  # (b, hm, n_blocks) int32
        mFullIdx: cute.Tensor | None,  # (b, hm, n_blocks, m_blocks) int32
        # (b, h, m_blocks) int32 zeros: deterministic, the semaphores; dq_lazy_zero, the
        # tickets (Note [dQ lazy zero]); None otherwise
        mdQsem: cute.Tensor | None,
        # Deterministic with bounds: the forward lists of the same tiling (Note [Deterministic dQ])
        mFwdPartialCnt: cute.Tensor | None,  # (b, hm, m_blocks) int32
        mFwdPartialIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks) int32
        mFwdFullCnt: cute.Tensor | None,  # (b, hm, m_blocks) int32
        mFwdFullIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks) int32
        mTileCounter: cute.Tensor | None,  # persistent: (1,) int32, zeroed; None otherwise
        max_ctas: Int32,  # persistent: the grid size (SM count); ignored otherwise
        stream: cuda.CUstream,
    ):
        mFwdLists = None
        if const_expr(mFwdPartialCnt is not None):
            mFwdLists = (mFwdPartialCnt, mFwdPartialIdx, mFwdFullCnt, mFwdFullIdx)
        # (b, s, h, d) -> (s, d, h, b): TMA tiles over (s, d).
        mQ, mK, mV, mdO, mdK, mdV = [_select(t, [1, 3, 2, 0]) for t in (mQ, mK, mV, mdO, mdK, mdV)]
        mma_sdp, mma_dkv, mma_dq = self._tiled_mmas()
        d, st = self.head_dim, self.num_stages
        sQ_layout = _smem_layout(self.dtype, self.tile_m, d, st)
        sdO_layout = _smem_layout(self.dtype, self.tile_m, d, st)
        # K is also the MN-major B operand of dQ = dS K, read d / 2 columns per warpgroup.
        sK_layout = _smem_layout(self.dtype, self.tile_n, d, major=d // NUM_CONSUMER_WARPGROUPS)
        sV_layout = _smem_layout(self.dtype, self.tile_n, d)
        # P and dS: (tile_m, tile_n) row-major; read as MN-major A (64 key columns per
        # warpgroup: its own half at tile_n 128, all of them at tile_n 64).
        sPdS_layout = _smem_layout(self.dtype, self.tile_m, self.tile_n, self.pds_stages, major=64)

        self.shared_storage = _shared_storage(
            self.dtype,
            st,
            self.tile_m,
            d,
            (sQ_layout, sdO_layout, sK_layout, sV_layout, sPdS_layout),
            self.sdp_swapab,
            self.persistent,
        )
        smem_bytes = self.shared_storage.size_in_bytes()
        if const_expr(smem_bytes > cutlass.memory.get_smem_capacity_in_bytes("sm_90")):
            raise ValueError(
                f"backward smem {smem_bytes} B over sm_90's capacity (head_dim {d}, "
                f"{st} stages, pds_stages {self.pds_stages}): fewer stages"
            )

        load_op = cpasync.CopyBulkTensorTileG2SOp()
        store_op = cpasync.CopyBulkTensorTileS2GOp()
        q_tile = (self.tile_m, d)
        kv_tile = (self.tile_n, d)
        tma_atom_Q, tma_Q = cpasync.make_tiled_tma_atom(
            load_op, mQ, cute.select(sQ_layout, mode=[0, 1]), q_tile, 1
        )
        tma_atom_dO, tma_dO = cpasync.make_tiled_tma_atom(
            load_op, mdO, cute.select(sdO_layout, mode=[0, 1]), q_tile, 1
        )
        tma_atom_K, tma_K = cpasync.make_tiled_tma_atom(load_op, mK, sK_layout, kv_tile)
        tma_atom_V, tma_V = cpasync.make_tiled_tma_atom(load_op, mV, sV_layout, kv_tile)
        tma_atom_dK, tma_dK = cpasync.make_tiled_tma_atom(store_op, mdK, sK_layout, kv_tile)
        tma_atom_dV, tma_dV = cpasync.make_tiled_tma_atom(store_op, mdV, sV_layout, kv_tile)
        self.bytes_q = cute.size_in_bytes(self.dtype, cute.select(sQ_layout, mode=[0, 1]))
        self.bytes_kv = cute.size_in_bytes(self.dtype, sK_layout) + cute.size_in_bytes(
            self.dtype, sV_layout
        )

        grid = [
            cute.ceil_div(cute.size(mK.shape[0]), self.tile_n),
            cute.size(mK.shape[2]),
            cute.size(mK.shape[3]),
        ]
        if const_expr(self.persistent):
            grid = [cutlass.min(grid[0] * grid[1] * grid[2], max_ctas), 1, 1]
        scale_log2 = softmax_scale * 1.4426950408889634
        if const_expr(self.dkv_store == "direct"):  # plain global tensors, no TMA store
            tma_dK, tma_dV = mdK, mdV
        self.kernel(
            tma_Q,
            tma_K,
            tma_V,
            tma_dO,
            tma_dK,
            tma_dV,
            mLSElog2,
            mDelta,
            mdQaccum,
            softmax_scale,
            scale_log2,
            mBounds,
            mPartialCnt,
            mPartialIdx,
            mFullCnt,
            mFullIdx,
            mdQsem,
            mFwdLists,
            mTileCounter,
            (tma_atom_Q, tma_atom_K, tma_atom_V, tma_atom_dO, tma_atom_dK, tma_atom_dV),
            (sQ_layout, sdO_layout, sK_layout, sV_layout, sPdS_layout),
            mma_sdp,
            mma_dkv,
            mma_dq,
        ).launch(
            grid=grid,
            block=[self.num_threads, 1, 1],
            stream=stream,
            min_blocks_per_mp=1,
        )

    # ----------------------------------------------------------------------------------------
    # Device side
    # ----------------------------------------------------------------------------------------
    @cute.kernel
    def kernel(
        self,
        mQ: cute.Tensor,  # TMA view (s_q, d, h, b)
        mK: cute.Tensor,  # TMA view (s_k, d, h_kv, b)
        mV: cute.Tensor,  # TMA view (s_k, d, h_kv, b)
        mdO: cute.Tensor,  # TMA view (s_q, d, h, b)
        mdK: cute.Tensor,  # TMA view (s_k, d, h_kv, b); dkv_store "direct": the tensor itself
        mdV: cute.Tensor,  # TMA view (s_k, d, h_kv, b); dkv_store "direct": the tensor itself
        mLSElog2: cute.Tensor,  # (b, h, s_q_padded)
        mDelta: cute.Tensor,  # (b, h, s_q_padded)
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d)
        softmax_scale: Float32,
        scale_log2: Float32,
        mBounds: cute.Tensor | None,  # (b, hm, s_k, n)
        mPartialCnt: cute.Tensor | None,  # (b, hm, n_blocks)
        mPartialIdx: cute.Tensor | None,  # (b, hm, n_blocks, m_blocks)
        mFullCnt: cute.Tensor | None,  # (b, hm, n_blocks)
        mFullIdx: cute.Tensor | None,  # (b, hm, n_blocks, m_blocks)
        mdQsem: cute.Tensor | None,  # (b, h, m_blocks)
        mFwdLists: tuple | None,  # forward lists (partial cnt / idx, full cnt / idx)
        mTileCounter: cute.Tensor | None,  # persistent: work items claimed beyond the grid
        tma_atoms: tuple,
        smem_layouts: tuple,
        mma_sdp: cute.TiledMma,
        mma_dkv: cute.TiledMma,
        mma_dq: cute.TiledMma,
    ):
        sQ_layout, sdO_layout, sK_layout, sV_layout, sPdS_layout = smem_layouts
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        if warp_idx == 0:
            for atom in tma_atoms:
                cpasync.prefetch_descriptor(atom)

        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(self.shared_storage)

        n_mma, st = self.num_mma_threads, self.num_stages
        # K and V share one stage (one barrier, both byte counts); Q and dO go stage by stage.
        pipeline_kv = tma_pipeline(storage.mbar_kv.data_ptr(), 1, self.bytes_kv, n_mma)
        # sdp_swapab: the stats warp's 32 threads also arrive on each Q stage's full barrier once
        # they have written its lse / Delta slots (Note [SdP swapAB]).
        stat_arrivals = cute.arch.WARP_SIZE if const_expr(self.sdp_swapab) else 0
        pipeline_q = tma_pipeline(
            storage.mbar_q.data_ptr(), st, self.bytes_q, n_mma, extra_arrivals=stat_arrivals
        )
        pipeline_do = tma_pipeline(storage.mbar_do.data_ptr(), st, self.bytes_q, n_mma)
        if const_expr(self.sdp_swapab):  # noqa: SIM102 (a trace-time if around a run-time one)
            if warp_idx == 0:
                with cute.arch.elect_one():
                    for s in range(st):
                        cute.arch.mbarrier_init(storage.mbar_stats.data_ptr() + s, n_mma)
        queue = None  # persistent: the work-item queue (Note [Persistent backward])
        if const_expr(self.persistent):
            queue_threads = n_mma + cute.arch.WARP_SIZE * (2 if const_expr(self.sdp_swapab) else 1)
            queue = (
                tile_queue(storage.mbar_tile.data_ptr(), queue_threads),
                storage.sTile.get_tensor(cute.make_layout((TILE_INFO_WORDS, TILE_QUEUE_STAGES))),
                mTileCounter,
            )
        cute.arch.mbarrier_init_fence()
        cute.arch.sync_threads()

        sQ = storage.sQ.get_tensor(sQ_layout.outer, swizzle=sQ_layout.inner)
        sdO = storage.sdO.get_tensor(sdO_layout.outer, swizzle=sdO_layout.inner)
        sK = storage.sK.get_tensor(sK_layout.outer, swizzle=sK_layout.inner)
        sV = storage.sV.get_tensor(sV_layout.outer, swizzle=sV_layout.inner)
        sP = None  # no P buffer with sdp_swapab
        if const_expr(not self.sdp_swapab):
            sP = storage.sP.get_tensor(sPdS_layout.outer, swizzle=sPdS_layout.inner)
        sdS = storage.sdS.get_tensor(sPdS_layout.outer, swizzle=sPdS_layout.inner)
        sdQ = storage.sdQ.get_tensor(cute.make_layout(self.tile_m * self.head_dim))
        stats = None  # sdp_swapab: the lse / Delta slots (one per Q stage)
        if const_expr(self.sdp_swapab):
            stat_layout = cute.make_layout((self.tile_m, st))
            stats = (
                storage.sLSE.get_tensor(stat_layout),
                storage.sDelta.get_tensor(stat_layout),
                storage.mbar_stats.data_ptr(),
            )

        # Work items: the CTA's own (n_block, kv head, batch), or persistent its first item, the
        # number of items, the grid size and the queue through which the producer warp hands
        # the items to the consumers, the dQ warp and the stats warp.
        items = cute.arch.block_idx()
        if const_expr(self.persistent):
            n_items = cute.ceil_div(mK.shape[0], self.tile_n) * mK.shape[2] * mK.shape[3]
            items = (cute.arch.block_idx()[0], n_items, cute.arch.grid_dim()[0], queue)
        lists = (mBounds, mPartialCnt, mPartialIdx, mFullCnt, mFullIdx)
        group = mQ.shape[2] // mK.shape[2]

        if warp_idx < 4:
            cute.arch.setmaxregister_decrease(REGS_PRODUCER)
            if warp_idx == 0:
                self.load(
                    (mQ, mK, mV, mdO),
                    (sQ, sK, sV, sdO),
                    tma_atoms,
                    pipeline_kv,
                    pipeline_q,
                    pipeline_do,
                    items,
                    group,
                    lists,
                )
            if const_expr(self.sdp_swapab):  # noqa: SIM102 (a trace-time if around a run-time one)
                if warp_idx == 2:
                    self.stage_stats(
                        (mQ, mK, mLSElog2, mDelta), stats, pipeline_q, items, group, lists
                    )
            if warp_idx == 1:
                self.dq_store(
                    mQ,
                    mK,
                    mdQaccum,
                    sdQ,
                    mdQsem,
                    mFwdLists,
                    items,
                    group,
                    lists,
                )
        else:
            cute.arch.setmaxregister_increase(REGS_CONSUMER)
            tidx, _, _ = cute.arch.thread_idx()
            self.mma(
                (mma_sdp, mma_dkv, mma_dq),
                (mQ, mK, mdK, mdV, mLSElog2, mDelta),
                (sQ, sK, sV, sdO, sP, sdS, sdQ, stats),
                tma_atoms,
                pipeline_kv,
                pipeline_q,
                pipeline_do,
                tidx - THREADS_PER_WG,
                softmax_scale,
                scale_log2,
                items,
                group,
                lists,
            )

    @cute.jit
    def item_coords(self, tile: Int32, mK: cute.Tensor) -> tuple:
        """(n_block, kv head, batch) of work item ``tile`` (Note [Persistent backward]): the
        n_block fastest, then the kv head, then the batch, the order of the one-CTA grid."""
        n_blocks = cute.ceil_div(mK.shape[0], self.tile_n)
        rest = tile // n_blocks
        batch = rest // mK.shape[2]
        return tile - rest * n_blocks, rest - batch * mK.shape[2], batch

    @cute.jit
    def pop_item(self, queue: tuple, state: pipeline.PipelineState) -> tuple:
        """Consumer side of the work-item queue: (item index, n_block, kv head, batch). The
        caller advances ``state`` itself, in its own loop body: the DSL carries a loop's
        pipeline state only if the loop body calls ``advance`` (an advance in here was lost)."""
        return pop_tile(queue[0], state, queue[1], 4)

    @cute.jit
    def block_range(
        self,
        n_block: Int32,
        head: Int32,
        batch: Int32,
        num_heads: Int32,
        seqlen_q: Int32,
        seqlen_k: Int32,
        lists: tuple,
    ) -> tuple:
        """The m_blocks that query ``head`` visits for this n_block.

        Returns ``(m_total, m_partial, m_min, partial_idx, full_idx)``: the sequence
        ``i = 0 .. m_total - 1`` has its first ``m_partial`` entries masked element-wise.
        With lists: partial then unmasked list entries. Without bounds: ``m_min + i``, the
        causal-diagonal m_blocks (and all of a ragged last n_block) first.
        """
        m_total = Int32(0)
        m_partial = Int32(0)
        m_min = Int32(0)
        mPIdx = None
        mFIdx = None
        if const_expr(self.has_lists):
            m_partial, m_total, mPIdx, mFIdx = list_row(lists[1:], batch, head, num_heads, n_block)
        else:
            num_m_blocks = cute.ceil_div(seqlen_q, self.tile_m)
            ragged = (n_block + 1) * self.tile_n > seqlen_k
            m_diag_end = Int32(0)
            if const_expr(self.causal):
                off = seqlen_k - seqlen_q
                # Row i sees column j iff j <= i + off: the first row that sees this n_block.
                first_row = cutlass.max(n_block * self.tile_n - off, 0)
                m_min = cutlass.min(first_row // self.tile_m, num_m_blocks)
                # m_blocks below this one hold a row that misses a column of the n_block.
                last_col = (n_block + 1) * self.tile_n - 1
                m_diag_end = cutlass.min(
                    cute.ceil_div(cutlass.max(last_col - off, 0), self.tile_m), num_m_blocks
                )
            m_total = num_m_blocks - m_min
            m_partial = cutlass.max(m_diag_end - m_min, 0)
            if ragged:
                m_partial = m_total
        return m_total, m_partial, m_min, mPIdx, mFIdx

    @cute.jit
    def m_block_at(self, i: Int32, blocks: tuple) -> Int32:
        """The i-th m_block of a ``block_range`` sequence."""
        _, m_partial, m_min, mPIdx, mFIdx = blocks
        m_block = Int32(0)
        if const_expr(self.has_lists):
            if i < m_partial:
                m_block = mPIdx[i]
            else:
                m_block = mFIdx[i - m_partial]
        else:
            m_block = m_min + i
        return m_block

    # ----------------------------------------------------------------------------------------
    # Producer warp
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def load(
        self,
        gmem: tuple,  # TMA views of Q, K, V, dO
        smem: tuple,  # sQ (tile_m, d, st), sK (tile_n, d), sV (tile_n, d), sdO (tile_m, d, st)
        tma_atoms: tuple,
        pipeline_kv: pipeline.PipelineAsync,
        pipeline_q: pipeline.PipelineAsync,
        pipeline_do: pipeline.PipelineAsync,
        items: tuple,  # (n_block, kv head, batch), or persistent: (first, count, grid, queue)
        group: Int32,
        lists: tuple,
    ):
        """Producer warp: K and V of each work item, then Q and dO of its m_blocks; persistent:
        also claims the items and hands them out (Note [Persistent backward])."""
        pipes = (pipeline_kv, pipeline_q, pipeline_do)
        kv_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, 1)
        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.num_stages)
        if const_expr(self.persistent):
            tile, n_items, grid_x, queue = items
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Producer, TILE_QUEUE_STAGES
            )
            zeros = (Int32(0),) * (TILE_INFO_WORDS - 4)
            while tile < n_items:
                coords = self.item_coords(tile, gmem[1])
                push_tile(queue[0], tile_state, queue[1], (tile, *coords, *zeros))
                tile_state.advance()
                # Claimed now, used after this item's loads: the atomic's latency is hidden.
                next_tile = claim_tile(queue[2], grid_x)
                kv_state, q_state = self.load_item(
                    gmem, smem, tma_atoms, pipes, coords, kv_state, q_state, group, lists
                )
                tile = next_tile
            # Past the end: the other roles stop.
            push_tile(queue[0], tile_state, queue[1], (tile, Int32(0), Int32(0), Int32(0), *zeros))
        else:
            self.load_item(gmem, smem, tma_atoms, pipes, items, kv_state, q_state, group, lists)

    @cute.jit
    def load_item(
        self,
        gmem: tuple,
        smem: tuple,
        tma_atoms: tuple,
        pipes: tuple,  # pipeline_kv, pipeline_q, pipeline_do
        coords: tuple,  # n_block, kv head, batch
        kv_state: pipeline.PipelineState,
        q_state: pipeline.PipelineState,
        group: Int32,
        lists: tuple,
    ) -> tuple:
        """One work item's loads. Persistent: K and V after the item's first Q / dO (the
        consumers free K and V only after the last item's epilogue, Q / dO stages earlier)."""
        mQ, mK, mV, mdO = gmem
        sQ, sK, sV, sdO = smem
        pipeline_kv, pipeline_q, pipeline_do = pipes
        n_block, head_kv, batch = coords
        tma_atom_Q, tma_atom_K, tma_atom_V, tma_atom_dO = tma_atoms[:4]
        d = self.head_dim
        one = cute.make_layout(1)
        gK = cute.local_tile(mK[None, None, head_kv, batch], (self.tile_n, d), (n_block, 0))
        gV = cute.local_tile(mV[None, None, head_kv, batch], (self.tile_n, d), (n_block, 0))
        tKsK, tKgK = cpasync.tma_partition(
            tma_atom_K, 0, one, cute.group_modes(sK, 0, 2), cute.group_modes(gK, 0, 2)
        )
        tVsV, tVgV = cpasync.tma_partition(
            tma_atom_V, 0, one, cute.group_modes(sV, 0, 2), cute.group_modes(gV, 0, 2)
        )
        kv_copies = ((tma_atom_K, tKgK, tKsK), (tma_atom_V, tVgV, tVsV))
        kv_pending = Int32(1)
        if const_expr(not self.persistent):
            self.load_kv(pipeline_kv, kv_state, kv_copies)
        for g in cutlass.range(group, unroll=1):
            head = head_kv * group + g
            blocks = self.block_range(
                n_block, head, batch, mQ.shape[2], mQ.shape[0], mK.shape[0], lists
            )
            gQ = cute.local_tile(mQ[None, None, head, batch], (self.tile_m, d), (None, 0))
            gdO = cute.local_tile(mdO[None, None, head, batch], (self.tile_m, d), (None, 0))
            tQsQ, tQgQ = cpasync.tma_partition(
                tma_atom_Q, 0, one, cute.group_modes(sQ, 0, 2), cute.group_modes(gQ, 0, 2)
            )
            tdOsdO, tdOgdO = cpasync.tma_partition(
                tma_atom_dO, 0, one, cute.group_modes(sdO, 0, 2), cute.group_modes(gdO, 0, 2)
            )
            for i in cutlass.range(blocks[0], unroll=1):
                m_block = self.m_block_at(i, blocks)
                tma_load(pipeline_q, q_state, tma_atom_Q, tQgQ, tQsQ, m_block)
                tma_load(pipeline_do, q_state, tma_atom_dO, tdOgdO, tdOsdO, m_block)
                q_state.advance()
                if const_expr(self.persistent):  # noqa: SIM102 (trace-time if around run-time)
                    if kv_pending != 0:
                        self.load_kv(pipeline_kv, kv_state, kv_copies)
                        kv_pending = Int32(0)
        if const_expr(self.persistent):  # noqa: SIM102 (trace-time if around run-time)
            if kv_pending != 0:  # an item without m_blocks: its dK / dV are zeros
                self.load_kv(pipeline_kv, kv_state, kv_copies)
        kv_state.advance()
        return kv_state, q_state

    @cute.jit
    def load_kv(
        self, pipeline_kv: pipeline.PipelineAsync, kv_state: pipeline.PipelineState, copies: tuple
    ) -> None:
        """K and V of one work item into sK / sV, on the one K / V mbarrier."""
        pipeline_kv.producer_acquire(kv_state)
        bar = pipeline_kv.producer_get_barrier(kv_state)
        for atom, src, dst in copies:
            cute.copy(atom, src, dst, tma_bar_ptr=bar)

    # ----------------------------------------------------------------------------------------
    # dQ warp
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def dq_store(
        self,
        mQ: cute.Tensor,  # TMA view (s_q, d, h, b): shapes only
        mK: cute.Tensor,  # TMA view (s_k, d, h_kv, b): shapes only
        mdQaccum: cute.Tensor,  # (b, h, s_q_padded, d) fp32
        sdQ: cute.Tensor,  # (tile_m * d,) fp32 staging buffer
        mdQsem: cute.Tensor | None,  # (b, h, m_blocks) int32
        mFwdLists: tuple | None,
        items: tuple,  # (n_block, kv head, batch), or persistent: (first, count, grid, queue)
        group: Int32,
        lists: tuple,
    ):
        """Adds each visited m_block's dQ (staged in smem by the consumers) to the fp32
        accumulator in global memory with bulk reductions, one per consumer warpgroup; in
        deterministic mode in a fixed order across n_blocks (Note [Deterministic dQ])."""
        args = (mQ, mK, mdQaccum, sdQ, mdQsem, mFwdLists)
        if const_expr(self.persistent):
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Consumer, TILE_QUEUE_STAGES
            )
            tile, n_block, head_kv, batch = self.pop_item(items[3], tile_state)
            tile_state.advance()
            while tile < items[1]:
                self.dq_store_item(*args, (n_block, head_kv, batch), group, lists)
                tile, n_block, head_kv, batch = self.pop_item(items[3], tile_state)
                tile_state.advance()
        else:
            self.dq_store_item(*args, items, group, lists)
        cute.arch.cp_async_bulk_wait_group(0, read=True)

    @cute.jit
    def dq_store_item(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mdQaccum: cute.Tensor,
        sdQ: cute.Tensor,
        mdQsem: cute.Tensor | None,
        mFwdLists: tuple | None,
        coords: tuple,  # n_block, kv head, batch
        group: Int32,
        lists: tuple,
    ):
        """The dQ warp's work for one work item (all heads of the kv head's group)."""
        n_block, head_kv, batch = coords
        lane = cute.arch.lane_idx()
        wgs = NUM_CONSUMER_WARPGROUPS
        chunk = self.tile_m * self.head_dim // wgs  # fp32 elements per warpgroup
        n_bar = THREADS_PER_WG + cute.arch.WARP_SIZE
        for g in cutlass.range(group, unroll=1):
            head = head_kv * group + g
            blocks = self.block_range(
                n_block, head, batch, mQ.shape[2], mQ.shape[0], mK.shape[0], lists
            )
            mdQcur = mdQaccum[batch, head, None, None]
            mTickets = None
            # dq_lazy_zero (Note [dQ lazy zero]): lane 0's ticket of the next m_block (taken an
            # iteration early), and whether this warp zeroed the current / next m_block.
            ticket_next = Int32(1)
            mine_cur = Int32(0)
            mine_next = Int32(0)
            if const_expr(self.dq_lazy_zero):
                mTickets = mdQsem[batch, head, None]
                if blocks[0] > 0:
                    m_first = self.m_block_at(0, blocks)
                    t_first = self.dq_take_ticket(mTickets, m_first)
                    if blocks[0] > 1:
                        ticket_next = self.dq_take_ticket(mTickets, self.m_block_at(1, blocks))
                    mine_cur = self.dq_zero_tile(mdQcur, m_first, t_first)
                    self.dq_release(mTickets, m_first, mine_cur)
            for i in cutlass.range(blocks[0], unroll=1):
                m_block = self.m_block_at(i, blocks)
                for w in cutlass.range_constexpr(wgs):
                    if const_expr(not self.deterministic):
                        # Warpgroup w's buffer of the last m_block has been read.
                        cute.arch.cp_async_bulk_wait_group(wgs - 1 - w, read=True)
                    cute.arch.barrier_arrive(
                        barrier_id=int(NamedBarrierBwd.dQEmpty) + w, number_of_threads=n_bar
                    )
                sem_ptr = None
                if const_expr(self.deterministic):
                    sem_ptr = mdQsem[batch, head, None].iterator + m_block
                    rank = self.dq_rank(m_block, n_block, head, batch, mQ.shape[2], mFwdLists)
                    if lane == 0:
                        seen = ld_acquire_gpu(sem_ptr)
                        while seen != rank:
                            seen = ld_acquire_gpu(sem_ptr)
                m_next = Int32(0)
                if const_expr(self.dq_lazy_zero):
                    # Zero the next m_block's tile if its ticket was 0 (while this m_block's dQ
                    # is computed); wait until this m_block's zeros are released.
                    mine_next = Int32(0)
                    if i + 1 < blocks[0]:
                        m_next = self.m_block_at(i + 1, blocks)
                        mine_next = self.dq_zero_tile(mdQcur, m_next, ticket_next)
                    self.dq_wait_zeroed(mTickets, m_block, mine_cur)
                gdQ = cute.local_tile(mdQcur, (self.tile_m, self.head_dim), (m_block, 0))
                for w in cutlass.range_constexpr(wgs):
                    cute.arch.barrier(
                        barrier_id=int(NamedBarrierBwd.dQFull) + w, number_of_threads=n_bar
                    )
                    if lane == 0:
                        bulk_reduce_add_f32(
                            sdQ.iterator + w * chunk, gdQ.iterator + w * chunk, chunk * 4
                        )
                    cute.arch.cp_async_bulk_commit_group()
                if const_expr(self.deterministic):
                    # The additions are complete (not only read) before the next n_block's.
                    cute.arch.cp_async_bulk_wait_group(0, read=False)
                    if lane == 0:
                        red_release_add_gpu(sem_ptr, 1)
                if const_expr(self.dq_lazy_zero):
                    # Release the next m_block's zeros (stored a whole dQ wait ago), and take
                    # the ticket of the one after it.
                    self.dq_release(mTickets, m_next, mine_next)
                    mine_cur = mine_next
                    if i + 2 < blocks[0]:
                        ticket_next = self.dq_take_ticket(mTickets, self.m_block_at(i + 2, blocks))

    @cute.jit
    def dq_take_ticket(self, mTickets: cute.Tensor, m_block: Int32) -> Int32:
        """Lane 0 of the dQ warp: ``m_block``'s ticket (Note [dQ lazy zero]; a relaxed
        ``atom.add``, so its latency stalls nothing until the value is used). Other lanes: 1."""
        old = Int32(1)
        if cute.arch.lane_idx() == 0:
            old = atom_add_relaxed_gpu(mTickets.iterator + m_block, 1)
        return old

    @cute.jit
    def dq_zero_tile(self, mdQcur: cute.Tensor, m_block: Int32, ticket: Int32) -> Int32:
        """Whole dQ warp, with lane 0's ``ticket`` (Note [dQ lazy zero]): ticket 0 zeroes the
        m_block's accumulator tile (coalesced 16-byte stores, then a proxy fence per lane) and
        returns 1 (a release to do); any other ticket returns 0."""
        lane = cute.arch.lane_idx()
        mine = Int32(0)
        if cute.arch.shuffle_sync(ticket, 0) == 0:
            mine = Int32(1)
            n = self.tile_m * self.head_dim
            tile = cute.local_tile(mdQcur, (self.tile_m, self.head_dim), (m_block, 0))
            ptr = cute.make_ptr(
                Float32,
                (tile.iterator + lane * 4).toint(),
                cute.AddressSpace.gmem,
                assumed_align=16,
            )
            dst = cute.make_tensor(ptr, cute.make_layout((4, n // 128), stride=(1, 128)))
            zeros = cute.make_rmem_tensor(4, Float32)
            zeros.fill(0.0)
            for j in cutlass.range(n // 128, unroll=8):
                cute.autovec_copy(zeros, dst[None, j])
            # The bulk reductions (async proxy) that follow see these generic stores.
            fence_proxy_async_global()
        return mine

    @cute.jit
    def dq_release(self, mTickets: cute.Tensor, m_block: Int32, mine: Int32) -> None:
        """Whole dQ warp: if this warp zeroed ``m_block`` (``mine``), set its ticket's flag
        (release) once every lane's stores and fences are done (Note [dQ lazy zero])."""
        if mine != 0:
            cute.arch.sync_warp()
            if cute.arch.lane_idx() == 0:
                red_release_add_gpu(mTickets.iterator + m_block, DQ_STORED_FLAG)

    @cute.jit
    def dq_wait_zeroed(self, mTickets: cute.Tensor, m_block: Int32, mine: Int32) -> None:
        """Lane 0 of the dQ warp, before adding ``m_block``'s dQ (Note [dQ lazy zero]): unless
        this warp zeroed the tile itself, wait (acquire) until its first visitor has released
        the zeros, then fence the async proxy for the bulk reductions."""
        if cute.arch.lane_idx() == 0:  # noqa: SIM102 (run-time ifs: no short-circuit `and`)
            if mine == 0:
                ptr = mTickets.iterator + m_block
                seen = ld_acquire_gpu(ptr)
                while (seen & DQ_STORED_FLAG) == 0:
                    seen = ld_acquire_gpu(ptr)
                fence_proxy_async_global()

    @cute.jit
    def dq_rank(
        self,
        m_block: Int32,
        n_block: Int32,
        head: Int32,
        batch: Int32,
        num_heads: Int32,
        mFwdLists: tuple | None,
    ) -> Int32:
        """How many n_blocks below ``n_block`` visit ``m_block`` (warp-collective): the number of
        dQ additions to this m_block that come before this CTA's in deterministic mode."""
        rank = n_block  # no bounds: the visitors of an m_block are n_blocks 0, 1, ..., n_max
        if const_expr(self.has_lists):
            mPCnt, mPIdx, mFCnt, mFIdx = mFwdLists
            head_m = head // (num_heads // mPCnt.shape[1])
            lane = cute.arch.lane_idx()
            below = Int32(0)
            for mCnt, mIdx in ((mPCnt, mPIdx), (mFCnt, mFIdx)):
                cnt = mCnt[batch, head_m, m_block]
                row = mIdx[batch, head_m, m_block, None]
                for c in cutlass.range(cute.ceil_div(cnt, cute.arch.WARP_SIZE), unroll=1):
                    j = c * cute.arch.WARP_SIZE + lane
                    if j < cnt:  # noqa: SIM102 (no short-circuit in the DSL: row[j] guarded)
                        if row[j] < n_block:
                            below = below + 1
            rank = cute.arch.warp_reduction_sum(below)
        return rank

    # ----------------------------------------------------------------------------------------
    # Consumer warpgroups
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def mma(
        self,
        mmas: tuple,  # tiled MMAs: S / dP, dK / dV, dQ
        gmem: tuple,  # mQ, mK (TMA views, for shapes), mdK, mdV (TMA views), lse, Delta
        smem: tuple,  # sQ, sK, sV, sdO, sP (None: sdp_swapab), sdS, sdQ, stats (sdp_swapab)
        tma_atoms: tuple,
        pipeline_kv: pipeline.PipelineAsync,
        pipeline_q: pipeline.PipelineAsync,
        pipeline_do: pipeline.PipelineAsync,
        tidx: Int32,  # 0 .. num_mma_threads - 1
        softmax_scale: Float32,
        scale_log2: Float32,
        items: tuple,  # (n_block, kv head, batch), or persistent: (first, count, grid, queue)
        group: Int32,
        lists: tuple,
    ):
        mma_sdp, mma_dkv, mma_dq = mmas
        mQ, mK, mdK, mdV, mLSElog2, mDelta = gmem
        sQ, sK, sV, sdO, sP, sdS, sdQ, stats = smem
        d = self.head_dim
        seqlen_q = mQ.shape[0]
        seqlen_k = mK.shape[0]
        wg_idx = cute.arch.make_warp_uniform(tidx // THREADS_PER_WG)
        wg_sdp = mma_sdp.get_slice(wg_idx * THREADS_PER_WG)
        wg_dkv = mma_dkv.get_slice(wg_idx * THREADS_PER_WG)
        wg_dq = mma_dq.get_slice(wg_idx * THREADS_PER_WG)
        thr_sdp = mma_sdp.get_slice(tidx)

        swap_ops = None
        if const_expr(self.sdp_swapab):
            swap_ops = self.swapab_operands(
                mmas, (wg_sdp, wg_dkv, wg_dq, thr_sdp), (sQ, sK, sV, sdO, sdS), tidx
            )
            acc_shape_S, acc_shape_dQ, acc_dK, acc_dV, tScS_mn = swap_ops[1:6]
        else:
            # Operand fragments (smem descriptors).
            tSrQ = wg_sdp.make_fragment_A(wg_sdp.partition_A(sQ))
            tSrK = wg_sdp.make_fragment_B(wg_sdp.partition_B(sK))
            tdPrdO = wg_sdp.make_fragment_A(wg_sdp.partition_A(sdO))
            tdPrV = wg_sdp.make_fragment_B(wg_sdp.partition_B(sV))
            tdVrPt = wg_dkv.make_fragment_A(wg_dkv.partition_A(_transpose_view(sP)))
            tdVrdOt = wg_dkv.make_fragment_B(wg_dkv.partition_B(_transpose_view(sdO)))
            tdKrdSt = wg_dkv.make_fragment_A(wg_dkv.partition_A(_transpose_view(sdS)))
            tdKrQt = wg_dkv.make_fragment_B(wg_dkv.partition_B(_transpose_view(sQ)))
            tdQrdS, tdQrKt, acc_shape_dQ, acc_dK, acc_dV = self.dq_operands_dkv_accs(
                wg_dq, wg_dkv, sdS, sK
            )

            acc_shape_S = wg_sdp.partition_shape_C((self.tile_m, self.tile_n))
            tScS_mn = acc_to_mn(thr_sdp.partition_C(cute.make_identity_tensor((64, self.tile_n))))

            # P / dS registers -> smem (stmatrix, the layout of S's accumulator).
            st_atom = cute.make_copy_atom(
                warp.StMatrix8x8x16bOp(transpose=False, num_matrices=4), self.dtype
            )
            thr_st_PdS = cute.make_tiled_copy_C(st_atom, mma_sdp).get_slice(tidx)
            tPsP = thr_st_PdS.partition_D(sP)  # (..., pds stage)
            tdSsdS = thr_st_PdS.partition_D(sdS)

        # This thread's slice of the dQ staging buffer (Note [dQ accumulator layout]).
        n_dq = cute.size(acc_shape_dQ)
        t_wg = tidx % THREADS_PER_WG
        tdQsdQ = cute.make_tensor(
            sdQ.iterator + wg_idx * (self.tile_m * d // NUM_CONSUMER_WARPGROUPS) + t_wg * 4,
            cute.make_layout((4, n_dq // 4), stride=(1, 4 * THREADS_PER_WG)),
        )

        kv_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, 1)
        if const_expr(not self.persistent):
            pipeline_kv.consumer_wait(kv_state)

        if const_expr(self.sdp_swapab):
            ctx = (
                swap_ops,
                (tdQsdQ, wg_idx),
                stats,
                pipeline_q,
                pipeline_do,
                scale_log2,
                seqlen_q,
                seqlen_k,
            )
        else:
            ctx = (
                (tSrQ, tSrK, tdPrdO, tdPrV, tdVrPt, tdVrdOt, tdKrdSt, tdKrQt, tdQrdS, tdQrKt),
                (mma_sdp, mma_dkv, mma_dq),
                acc_dK,
                acc_dV,
                acc_shape_S,
                acc_shape_dQ,
                tScS_mn,
                st_atom,
                thr_st_PdS,
                tPsP,
                tdSsdS,
                (tdQsdQ, wg_idx),
                pipeline_q,
                pipeline_do,
                scale_log2,
                seqlen_q,
                seqlen_k,
            )

        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, self.num_stages)
        env = (
            ctx,
            (acc_dK, acc_dV),
            (mQ, mdK, mdV, mLSElog2, mDelta),
            (sK, sV),
            tma_atoms,
            mma_dkv,
            tidx,
            softmax_scale,
            tScS_mn,
            swap_ops,
            (seqlen_q, seqlen_k),
        )
        if const_expr(self.persistent):
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Consumer, TILE_QUEUE_STAGES
            )
            # Only the item index stays live across the item (its coordinates are recomputed
            # for the epilogue: fewer registers next to dK / dV).
            tile = self.pop_item(items[3], tile_state)[0]
            tile_state.advance()
            while tile < items[1]:
                pipeline_kv.consumer_wait(kv_state)
                acc_dK.fill(0.0)
                acc_dV.fill(0.0)
                kv = (pipeline_kv, kv_state)  # released in mma_item
                q_state = self.mma_item(tile, q_state, env, group, lists, kv)
                kv_state.advance()
                tile = self.pop_item(items[3], tile_state)[0]
                tile_state.advance()
        else:
            self.mma_item(items, q_state, env, group, lists)

    @cute.jit
    def mma_item(
        self,
        item,  # (n_block, kv head, batch), or persistent: the item index (Int32)
        q_state: pipeline.PipelineState,
        env: tuple,  # from mma
        group: Int32,
        lists: tuple,
        kv: tuple | None = None,  # persistent: (pipeline_kv, kv_state) to release
    ) -> pipeline.PipelineState:
        """One work item: every m_block of every query head of the kv head's group, then the
        dK / dV epilogue. Persistent: sK / sV released for the next item's K / V once they
        are no longer read (after the last GEMMs with the direct store, else after the
        epilogue's TMA store has read them: its storing warp waited for that)."""
        ctx, (acc_dK, acc_dV), gmem, (sK, sV), tma_atoms, mma_dkv, tidx = env[:7]
        softmax_scale, tScS_mn, swap_ops, (seqlen_q, seqlen_k) = env[7:]
        mQ, mdK, mdV, mLSElog2, mDelta = gmem
        coords = item
        if const_expr(self.persistent):
            coords = self.item_coords(item, mdK)
        n_block, head_kv, batch = coords
        for g in cutlass.range(group, unroll=1):
            head = head_kv * group + g
            blocks = self.block_range(n_block, head, batch, mQ.shape[2], seqlen_q, seqlen_k, lists)
            mBoundsCur = None
            if const_expr(self.has_lists):
                mBounds = lists[0]
                head_b = head // (mQ.shape[2] // mBounds.shape[1])
                mBoundsCur = mBounds[batch, head_b, None, None]
            if const_expr(self.sdp_swapab):
                # The bounds of this thread's key rows: read once per (n_block, head).
                words = None
                if const_expr(self.has_lists):
                    words = key_bound_words(
                        mBoundsCur,
                        n_block * self.tile_n + tScS_mn[0, 0][0],
                        seqlen_k,
                        swap_ops[6][0],
                        self.n_bounds,
                    )
                per_head = (words, n_block)
                for i in cutlass.range(blocks[1], unroll=1):
                    q_state = self.mma_one_m_block_swapab(
                        q_state, self.m_block_at(i, blocks), True, ctx, per_head
                    )
                for i in cutlass.range(blocks[1], blocks[0], unroll=1):
                    q_state = self.mma_one_m_block_swapab(
                        q_state, self.m_block_at(i, blocks), False, ctx, per_head
                    )
            else:
                mLSEcur = mLSElog2[batch, head, None]
                mDeltaCur = mDelta[batch, head, None]
                per_head = (mBoundsCur, mLSEcur, mDeltaCur, n_block)
                for i in cutlass.range(blocks[1], unroll=1):
                    q_state = self.mma_one_m_block(
                        q_state, self.m_block_at(i, blocks), True, ctx, per_head
                    )
                for i in cutlass.range(blocks[1], blocks[0], unroll=1):
                    q_state = self.mma_one_m_block(
                        q_state, self.m_block_at(i, blocks), False, ctx, per_head
                    )

        if const_expr(self.persistent and self.dkv_store == "direct"):
            kv[0].consumer_release(kv[1])
        acc_dK.store(acc_dK.load() * softmax_scale)
        self.epilogue(
            (acc_dK, acc_dV),
            (mdK, mdV),
            (sK, sV),
            (tma_atoms[4], tma_atoms[5]),
            mma_dkv,
            # Persistent: the epilogue's smem addresses computed here, once per item, not
            # hoisted out of the item loop (they spilled there with n = 4).
            thread_idx_x_here() - THREADS_PER_WG if const_expr(self.persistent) else tidx,
            self.item_coords(item, mdK) if const_expr(self.persistent) else coords,
        )
        if const_expr(self.persistent and self.dkv_store == "tma"):
            kv[0].consumer_release(kv[1])
        return q_state

    @cute.jit
    def mma_one_m_block(
        self,
        q_state: pipeline.PipelineState,
        m_block: Int32,
        masked: cutlass.Constexpr[bool],
        ctx: tuple,
        per_head: tuple,
    ) -> pipeline.PipelineState:
        """All five GEMMs of one (m_block, n_block) tile; dQ added to global memory."""
        frags, mmas, acc_dK, acc_dV, acc_shape_S, acc_shape_dQ, tScS_mn = ctx[:7]
        st_atom, thr_st_PdS, tPsP, tdSsdS, dq_stage, pipeline_q, pipeline_do = ctx[7:14]
        scale_log2, seqlen_q, seqlen_k = ctx[14:]
        tSrQ, tSrK, tdPrdO, tdPrV, tdVrPt, tdVrdOt, tdKrdSt, tdKrQt, tdQrdS, tdQrKt = frags
        mma_sdp, mma_dkv, mma_dq = mmas
        mBoundsCur, mLSEcur, mDeltaCur, n_block = per_head
        tdQsdQ, wg_idx = dq_stage
        num_rows = cute.size(tScS_mn, mode=[0])
        stage = q_state.index

        # Work that needs no scores goes first: mask bits and the rows' statistics.
        bits = None
        if const_expr(masked):
            bits = mask_bits(
                tScS_mn,
                mBoundsCur,
                m_block,
                n_block,
                seqlen_q,
                seqlen_k,
                self.tile_m,
                self.tile_n,
                self.causal,
                self.n_bounds,
            )
        lse = cute.make_rmem_tensor(num_rows, Float32)
        delta = cute.make_rmem_tensor(num_rows, Float32)
        for r in cutlass.range_constexpr(num_rows):
            row = m_block * self.tile_m + tScS_mn[r, 0][0]
            lse[r] = mLSEcur[row]
            delta[r] = mDeltaCur[row]

        pipeline_q.consumer_wait(q_state)
        acc_S = cute.make_rmem_tensor(acc_shape_S, Float32)
        _gemm(mma_sdp, acc_S, tSrQ[None, None, None, stage], tSrK, True, -1)
        pipeline_do.consumer_wait(q_state)
        acc_dP = cute.make_rmem_tensor(acc_shape_S, Float32)
        _gemm(mma_sdp, acc_dP, tdPrdO[None, None, None, stage], tdPrV, True, 1)

        # P = exp2(S * scale_log2 - lse_log2); masked scores are -inf, so P == 0 there.
        if const_expr(masked):
            apply_mask_bits(acc_S, bits)
        s_mn = acc_to_mn(acc_S)
        for r in cutlass.range_constexpr(num_rows):
            s_mn[r, None].store(
                cute.math.exp2(s_mn[r, None].load() * scale_log2 - lse[r], fastmath=True)
            )
        rP = cute.make_rmem_tensor(acc_shape_S, self.dtype)
        rP.store(acc_S.load().to(self.dtype))
        ps = stage if const_expr(self.pds_stages > 1) else 0

        def issue_dv():  # dV += P^T dO, left in flight
            dv_args = (tdVrPt[None, None, None, ps], tdVrdOt[None, None, None, stage])
            _gemm(mma_dkv, acc_dV, *dv_args, False, -1)

        if const_expr(self.early_dv):
            # This warpgroup's half of sP is read only by its own dV GEMM, whose last use was
            # waited for at the end of the last m_block.
            cute.copy(st_atom, thr_st_PdS.retile(rP), tPsP[None, None, None, ps])
            cute.arch.fence_view_async_shared()
            cute.arch.barrier(
                barrier_id=int(NamedBarrierBwd.P) + wg_idx, number_of_threads=THREADS_PER_WG
            )
            issue_dv()

        # dS = P * (dP - Delta)
        warpgroup.wait_group(1 if const_expr(self.early_dv) else 0)
        dp_mn = acc_to_mn(acc_dP)
        for r in cutlass.range_constexpr(num_rows):
            dp_mn[r, None].store(s_mn[r, None].load() * (dp_mn[r, None].load() - delta[r]))
        rdS = cute.make_rmem_tensor(acc_shape_S, self.dtype)
        rdS.store(acc_dP.load().to(self.dtype))

        # One buffer: last m_block's GEMMs (both warpgroups) must be done with sP / sdS before
        # they are overwritten. Two (indexed by the Q stage): the GEMMs that read this stage's
        # buffer last, two m_blocks ago, were waited for before the last m_block's barrier.
        if const_expr(self.pds_stages == 1):
            self.pds_barrier()
        if const_expr(not self.early_dv):
            cute.copy(st_atom, thr_st_PdS.retile(rP), tPsP[None, None, None, ps])
        cute.copy(st_atom, thr_st_PdS.retile(rdS), tdSsdS[None, None, None, ps])
        cute.arch.fence_view_async_shared()
        self.pds_barrier()

        # dV += P^T dO (unless issued early), dQ = dS K, dK += dS^T Q
        if const_expr(not self.early_dv):
            issue_dv()
        acc_dQ = cute.make_rmem_tensor(acc_shape_dQ, Float32)
        _gemm(mma_dq, acc_dQ, tdQrdS[None, None, None, ps], tdQrKt, True, -1)
        _gemm(
            mma_dkv,
            acc_dK,
            tdKrdSt[None, None, None, ps],
            tdKrQt[None, None, None, stage],
            False,
            -1,
        )
        return self.finish_m_block(q_state, acc_dQ, (tdQsdQ, wg_idx), pipeline_q, pipeline_do)

    # ----------------------------------------------------------------------------------------
    # Consumer warpgroups, sdp_swapab (Note [SdP swapAB])
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def swapab_operands(
        self,
        mmas: tuple,  # tiled MMAs: S^T / dP^T, dK / dV (A from registers), dQ
        slices: tuple,  # warpgroup slices of the three, this thread's slice of S^T / dP^T
        smem: tuple,  # sQ, sK, sV, sdO, sdS
        tidx: Int32,
    ) -> tuple:
        """Fragments, accumulators and copies of the swapped consumer, as ``mma`` hands them
        to :meth:`mma_one_m_block_swapab`."""
        mma_sdp = mmas[0]
        wg_sdp, wg_dkv, wg_dq, thr_sdp = slices
        sQ, sK, sV, sdO, sdS = smem
        # S^T = K Q^T, dP^T = V dO^T: A is this warpgroup's 64 rows of K / V, B all of Q / dO.
        tSrK = wg_sdp.make_fragment_A(wg_sdp.partition_A(sK))
        tSrQ = wg_sdp.make_fragment_B(wg_sdp.partition_B(sQ))
        tdPrV = wg_sdp.make_fragment_A(wg_sdp.partition_A(sV))
        tdPrdO = wg_sdp.make_fragment_B(wg_sdp.partition_B(sdO))
        # dV += P^T dO, dK += dS^T Q: A from registers, B (dO^T, Q^T) MN-major from smem.
        tdVrdOt = wg_dkv.make_fragment_B(wg_dkv.partition_B(_transpose_view(sdO)))
        tdKrQt = wg_dkv.make_fragment_B(wg_dkv.partition_B(_transpose_view(sQ)))
        # dQ = dS K as in the default kernel (dS with the query rows as M, from smem).
        tdQrdS, tdQrKt, acc_shape_dQ, acc_dK, acc_dV = self.dq_operands_dkv_accs(
            wg_dq, wg_dkv, sdS, sK
        )

        acc_shape_S = wg_sdp.partition_shape_C((self.tile_n, self.tile_m))
        # (key, query) coordinates of this thread's accumulator rows and columns
        cS = cute.make_identity_tensor((self.tile_n, self.tile_m))
        tScS_mn = acc_to_mn(thr_sdp.partition_C(cS))
        # Static offsets: thread 0's (compile-time), every thread's differ by one shift.
        tScS0_mn = acc_to_mn(mma_sdp.get_slice(0).partition_C(cS))
        self.key_offs = [tScS0_mn[r, 0][0] for r in range(cute.size(tScS0_mn, mode=[0]))]
        self.query_offs = [tScS0_mn[0, c][1] for c in range(cute.size(tScS0_mn, mode=[1]))]
        assert self.query_offs == [8 * (c // 2) + c % 2 for c in range(len(self.query_offs))]

        # dS^T registers -> sdS as (query, key) rows: stmatrix with transpose.
        st_atom = cute.make_copy_atom(
            warp.StMatrix8x8x16bOp(transpose=True, num_matrices=4), self.dtype
        )
        thr_st_dS = cute.make_tiled_copy_C(st_atom, mma_sdp).get_slice(tidx)
        tdSsdS = thr_st_dS.partition_D(_transpose_view(sdS))  # (..., pds stage)
        frags = (tSrK, tSrQ, tdPrV, tdPrdO, tdVrdOt, tdKrQt, tdQrdS, tdQrKt)
        return (
            frags,
            acc_shape_S,
            acc_shape_dQ,
            acc_dK,
            acc_dV,
            tScS_mn,
            (self.key_offs, self.query_offs),
            (st_atom, thr_st_dS, tdSsdS),
            mmas,
        )

    def dq_operands_dkv_accs(self, wg_dq, wg_dkv, sdS: cute.Tensor, sK: cute.Tensor) -> tuple:
        """Both layouts: the dQ = dS K operands (dS with the query rows as M, K^T MN-major, both
        from smem), the dQ accumulator's shape, and the zeroed dK / dV accumulators."""
        d = self.head_dim
        tdQrdS = wg_dq.make_fragment_A(wg_dq.partition_A(sdS))
        tdQrKt = wg_dq.make_fragment_B(wg_dq.partition_B(_transpose_view(sK)))
        acc_shape_dQ = wg_dq.partition_shape_C((self.tile_m, d))
        acc_dK = cute.make_rmem_tensor(wg_dkv.partition_shape_C((self.tile_n, d)), Float32)
        acc_dV = cute.make_rmem_tensor(wg_dkv.partition_shape_C((self.tile_n, d)), Float32)
        acc_dK.fill(0.0)
        acc_dV.fill(0.0)
        return tdQrdS, tdQrKt, acc_shape_dQ, acc_dK, acc_dV

    @cute.jit
    def stat_cols(self, sStat: cute.Tensor, stage: Int32, query_first: Int32) -> cute.Tensor:
        """lse / Delta of this thread's query columns (the S^T accumulator's columns) from the
        stage's smem slot: pairs of adjacent queries, one 8-byte load each."""
        n = len(self.query_offs)
        base = sStat[None, stage].iterator + query_first
        ptr = cute.make_ptr(Float32, base.toint(), cute.AddressSpace.smem, assumed_align=8)
        src = cute.make_tensor(ptr, cute.make_layout((2, n // 2), stride=(1, 8)))
        vals = cute.make_rmem_tensor((2, n // 2), Float32)
        vals.store(src.load())
        return vals

    @cute.jit
    def stage_stats(
        self,
        gmem: tuple,  # mQ, mK (TMA views, for shapes), lse_log2, Delta (b, h, s_q_padded)
        stats: tuple,  # sLSE, sDelta (tile_m, stages) fp32 slots; their "empty" mbarriers
        pipeline_q: pipeline.PipelineAsync,
        items: tuple,  # (n_block, kv head, batch), or persistent: (first, count, grid, queue)
        group: Int32,
        lists: tuple,
    ) -> None:
        """The stats warp (sdp_swapab): lse / Delta rows of each visited m_block into the slot
        of its Q stage, in the consumers' m_block order (Note [SdP swapAB])."""
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.num_stages)
        if const_expr(self.persistent):
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Consumer, TILE_QUEUE_STAGES
            )
            tile, n_block, head_kv, batch = self.pop_item(items[3], tile_state)
            tile_state.advance()
            while tile < items[1]:
                coords = (n_block, head_kv, batch, group)
                state = self.stage_stats_item(gmem, stats, pipeline_q, coords, lists, state)
                tile, n_block, head_kv, batch = self.pop_item(items[3], tile_state)
                tile_state.advance()
        else:
            self.stage_stats_item(gmem, stats, pipeline_q, (*items, group), lists, state)

    @cute.jit
    def stage_stats_item(
        self,
        gmem: tuple,
        stats: tuple,
        pipeline_q: pipeline.PipelineAsync,
        coords: tuple,  # n_block, head_kv, batch, group
        lists: tuple,
        state: pipeline.PipelineState,
    ) -> pipeline.PipelineState:
        """The stats warp's work for one work item."""
        mQ, mK, mLSElog2, mDelta = gmem
        sLSE, sDelta, empty = stats
        n_block, head_kv, batch, group = coords
        lane = cute.arch.lane_idx()
        per_lane = self.tile_m // cute.arch.WARP_SIZE
        for g in cutlass.range(group, unroll=1):
            head = head_kv * group + g
            blocks = self.block_range(
                n_block, head, batch, mQ.shape[2], mQ.shape[0], mK.shape[0], lists
            )
            gLSE = mLSElog2[batch, head, None]
            gDelta = mDelta[batch, head, None]
            for i in cutlass.range(blocks[0], unroll=1):
                row0 = self.m_block_at(i, blocks) * self.tile_m + lane
                vals = cute.make_rmem_tensor((2, per_lane), Float32)
                for k in cutlass.range_constexpr(per_lane):  # loads first: they overlap the wait
                    vals[0, k] = gLSE[row0 + k * cute.arch.WARP_SIZE]
                    vals[1, k] = gDelta[row0 + k * cute.arch.WARP_SIZE]
                # Every consumer thread has read the slot's last m_block.
                cute.arch.mbarrier_wait(empty + state.index, state.phase)
                for k in cutlass.range_constexpr(per_lane):
                    sLSE[lane + k * cute.arch.WARP_SIZE, state.index] = vals[0, k]
                    sDelta[lane + k * cute.arch.WARP_SIZE, state.index] = vals[1, k]
                # One of the stage's full-barrier arrivals (with the TMA thread's).
                cute.arch.mbarrier_arrive(pipeline_q.producer_get_barrier(state))
                state.advance()
        return state

    @cute.jit
    def mma_one_m_block_swapab(
        self,
        q_state: pipeline.PipelineState,
        m_block: Int32,
        masked: cutlass.Constexpr[bool],
        ctx: tuple,
        per_head: tuple,
    ) -> pipeline.PipelineState:
        """All five GEMMs of one (m_block, n_block) tile, S and dP transposed (Note [SdP
        swapAB]); dQ added to global memory."""
        swap_ops, dq_stage, sStats, pipeline_q, pipeline_do = ctx[:5]
        scale_log2, seqlen_q, seqlen_k = ctx[5:]
        frags, acc_shape_S, acc_shape_dQ, acc_dK, acc_dV, tScS_mn = swap_ops[:6]
        st_atom, thr_st_dS, tdSsdS = swap_ops[7]
        mma_sdp, mma_dkv, mma_dq = swap_ops[8]
        tSrK, tSrQ, tdPrV, tdPrdO, tdVrdOt, tdKrQt, tdQrdS, tdQrKt = frags
        words, n_block = per_head
        tdQsdQ, wg_idx = dq_stage
        num_rows = cute.size(tScS_mn, mode=[0])  # key rows
        num_cols = cute.size(tScS_mn, mode=[1])  # query columns
        stage = q_state.index
        query_first = tScS_mn[0, 0][1]

        # Mask bits first: they need no scores (the bounds were read once per head). Without
        # causal or bounds only the keys past the end are masked: whole rows, no bits.
        key_first = n_block * self.tile_n + tScS_mn[0, 0][0]
        bits = None
        if const_expr(masked and (self.causal or self.has_lists)):
            bits = mask_bits_transposed(
                words,
                key_first,
                m_block * self.tile_m + query_first,
                seqlen_q,
                seqlen_k,
                self.key_offs,
                self.query_offs,
                self.causal,
                self.n_bounds,
            )

        pipeline_q.consumer_wait(q_state)
        acc_S = cute.make_rmem_tensor(acc_shape_S, Float32)
        _gemm(mma_sdp, acc_S, tSrK, tSrQ[None, None, None, stage], True, -1)
        # The stats warp filled this stage's slots before arriving on the Q stage's barrier.
        lse = self.stat_cols(sStats[0], stage, query_first)
        pipeline_do.consumer_wait(q_state)
        acc_dP = cute.make_rmem_tensor(acc_shape_S, Float32)
        _gemm(mma_sdp, acc_dP, tdPrV, tdPrdO[None, None, None, stage], True, 1)

        # P^T = exp2(S^T * scale_log2 - lse_log2 of the column); masked scores are -inf.
        s_mn = acc_to_mn(acc_S)
        if const_expr(masked and (self.causal or self.has_lists)):
            apply_mask_bits(acc_S, bits)
        elif const_expr(masked):
            for r in cutlass.range_constexpr(num_rows):
                if key_first + self.key_offs[r] >= seqlen_k:
                    s_mn[r, None].fill(-Float32.inf)
        for r in cutlass.range_constexpr(num_rows):
            for c in cutlass.range_constexpr(num_cols):
                s_mn[r, c] = cute.math.exp2(s_mn[r, c] * scale_log2 - lse[c], fastmath=True)
        # P^T in 16 bits is the register A operand of dV += P^T dO (never stored).
        rP = cute.make_rmem_tensor(acc_shape_S, self.dtype)
        rP.store(acc_S.load().to(self.dtype))
        ps = stage if const_expr(self.pds_stages > 1) else 0

        def issue_dv():  # dV += P^T dO, left in flight (rP stays untouched until it completes)
            _gemm(mma_dkv, acc_dV, acc_to_frg_a(rP), tdVrdOt[None, None, None, stage], False, -1)

        if const_expr(self.early_dv):
            issue_dv()

        # dS^T = P^T * (dP^T - Delta of the column)
        warpgroup.wait_group(1 if const_expr(self.early_dv) else 0)
        delta = self.stat_cols(sStats[1], stage, query_first)
        # Every consumer thread arrives once it has read the slots: the stats warp may refill.
        cute.arch.mbarrier_arrive(sStats[2] + stage)
        dp_mn = acc_to_mn(acc_dP)
        for r in cutlass.range_constexpr(num_rows):
            for c in cutlass.range_constexpr(num_cols):
                dp_mn[r, c] = s_mn[r, c] * (dp_mn[r, c] - delta[c])
        rdS = cute.make_rmem_tensor(acc_shape_S, self.dtype)
        rdS.store(acc_dP.load().to(self.dtype))

        # dS goes to smem for dQ = dS K, which needs all key columns (both warpgroups). One
        # buffer: last m_block's dQ GEMMs must be done with it first. Two: as in the default
        # kernel (the reads of this stage's buffer were waited for before the last barrier).
        if const_expr(self.pds_stages == 1):
            self.pds_barrier()
        cute.copy(st_atom, thr_st_dS.retile(rdS), tdSsdS[None, None, None, ps])
        cute.arch.fence_view_async_shared()
        self.pds_barrier()

        if const_expr(not self.early_dv):
            issue_dv()
        acc_dQ = cute.make_rmem_tensor(acc_shape_dQ, Float32)
        _gemm(mma_dq, acc_dQ, tdQrdS[None, None, None, ps], tdQrKt, True, -1)
        # dK += dS^T Q with dS^T from registers (rdS untouched until the GEMM completes)
        _gemm(mma_dkv, acc_dK, acc_to_frg_a(rdS), tdKrQt[None, None, None, stage], False, -1)
        return self.finish_m_block(q_state, acc_dQ, (tdQsdQ, wg_idx), pipeline_q, pipeline_do)

    @cute.jit
    def finish_m_block(
        self,
        q_state: pipeline.PipelineState,
        acc_dQ: cute.Tensor,
        dq_stage: tuple,  # tdQsdQ, wg_idx
        pipeline_q: pipeline.PipelineAsync,
        pipeline_do: pipeline.PipelineAsync,
    ) -> pipeline.PipelineState:
        """Both layouts, after an m_block's last GEMM (dK) is issued: dO's stage released once
        dV and dQ are done, dQ staged for the dQ warp, Q's stage released once dK is done."""
        warpgroup.wait_group(1)  # dV and dQ done
        pipeline_do.consumer_release(q_state)
        self.stage_dq(acc_dQ, *dq_stage)
        warpgroup.wait_group(0)
        pipeline_q.consumer_release(q_state)
        q_state.advance()
        return q_state

    @cute.jit
    def stage_dq(self, acc_dQ: cute.Tensor, tdQsdQ: cute.Tensor, wg_idx: Int32) -> None:
        """This m_block's dQ -> the warpgroup's smem staging buffer (once the dQ warp has handed
        the last one to the bulk-copy engine); the dQ warp then adds it to global memory
        (Note [dQ accumulator layout])."""
        cute.arch.barrier(
            barrier_id=int(NamedBarrierBwd.dQEmpty) + wg_idx,
            number_of_threads=THREADS_PER_WG + cute.arch.WARP_SIZE,
        )
        acc_dQ_flat = cute.make_tensor(
            acc_dQ.iterator, cute.make_layout((4, cute.size(acc_dQ) // 4), stride=(1, 4))
        )
        cute.autovec_copy(acc_dQ_flat, tdQsdQ)
        cute.arch.fence_view_async_shared()
        cute.arch.barrier_arrive(
            barrier_id=int(NamedBarrierBwd.dQFull) + wg_idx,
            number_of_threads=THREADS_PER_WG + cute.arch.WARP_SIZE,
        )

    @cute.jit
    def pds_barrier(self) -> None:
        cute.arch.barrier(
            barrier_id=int(NamedBarrierBwd.PdS), number_of_threads=self.num_mma_threads
        )

    # ----------------------------------------------------------------------------------------
    # Epilogue
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def epilogue(
        self,
        accs: tuple,  # acc_dK, acc_dV (fp32 wgmma accumulators; dK already scaled)
        gmem: tuple,  # mdK, mdV: TMA views (s_k, d, h_kv, b)
        smem: tuple,  # sK, sV: (tile_n, d), reused for dK, dV
        tma_atoms: tuple,  # dK, dV store atoms
        mma_dkv: cute.TiledMma,
        tidx: Int32,
        coord: tuple,  # n_block, head_kv, batch
    ):
        acc_dK, acc_dV = accs
        mdK, mdV = gmem
        sK, sV = smem
        tma_atom_dK, tma_atom_dV = tma_atoms
        n_block, head_kv, batch = coord
        rdK = cute.make_rmem_tensor(acc_dK.shape, self.dtype)
        rdK.store(acc_dK.load().to(self.dtype))
        rdV = cute.make_rmem_tensor(acc_dV.shape, self.dtype)
        rdV.store(acc_dV.load().to(self.dtype))
        tile = (self.tile_n, self.head_dim)
        if const_expr(self.dkv_store == "direct"):
            # Each thread stores its values (pairs of adjacent columns) where its key row is
            # inside the keys; no smem, no barrier.
            thr = mma_dkv.get_slice(tidx)
            tDcD = thr.partition_C(cute.make_identity_tensor(tile))
            rows_left = mdK.shape[0] - n_block * self.tile_n
            for r, m in ((rdK, mdK), (rdV, mdV)):
                tDgD = thr.partition_C(
                    cute.local_tile(m[None, None, head_kv, batch], tile, (n_block, 0))
                )
                for i in cutlass.range_constexpr(cute.size(r)):
                    if tDcD[i][0] < rows_left:
                        tDgD[i] = r[i]
            return
        # Every consumer is done reading sK / sV (its last GEMMs waited for) before they are
        # overwritten.
        cute.arch.barrier(
            barrier_id=int(NamedBarrierBwd.Epilogue), number_of_threads=self.num_mma_threads
        )
        st_atom = cute.make_copy_atom(
            warp.StMatrix8x8x16bOp(transpose=False, num_matrices=4), self.dtype
        )
        thr_st = cute.make_tiled_copy_C(st_atom, mma_dkv).get_slice(tidx)
        cute.copy(st_atom, thr_st.retile(rdK), thr_st.partition_D(sK))
        cute.copy(st_atom, thr_st.retile(rdV), thr_st.partition_D(sV))
        cute.arch.fence_view_async_shared()
        cute.arch.barrier(
            barrier_id=int(NamedBarrierBwd.Epilogue), number_of_threads=self.num_mma_threads
        )
        # One thread issues the TMA stores (a bulk copy is per thread: a whole warp issuing them
        # stored dK / dV 32 times) and waits for them; with ``persistent`` its K / V release
        # (lane 0 of each warp arrives) therefore follows the wait.
        if tidx == 0:
            one = cute.make_layout(1)
            for atom, s, m in ((tma_atom_dK, sK, mdK), (tma_atom_dV, sV, mdV)):
                g = cute.local_tile(m[None, None, head_kv, batch], tile, (n_block, 0))
                ts, tg = cpasync.tma_partition(
                    atom, 0, one, cute.group_modes(s, 0, 2), cute.group_modes(g, 0, 2)
                )
                cute.copy(atom, ts, tg)
            cute.arch.cp_async_bulk_commit_group()
            cute.arch.cp_async_bulk_wait_group(0, read=True)
