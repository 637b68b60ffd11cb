"""fm4 forward attention kernel for Hopper (sm_90a), FlashMask column-bound masks.

Supported:
    bf16 / fp16 q, k, v in (b, s, h, d) layout (d contiguous); head dims 64, 128, 256;
    GQA / MQA (h % h_kv == 0); any seqlen_q, seqlen_k (symbolic, no recompile per length);
    no mask, causal (bottom-right aligned), or FlashMask bounds [b, hm, s_k, n] with n in
    {1, 2, 4}, hm in {1, h_kv, h}, visited through per-m_block tile lists (partial / full);
    rows that see no key: out = 0, lse = -inf.
Not supported (yet): other head dims, head_dim_v != head_dim, varlen / paged KV, dropout, softcap,
    score modifiers, split-KV, fp8.

Structure (FA3 design):
    warpgroup 0, warp 0      producer: TMA loads of Q once, then K and V per n_block through a
                             ``num_stages``-deep mbarrier pipeline (PipelineTmaAsync); registers
                             given back with setmaxnreg.
    warpgroups 1 and 2       consumers, 64 rows of the 128-row tile each: S = Q K^T (wgmma, both
                             operands in smem), mask (partial tiles only), online softmax in fp32
                             with exp2, O += P V (wgmma, P from registers). The next block's
                             Q K^T is issued before the current P V (intra-warpgroup overlap),
                             and the two warpgroups take turns issuing GEMMs (named barriers).
    epilogue                 O / row_sum -> smem (stmatrix; its own buffer when persistent,
                             else aliasing sQ) -> TMA store; lse stored directly from registers.

The n_blocks of one m_block are visited as one sequence ``i = 0 .. n_total - 1``: first the
``n_partial`` blocks that need element-wise masking, then the unmasked ones, each list from the
highest n_block down. With tile lists these come from ``fwd_partial_*`` / ``fwd_full_*``; with
no bounds they are the causal / end-of-keys blocks and the rest of ``[0, n_block_max)``.

Note [Persistent tiles]
    Tiles are numbered with the m_block fastest (from the last m_block down: longest rows
    first under causal masks), then the query head, then the batch, so CTAs running at the
    same time share K / V in L2. Persistent (head dim <= 128): the grid is min(tiles, SMs);
    CTA c runs tile c first, then the tiles its producer warp claims one at a time from a
    global counter (``tile_scheduler.py``), so a CTA that drew short rows takes more tiles.
    The producer hands each index to the consumers through a two-slot smem queue, together
    with what it derives from it once (``tile_info``: m_block, head, batch, mask head and the
    list counts; the consumers then do no division and no list-count load between tiles);
    their pipeline states carry over from tile to tile. The consumers release Q once the tile's last
    Q K^T is complete. With two Q stages (tile_overlap) the producer issues the next tile's Q
    early in this tile's loads (Note [Q ahead]); otherwise it loads it, and the next tile's
    first K / V as stages free up, during the last P V and the epilogue. O is staged in its
    own smem buffer; before writing it, the storing warp waits until the last tile's TMA store
    has read it.
    Otherwise (D = 256: no smem for a separate O; or ``persistent=False``) there is one CTA
    per tile, on a (m_block, head, batch) grid, and O aliases sQ.
    Measured (H100, 8K, NOTES.md, session 3): against one CTA per tile, sliding_window -25%,
    share_question -12%, causal_document -7%, document -2%; causal +4% (the main loop's
    schedule, not the scheduler: the one-CTA-per-tile build of the same code is as slow). A
    static stride (``claim="static"``) was 24% slower on causal (unbalanced), so the counter
    stays.

Note [Descriptors per tile]
    Issued through descriptor views (``qk_desc="view"``), the persistent kernel's Q K^T
    rebuilt every k-block's wgmma descriptors from the smem address in each n_block
    iteration: ptxas wrote Q's and K's 64-bit descriptors into one set of uniform registers
    before each of the 8 wgmmas (a split 64-bit add and two moves of the constant high word
    per operand), 500 SASS instructions in the unmasked loop against 450 for the same loop
    with one CTA per tile, which computes Q's once. With ``qk_desc="words"`` (the default of
    the persistent kernel with tile_overlap) the descriptors are taken out as 32-bit words
    (``wgmma_desc.py``): K's first low word once per kernel, Q's once per tile (its Q stage),
    the k-block and stage offsets added to the low words only, and each high word made
    opaque to ptxas with a run-time zero so that it stays in its register: two 32-bit adds
    per wgmma, 461 instructions.

Note [P V wait]
    In each block the consumers wait twice for their GEMMs: for this block's Q K^T (then its
    softmax), and for the previous block's P V (then O is rescaled and P converted into the
    registers that P V read). In the source the second wait follows the whole softmax, but
    ptxas places it where it likes: in the persistent kernel it put it before the first exp2,
    so the softmax waited for P V (full 8K: 162K of 2.31M warp stall samples at that wait;
    one CTA per tile and FA4 had it after about a third of the exp2s and took 3% fewer cycles).
    It is pinned with ``pv_wait_after = c``: after the softmax, an mbarrier arrive that never
    runs (its condition is a run-time 0 made from the probabilities of column c - 1 of the
    thread's rows, :func:`sync_point_after`) precedes the wait, and ptxas keeps a wgmma wait
    after an mbarrier operation, which has to come after those exp2s. H100, SM cycles
    (session 11): c = 12 of 32 best (causal 8K / 32K -6.7% / -7.3%, NOTES.md); the wait after
    every exp2 (the same trick on the row sums) was 7 to 14% slower than ptxas's choice, and
    so was releasing K only after the softmax (K's next load waits for the release).
"""

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import cutlass.memory
import cutlass.pipeline as pipeline
import cutlass.utils.hopper_helpers as sm90_utils
from cutlass import Boolean, Float32, Int8, Int32, const_expr
from cutlass.cute.nvgpu import cpasync, warp, warpgroup
from cutlass.tensor_utils import LayoutEnum

from fm4.cute_kernels.mask_apply import (
    apply_mask_bits,
    bits_from_code_words,
    bits_from_codes,
    bits_from_words,
    fill_mask_bias,
    load_bound_words,
    load_code_words,
    mask_bits,
)
from fm4.cute_kernels.mask_bytes import (
    WG_ROWS,
    apply_byte_bits,
    buffer_words,
    byte_mask_bits,
    load_column_bounds,
    masked_inside,
    row_words,
    store_column_bytes,
)
from fm4.cute_kernels.named_barrier import NamedBarrierFwd
from fm4.cute_kernels.pipeline_utils import sync_point_after, tma_load, tma_pipeline
from fm4.cute_kernels.smem_struct import aligned_buf, make_struct, tile_buf
from fm4.cute_kernels.softmax import (
    LOG2_E,
    OnlineSoftmax,
    acc_to_frg_a,
    acc_to_mn,
    convert_to_16bit,
)
from fm4.cute_kernels.tile_lists import list_counts, list_idx_rows
from fm4.cute_kernels.tile_scheduler import (
    TILE_INFO_WORDS,
    TILE_QUEUE_STAGES,
    claim_issue,
    claim_result,
    claim_tile,
    pop_tile,
    push_tile,
    tile_queue,
)
from fm4.cute_kernels.wgmma_desc import desc_words, gemm_desc_words, k_block_offsets

# ============================================================================================
# Tuning table (the only place with tuning constants)
# ============================================================================================
# head_dim -> (tile_m, tile_n, kv pipeline stages)
TILE_CONFIG_SM90: dict[int, tuple[int, int, int]] = {
    64: (128, 128, 2),
    128: (128, 128, 2),
    256: (128, 64, 2),
}
NUM_CONSUMER_WARPGROUPS = 2  # tile_m // 64
REGS_PRODUCER = 24  # setmaxnreg for the producer warpgroup
REGS_CONSUMER = 240  # setmaxnreg for each consumer warpgroup
SMEM_ALIGN_BYTES = 1024  # alignment of each smem buffer (128B swizzle atoms)


# P to 16 bit with packed inline-asm cvt (Note [Packed conversion] in softmax.py) instead of
# TensorSSA.to ("unmasked": inline asm in the unmasked loop only). H100, 8K, D=128 (NOTES.md):
# non-causal without bounds full 27.89 -> 26.32 ms. With bounds n = 1, 2 it is on together with
# the v2 mask bits (below), which free the registers it spilled with v1 (4-12 bytes); there it
# is within noise of .to (v2 + asm vs v2 + .to: -6% to +3% per mask over two runs). Causal
# without bounds keeps .to: asm measured +3.4% (session 1), +0.2% to +5% (session 2).
def p_cvt_asm_default(causal: bool, n_bounds: int) -> bool:
    return (not causal and n_bounds == 0) or n_bounds in (1, 2)


# Rescale O by the previous block's factor while the next Q K^T runs (before P V is issued)
# instead of right after the softmax (FA4 does this for head dims above 128 only). Measured
# slower at D=128 (full +4%, prefix_lm_causal +6% vs without), so off.
RESCALE_O_BEFORE_PV = False


# Mask bits of partial blocks: "v1" = `mask_apply.mask_bits` (per column: clamped address, bound
# loads, compares); "v2" = `load_bound_words` + `bits_from_words` (vector bound loads at static
# offsets, causal / end-of-keys as one threshold per row, next block's index read one block
# ahead). v2 + asm cvt vs v1 + .to, H100, 8K, D=128, two runs: sliding_window -10%,
# share_question -9%, random_eviction -12% / -20%, document -2% / -3%, qk_sparse -1% / -2%
# (NOTES.md, session 2). n = 4 always uses v1 (v2 spills there); no bounds: v1 (causal was not
# faster with v2; the full mask not measured).
def mask_impl_default(causal: bool, n_bounds: int) -> str:
    return "v2" if n_bounds in (1, 2) else "v1"


# Bound codes (session 14): a partial block's bits from its bound code (Note [Bound codes] in
# fm4.masks.tiles; `mask_apply.bits_from_codes`): only the bounds ACTIVE in the tile are loaded
# and compared. Replaces mask_impl for kernels with bounds (knob ``bound_codes``).
BOUND_CODES = True


# With bound codes, n = 1, 2: a partial block's bound words are loaded one block ahead (after
# the previous block's GEMMs are issued), so that their global-load latency is not waited for
# before the block's GEMMs (knob ``bound_prefetch``). With bound codes, n = 1: a partial block's
# mask is the start value of its S accumulator (Note [Mask as bias]; knob ``mask_bias``).
# Outputs bitwise equal either way. Session 15 (H100, 8K, wall-clock): prefetch alone within
# -2% / +4%; mask_bias + prefetch causal_document -6% / -3%, the other n = 1 masks +-1%.
# Session 19 (SM cycles, `bench.cycles`, 8K, after first_queued), prefetch against none: n = 1
# (causal) sliding_window 0.991, causal_document 1.003, share_question 0.997, random_eviction
# 0.985; n = 2 +5 to +6.5% (document, prefix_lm_document / _causal, causal_blockwise,
# qk_sparse: it spills 20 bytes there). mask_bias with or without prefetch: no better than
# prefetch alone over the four n = 1 masks (random_eviction 0.964, causal_document 1.013).
# So prefetch is on for n = 1 only, mask_bias off.
def bound_prefetch_default(n_bounds: int) -> bool:
    return n_bounds == 1


MASK_BIAS = False


# Masks of a tile's partial blocks after the first (Note [Byte masks]): "bits" (bit words from
# the bound codes, as above) or "bytes" (per-column row thresholds as bytes, n = 1, 2 only).
# Outputs bitwise equal. Session 23 (H100, wall-clock, bytes / bits, sustained protocol):
# random_eviction 0.971 / 0.976 at 8K (two runs), 0.978 at 32K, 0.973 at 128K; the other n = 1,
# 2 masks 0.968-1.025 at 8K (run to run within the rounds' spread), 0.981-1.004 at 32K,
# 0.979-1.015 at 128K (bench/results/h100-session23-intervals).
REST_MASK = "bytes"


def rest_mask_default(n_bounds: int) -> str:
    return REST_MASK if n_bounds in (1, 2) else "bits"


# When a tile's first block gets its mask bits (FlashMaskFwdSm90's docstring).
FIRST_BITS = "after_gemm"
# Where a partial block's bits are made (FlashMaskFwdSm90's docstring): "split" / "late" were
# not faster than "early" (document +1 to +10%).
MASK_AT = "early"


# Persistent kernel (Note [Persistent tiles]): one CTA per SM takes tiles from a global counter;
# the next tile's Q / K / V loads overlap this tile's last P V and epilogue. Needs O
# staged in its own smem buffer (Q's buffer is refilled early), which fits up to D = 128
# (D = 128: 32 KB more, 192 KB in all); D = 256 stays one CTA per tile with O aliasing sQ.
# The full mask too since session 11: with the P V wait placed (PV_WAIT_AFTER) the persistent
# kernel takes fewer cycles than one CTA per tile (H100, full 8K, Mcycles: 37.55 persistent
# (pv_wait_after 8) vs 40.90 / 39.11 one CTA per tile (8 / 12); before, 40.85 vs 39.52). Session 9
# (wall-clock, 8K): one CTA per tile on the others: causal +7%, sliding_window +37%,
# share_question +18%, document +10%, qk_sparse +2%.
def persistent_default(head_dim: int) -> bool:
    return head_dim <= PERSISTENT_MAX_HEAD_DIM


PERSISTENT_MAX_HEAD_DIM = 128
# When the producer claims its next tile (FlashMaskFwdSm90's docstring). H100, 8K, two runs:
# "late" -2% / +1% on causal, -3% / -6% on random_eviction, +7% / +9% on sliding_window,
# +4% / +8% on share_question against "early"; "static" +24% on causal.
CLAIM = "early"
# Tile order of the persistent kernel (FlashMaskFwdSm90's docstring); L2 share for the K / V of
# one "lpt" group of heads. "lpt" vs "m", H100, 8K, one run: causal -1.4%, random_eviction
# -3%, sliding_window +12%, share_question +6%, causal_document +3.5%.
ORDER = "m"
# Persistent with tile_overlap: the producer issues the next tile's Q early in this tile's loads
# (Note [Q ahead]) instead of after them.
Q_AHEAD = True
# With q_ahead: the next tile's first n_block is read during this tile, and the claim's atomic
# is waited for only after this tile's first K (Note [Q ahead]).
K_AHEAD = True
# With k_ahead and bounds: the tile queue hands the consumers each tile's first n_block and its
# bound code with the tile (Note [First block queued]).
FIRST_QUEUED = True
# How O starts each tile at zero: "fill" (its registers zeroed after the previous tile's
# epilogue) or "pv" (the tile's first P V overwrites them: wgmma scale-d 0 from a run-time
# predicate). Bitwise equal. "pv" against "fill", SM cycles (H100, 8K, session 26):
# sliding_window 0.991, share_question 0.993, causal_document / document 0.996,
# prefix_lm_document 0.998, causal 0.999.
O_ZERO = "pv"
L2_KV_BUDGET_BYTES = 24 * 1024 * 1024
# Persistent: a tile's last P V is issued together with the next tile's first Q K^T, and the
# epilogue runs while the other warpgroup's GEMMs do (Note [Tile overlap]). Needs two Q stages
# (D = 128: 226 KB of smem). With O_STORE "wg", against neither (H100, 8K, kernels alone, five
# interleaved rounds, session 8): causal -0.4%, full -1.0%, sliding_window -3.9%,
# share_question -1.7%, causal_document -1.0%, document -3.2%, prefix_lm_document -2.3%,
# global_sliding_window +0.8%, random_eviction -5.7%, bd_2 -8.3%, bd_8 -4.3%; outputs
# bitwise equal. Persistent kernels only (one CTA per tile ignores both).
TILE_OVERLAP = True
# Persistent: who stores a tile's O: "cta" (both warpgroups, one 256-thread barrier) or "wg"
# (each warpgroup its 64 rows after a 128-thread barrier).
O_STORE = "wg"


# The P V wait after the exp2 of this many of a row's columns (of tile_n / 4 per thread; 0:
# where ptxas puts it), Note [P V wait]. H100, 8K / 32K, SM cycles against 0 (session 11):
# 12: causal -6.7% / -7.3%, document -4.8% / -6.8%, qk_sparse -7.3%, random_eviction -2.4%,
# share_question -1.9%, causal_document -3.2%, sliding_window +1.0%; 4 / 8 / 16 less good.
# Measured at D = 128; D = 64 (same tile_n) takes 12 unmeasured; D = 256 (tile_n 64): 0.
def pv_wait_after_default(head_dim: int) -> int:
    return 12 if head_dim <= 128 else 0


# ============================================================================================

THREADS_PER_WG = 128


def _select(t: cute.Tensor, modes: list[int]) -> cute.Tensor:
    """Permute the modes of a tensor (a view, no copy)."""
    return cute.make_tensor(t.iterator, cute.select(t.layout, modes))


def _transpose_view(t: cute.Tensor) -> cute.Tensor:
    """Swap the first two modes of an smem tensor (used to read V as (d, tile_n))."""
    shape = (t.shape[1], t.shape[0], *t.shape[2:])
    order = (1, 0, *range(2, cute.rank(t)))
    return cute.composition(t, cute.make_ordered_layout(shape, order=order))


def _smem_layout(dtype, rows: int, cols: int, stages: int | None = None):
    """Swizzled K-major smem layout of a (rows, cols) tile, optionally with a stage mode."""
    atom = warpgroup.make_smem_layout_atom(
        sm90_utils.get_smem_layout_atom(LayoutEnum.ROW_MAJOR, dtype, cols), dtype
    )
    if stages is None:
        return cute.tile_to_shape(atom, (rows, cols), order=(0, 1))
    return cute.tile_to_shape(atom, (rows, cols, stages), order=(0, 1, 2))


@cute.jit
def _gemm(
    tiled_mma: cute.TiledMma,
    acc: cute.Tensor,
    tCrA: cute.Tensor,
    tCrB: cute.Tensor,
    zero_init: cutlass.Constexpr[bool],
    wg_wait: cutlass.Constexpr[int],
    accumulate: cutlass.Boolean | None = None,
) -> None:
    """One warpgroup GEMM over the k-blocks of the fragments; wg_wait < 0 leaves it in flight.
    ``accumulate`` (run time, instead of ``zero_init``): whether the first k-block adds to
    ``acc`` (False: overwrites it)."""
    warpgroup.fence()
    atom = cute.make_mma_atom(tiled_mma.op)
    if const_expr(accumulate is None):
        atom.set(warpgroup.Field.ACCUMULATE, not zero_init)
    else:
        atom.set(warpgroup.Field.ACCUMULATE, accumulate)
    for k in cutlass.range_constexpr(cute.size(tCrA.shape[2])):
        cute.gemm(atom, acc, tCrA[None, None, k], tCrB[None, None, k], acc)
        atom.set(warpgroup.Field.ACCUMULATE, True)
    warpgroup.commit_group()
    if const_expr(wg_wait >= 0):
        warpgroup.wait_group(wg_wait)


def _shared_storage(
    dtype,
    stages: int,
    q_stages: int,
    sQ_layout,
    sK_layout,
    sV_layout,
    sO_layout,
    tile_words: int,
    mask_words: int = 0,
):
    """The kernel's smem: mbarriers, then Q, K, V (and, persistent, O and the tile queue of
    ``tile_words`` words per slot; 0: not persistent), then ``mask_words`` words for byte
    masks (Note [Byte masks]; 0: none)."""

    def buf(layout):
        return tile_buf(dtype, layout, SMEM_ALIGN_BYTES)

    fields = {
        "mbar_q": cute.struct.MemRange[cutlass.Int64, q_stages * 2],
        "mbar_k": cute.struct.MemRange[cutlass.Int64, stages * 2],
        "mbar_v": cute.struct.MemRange[cutlass.Int64, stages * 2],
        "sQ": buf(sQ_layout),
        "sK": buf(sK_layout),
        "sV": buf(sV_layout),
    }
    if tile_words > 0:
        fields["sO"] = buf(sO_layout)
        fields["mbar_tile"] = cute.struct.MemRange[cutlass.Int64, 2 * TILE_QUEUE_STAGES]
        fields["sTile"] = cute.struct.MemRange[cutlass.Int32, tile_words * TILE_QUEUE_STAGES]
    if mask_words > 0:
        fields["sMask"] = aligned_buf(cutlass.Int32, mask_words, 16)
    return make_struct("SharedStorage", fields)


class FlashMaskFwdSm90:
    """Hopper forward kernel; a CTA per SM looping over (m_block, query head, batch) tiles, or
    one CTA per tile (Note [Persistent tiles]).

    Compile-time configuration only; every size that depends on the data (batch, sequence
    lengths, head counts) is read from the tensors at run time.
    """

    def __init__(
        self,
        dtype: type[cutlass.Numeric],
        head_dim: int,
        causal: bool,
        n_bounds: int,
        tile_m: int | None = None,
        tile_n: int | None = None,
        num_stages: int | None = None,
        p_cvt_asm: bool | str | None = None,
        rescale_o_before_pv: bool | None = None,
        mask_impl: str | None = None,
        mask_at: str | None = None,
        mask_guard: bool = False,
        persistent: bool | None = None,
        claim: str | None = None,
        order: str | None = None,
        first_bits: str | None = None,
        o_store: str | None = None,
        tile_overlap: bool | None = None,
        first_guard: bool = False,
        qk_desc: str | None = None,
        pv_wait_after: int | None = None,
        bound_codes: bool | None = None,
        bound_prefetch: bool | None = None,
        mask_bias: bool | None = None,
        q_ahead: bool | None = None,
        k_ahead: bool | None = None,
        first_queued: bool | None = None,
        rest_mask: str | None = None,
        o_zero: str | None = None,
    ):
        """dtype: cutlass.BFloat16 or cutlass.Float16; n_bounds: 0 (no bounds) or 1, 2, 4.

        Tuning knobs (None: the tuning table's choice; see the table at the top of the file):
        p_cvt_asm: False (``TensorSSA.to``), True (inline-asm ``cvt`` for every block), or
        "unmasked" (inline asm only in the loop over unmasked blocks). bound_codes (default
        ``BOUND_CODES`` with bounds, unless mask_impl is given): partial blocks' mask bits from
        the tile lists' bound codes (:func:`bits_from_codes`: only the bounds ACTIVE in the tile
        are loaded and compared); otherwise mask_impl: "v1" (:func:`mask_bits`) or "v2"
        (:func:`load_bound_words` + :func:`bits_from_words`). bound_prefetch (default
        ``bound_prefetch_default``: on for n = 1): with bound codes, n_bounds 1 or 2 and
        rest_mask "bits", the bound words of a tile's partial blocks after the first are loaded
        one block ahead (:func:`load_code_words`); no effect otherwise (no partial block's words
        to load). mask_bias (default ``MASK_BIAS``; needs mask_at "early"): with bound codes,
        n_bounds 1 and rest_mask "bits", Note [Mask as bias]; no effect otherwise.
        mask_at: where a masked block's bits are made, "early" (before the block's GEMMs are
        issued), "late" (after they are issued, while Q K^T runs; v2 only) or "split" (bounds
        loaded early, bits made late; v2 only). mask_guard: with "late" / "split", make the bits
        inside a branch ptxas cannot remove, so that it cannot move them into the GEMM issue.
        persistent: one CTA per SM looping over tiles (Note [Persistent tiles]; head dim <= 128)
        instead of one CTA per tile. claim (persistent): when the producer claims the next tile,
        "early" (as it starts a tile), "late" (after the tile's loads are issued) or "static"
        (no counter: tile + grid size). order (persistent): tile order, "m" (m_block fastest,
        from the last one down, then head, then batch) or "lpt" (groups of heads whose K / V fit
        in L2; the last m_blocks of all of them first). first_bits: when a tile's first block
        (partial if any is) gets its mask bits, "early" (before its Q K^T is issued, like the
        other blocks with mask_at "early") or "after_gemm" (its Q K^T issued first, so the bound
        loads overlap the GEMM; nothing else overlaps it, as the previous block's P V does for
        the other blocks). o_store (persistent; default ``O_STORE``): "cta" (both warpgroups
        stage O, one 256-thread barrier, one TMA store of the 128 rows) or "wg" (each warpgroup
        stages its 64 rows in its own half of sO and stores them itself after a 128-thread
        barrier: no warpgroup waits for the other at the end of a tile). tile_overlap
        (persistent; default ``TILE_OVERLAP``): issue a tile's last P V together with the next
        tile's first Q K^T (Note [Tile overlap]; two Q stages). first_guard: make a tile's
        first mask bits (bound loads and compares) only when the tile has a partial block;
        otherwise they are made and dropped (GPU-tested, not faster: off). qk_desc: how Q K^T
        gets its wgmma descriptors (Note [Descriptors per tile]), "view" (from the fragments'
        descriptor views at each GEMM) or "words" (32-bit words kept in registers; the default
        with tile_overlap). pv_wait_after: keep the previous block's P V wait after the exp2 of
        this many of each row's columns (Note [P V wait]; 0: where ptxas puts it). q_ahead
        (default ``Q_AHEAD`` where it applies: tile_overlap and a claim other than "late"): the
        producer issues the next tile's Q after this tile's second K (Note [Q ahead]). k_ahead
        (default ``K_AHEAD`` with q_ahead): the next tile's first n_block is read during this
        tile and the claim's atomic result is waited for after this tile's first K.
        first_queued (default ``FIRST_QUEUED`` with k_ahead and bounds): the tile queue carries
        each tile's first n_block and bound code to the consumers (Note [First block queued]).
        rest_mask (default ``rest_mask_default``): how a tile's partial blocks after the first
        are masked, "bits" (bit words, as the first block) or "bytes" (per-column row
        thresholds as bytes, Note [Byte masks]; n = 1, 2 only, no effect otherwise).
        o_zero (default ``O_ZERO``): how O starts a tile at zero, "fill" (registers zeroed after
        the previous tile) or "pv" (the tile's first P V overwrites O).
        """
        if head_dim not in TILE_CONFIG_SM90:
            raise ValueError(
                f"head_dim {head_dim} not supported (supported: {list(TILE_CONFIG_SM90)})"
            )
        if n_bounds not in (0, 1, 2, 4):
            raise ValueError(f"n_bounds must be 0, 1, 2 or 4, got {n_bounds}")
        cfg_m, cfg_n, cfg_stages = TILE_CONFIG_SM90[head_dim]
        self.dtype = dtype
        self.head_dim = head_dim
        self.causal = causal
        self.n_bounds = n_bounds
        self.has_lists = n_bounds > 0
        self.tile_m = tile_m or cfg_m
        self.tile_n = tile_n or cfg_n
        self.num_stages = num_stages or cfg_stages
        self.p_cvt_asm = p_cvt_asm_default(causal, n_bounds) if p_cvt_asm is None else p_cvt_asm
        if self.p_cvt_asm not in (False, True, "unmasked"):
            raise ValueError(f"p_cvt_asm must be False, True or 'unmasked', got {p_cvt_asm!r}")
        if mask_impl not in (None, "v1", "v2"):
            raise ValueError(f"mask_impl must be 'v1' or 'v2', got {mask_impl!r}")
        if bound_codes is None:
            bound_codes = BOUND_CODES and n_bounds > 0 and mask_impl is None
        if bound_codes and n_bounds == 0:
            raise ValueError("bound_codes=True needs bounds (n_bounds 1, 2 or 4)")
        if bound_codes and mask_impl is not None:
            raise ValueError(
                f"bound_codes=True replaces mask_impl (got {mask_impl!r}): pass one of them"
            )
        self.bound_codes = bool(bound_codes)
        self.mask_impl = mask_impl_default(causal, n_bounds) if mask_impl is None else mask_impl
        if self.bound_codes:
            self.mask_impl = "codes"
        if bound_prefetch is None:
            bound_prefetch = bound_prefetch_default(n_bounds)
        # Only partial blocks with bound codes and n = 1, 2 have words to load ahead.
        self.bound_prefetch = bool(bound_prefetch) and self.bound_codes and n_bounds in (1, 2)
        self.mask_at = MASK_AT if mask_at is None else mask_at
        if self.mask_impl == "codes" and self.mask_at == "split":
            raise ValueError("bound_codes=True makes its bits at once: mask_at 'early' or 'late'")
        if self.mask_at not in ("early", "late", "split"):
            raise ValueError(f"mask_at must be 'early', 'late' or 'split', got {mask_at!r}")
        self.mask_guard = mask_guard
        if mask_bias is None:
            mask_bias = MASK_BIAS
        self.mask_bias = bool(mask_bias) and self.bound_codes and n_bounds == 1
        if self.mask_bias and self.mask_at != "early":
            raise ValueError(f"mask_bias=True needs mask_at 'early', got {self.mask_at!r}")
        if self.mask_impl == "v1" and self.mask_at != "early":
            raise ValueError("mask_at 'late' / 'split' need mask_impl 'v2'")
        if self.mask_impl == "v2" and n_bounds == 4:
            # 32 columns x 4 words stay live next to S, O and P: v2 spills (36 to 700 bytes
            # depending on mask_at). n = 4 keeps v1.
            self.mask_impl, self.mask_at, self.mask_guard = "v1", "early", False
        self.rescale_o_before_pv = (
            RESCALE_O_BEFORE_PV if rescale_o_before_pv is None else rescale_o_before_pv
        )
        self.persistent = persistent_default(head_dim) if persistent is None else persistent
        if self.persistent and head_dim > PERSISTENT_MAX_HEAD_DIM:
            raise ValueError(
                f"persistent=True needs head_dim <= {PERSISTENT_MAX_HEAD_DIM} (a separate O "
                f"buffer in smem), got {head_dim}"
            )
        self.claim = CLAIM if claim is None else claim
        if self.claim not in ("early", "late", "static"):
            raise ValueError(f"claim must be 'early', 'late' or 'static', got {claim!r}")
        self.o_zero = O_ZERO if o_zero is None else o_zero
        if self.o_zero not in ("fill", "pv"):
            raise ValueError(f"o_zero must be 'fill' or 'pv', got {o_zero!r}")
        self.order = ORDER if order is None else order
        if self.order not in ("m", "lpt"):
            raise ValueError(f"order must be 'm' or 'lpt', got {order!r}")
        self.first_bits = FIRST_BITS if first_bits is None else first_bits
        if self.first_bits not in ("early", "after_gemm"):
            raise ValueError(f"first_bits must be 'early' or 'after_gemm', got {first_bits!r}")
        self.o_store = (O_STORE if self.persistent else "cta") if o_store is None else o_store
        if self.o_store not in ("cta", "wg"):
            raise ValueError(f"o_store must be 'cta' or 'wg', got {o_store!r}")
        if self.o_store == "wg" and not self.persistent:
            raise ValueError("o_store='wg' needs the persistent kernel (its own O buffer)")
        self.first_guard = first_guard
        if tile_overlap is None:
            tile_overlap = TILE_OVERLAP and self.persistent
        self.tile_overlap = tile_overlap
        if self.tile_overlap and not self.persistent:
            raise ValueError("tile_overlap=True needs the persistent kernel (tiles in sequence)")
        if self.tile_overlap and self.rescale_o_before_pv:
            raise ValueError("tile_overlap=True does not support rescale_o_before_pv=True")
        # Without tile_overlap (experimental), "words" spills 48 bytes (causal, n = 2).
        self.qk_desc = ("words" if self.tile_overlap else "view") if qk_desc is None else qk_desc
        if self.qk_desc not in ("view", "words"):
            raise ValueError(f"qk_desc must be 'view' or 'words', got {qk_desc!r}")
        self.pv_wait_after = (
            pv_wait_after_default(head_dim) if pv_wait_after is None else pv_wait_after
        )
        if not 0 <= self.pv_wait_after <= self.tile_n // 4:
            raise ValueError(
                f"pv_wait_after must be in [0, {self.tile_n // 4}], got {pv_wait_after!r}"
            )
        # Q stages: the next tile's Q must be in smem before this tile's last Q K^T is done.
        self.q_stages = 2 if self.tile_overlap else 1
        # The next tile must be known when this tile's loads start, and have a Q stage of its own.
        q_ahead_ok = self.tile_overlap and self.claim != "late"
        if q_ahead and not q_ahead_ok:
            raise ValueError(
                "q_ahead=True needs tile_overlap (two Q stages) and claim 'early' or 'static', "
                f"got tile_overlap={self.tile_overlap}, claim={self.claim!r}"
            )
        self.q_ahead = (Q_AHEAD if q_ahead is None else q_ahead) and q_ahead_ok
        if k_ahead and not self.q_ahead:
            raise ValueError("k_ahead=True needs q_ahead (the next tile known early)")
        self.k_ahead = (K_AHEAD if k_ahead is None else k_ahead) and self.q_ahead
        first_queued_ok = self.k_ahead and self.has_lists
        if first_queued and not first_queued_ok:
            raise ValueError(
                "first_queued=True needs k_ahead (the first n_block read ahead) and bounds, got "
                f"k_ahead={self.k_ahead}, n_bounds={n_bounds}"
            )
        self.first_queued = (
            FIRST_QUEUED if first_queued is None else first_queued
        ) and first_queued_ok
        # Words per tile queue slot: the tile index, its tile_info, and with first_queued its
        # first n_block and bound code.
        self.tile_words = TILE_INFO_WORDS + (2 if self.first_queued else 0)
        self.rest_mask = rest_mask_default(n_bounds) if rest_mask is None else rest_mask
        if self.rest_mask not in ("bits", "bytes"):
            raise ValueError(f"rest_mask must be 'bits' or 'bytes', got {rest_mask!r}")
        if n_bounds not in (1, 2):  # byte masks for n = 1, 2 only; no effect otherwise
            self.rest_mask = "bits"
        if self.rest_mask == "bytes" and self.num_stages != 2:
            raise ValueError("rest_mask='bytes' alternates two buffers with the two K / V stages")
        # Byte masks: one buffer per consumer warpgroup and K / V stage.
        self.mask_words = 0
        if self.rest_mask == "bytes":
            self.mask_words = buffer_words(self.tile_n, n_bounds)
        self.mask_words_all = self.mask_words * NUM_CONSUMER_WARPGROUPS * self.num_stages
        assert self.tile_m == 64 * NUM_CONSUMER_WARPGROUPS
        self.num_mma_threads = THREADS_PER_WG * NUM_CONSUMER_WARPGROUPS
        self.num_threads = self.num_mma_threads + THREADS_PER_WG

    # ----------------------------------------------------------------------------------------
    # Host side
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,  # (b, s_q, h, d)
        mK: cute.Tensor,  # (b, s_k, h_kv, d)
        mV: cute.Tensor,  # (b, s_k, h_kv, d)
        mO: cute.Tensor,  # (b, s_q, h, d)
        mLSE: cute.Tensor,  # (b, h, s_q) fp32
        softmax_scale: Float32,
        mBounds: cute.Tensor | None,  # (b, hm, s_k, n) int32
        mPartialCnt: cute.Tensor | None,  # (b, hm, m_blocks) int32
        mPartialIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks) int32
        mFullCnt: cute.Tensor | None,  # (b, hm, m_blocks) int32
        mFullIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks) int32
        mPartialCode: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks) int32: bound codes
        max_ctas: Int32,  # persistent: the grid size (SM count); ignored otherwise
        mTileCounter: cute.Tensor | None,  # persistent: (1,) int32, zeroed; None otherwise
        stream: cuda.CUstream,
    ):
        # (b, s, h, d) -> (s, d, h, b): TMA tiles over (s, d).
        mQ, mK, mV, mO = [_select(t, [1, 3, 2, 0]) for t in (mQ, mK, mV, mO)]

        tiled_mma_qk = sm90_utils.make_trivial_tiled_mma(
            self.dtype,
            self.dtype,
            cute.nvgpu.OperandMajorMode.K,
            cute.nvgpu.OperandMajorMode.K,
            Float32,
            atom_layout_mnk=(NUM_CONSUMER_WARPGROUPS, 1, 1),
            tiler_mn=(64, self.tile_n),
        )
        tiled_mma_pv = sm90_utils.make_trivial_tiled_mma(
            self.dtype,
            self.dtype,
            cute.nvgpu.OperandMajorMode.K,
            cute.nvgpu.OperandMajorMode.MN,
            Float32,
            atom_layout_mnk=(NUM_CONSUMER_WARPGROUPS, 1, 1),
            tiler_mn=(64, self.head_dim),
            a_source=warpgroup.OperandSource.RMEM,
        )

        sO_layout = _smem_layout(self.dtype, self.tile_m, self.head_dim)
        sQ_layout = sO_layout
        if const_expr(self.q_stages > 1):
            sQ_layout = _smem_layout(self.dtype, self.tile_m, self.head_dim, self.q_stages)
        sK_layout = _smem_layout(self.dtype, self.tile_n, self.head_dim, self.num_stages)
        sV_layout = _smem_layout(self.dtype, self.tile_n, self.head_dim, self.num_stages)

        self.shared_storage = _shared_storage(
            self.dtype,
            self.num_stages,
            self.q_stages,
            sQ_layout,
            sK_layout,
            sV_layout,
            sO_layout,
            self.tile_words if self.persistent else 0,
            self.mask_words_all,
        )

        load_op = cpasync.CopyBulkTensorTileG2SOp()
        store_op = cpasync.CopyBulkTensorTileS2GOp()
        tma_atom_Q, tma_Q = cpasync.make_tiled_tma_atom(
            load_op, mQ, sO_layout, (self.tile_m, self.head_dim)
        )
        tma_atom_K, tma_K = cpasync.make_tiled_tma_atom(
            load_op, mK, cute.select(sK_layout, mode=[0, 1]), (self.tile_n, self.head_dim), 1
        )
        tma_atom_V, tma_V = cpasync.make_tiled_tma_atom(
            load_op, mV, cute.select(sV_layout, mode=[0, 1]), (self.tile_n, self.head_dim), 1
        )
        o_rows = self.tile_m if const_expr(self.o_store == "cta") else 64
        tma_atom_O, tma_O = cpasync.make_tiled_tma_atom(
            store_op, mO, _smem_layout(self.dtype, o_rows, self.head_dim), (o_rows, self.head_dim)
        )
        self.bytes_q = cute.size_in_bytes(self.dtype, sO_layout)
        self.bytes_kv = cute.size_in_bytes(self.dtype, cute.select(sK_layout, mode=[0, 1]))

        # Tiles in the order (m_block fastest, then head, then batch): Note [Persistent tiles].
        num_tiles = (
            cute.ceil_div(cute.size(mQ.shape[0]), self.tile_m)
            * cute.size(mQ.shape[2])
            * cute.size(mQ.shape[3])
        )
        grid = [cutlass.min(num_tiles, max_ctas), 1, 1]
        if const_expr(not self.persistent):
            grid = [
                cute.ceil_div(cute.size(mQ.shape[0]), self.tile_m),
                cute.size(mQ.shape[2]),
                cute.size(mQ.shape[3]),
            ]
        scale_log2 = softmax_scale * LOG2_E
        self.kernel(
            tma_Q,
            tma_K,
            tma_V,
            tma_O,
            mLSE,
            mBounds,
            mPartialCnt,
            mPartialIdx,
            mFullCnt,
            mFullIdx,
            mPartialCode,
            mTileCounter,
            tma_atom_Q,
            tma_atom_K,
            tma_atom_V,
            tma_atom_O,
            scale_log2,
            sQ_layout,
            sK_layout,
            sV_layout,
            tiled_mma_qk,
            tiled_mma_pv,
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
        mO: cute.Tensor,  # TMA view (s_q, d, h, b)
        mLSE: cute.Tensor,  # (b, h, s_q)
        mBounds: cute.Tensor | None,  # (b, hm, s_k, n)
        mPartialCnt: cute.Tensor | None,  # (b, hm, m_blocks)
        mPartialIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks)
        mFullCnt: cute.Tensor | None,  # (b, hm, m_blocks)
        mFullIdx: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks)
        mPartialCode: cute.Tensor | None,  # (b, hm, m_blocks, n_blocks)
        mTileCounter: cute.Tensor | None,  # (1,) tiles claimed beyond the first grid_x
        tma_atom_Q: cute.CopyAtom,
        tma_atom_K: cute.CopyAtom,
        tma_atom_V: cute.CopyAtom,
        tma_atom_O: cute.CopyAtom,
        scale_log2: Float32,
        sQ_layout: cute.ComposedLayout,
        sK_layout: cute.ComposedLayout,
        sV_layout: cute.ComposedLayout,
        tiled_mma_qk: cute.TiledMma,
        tiled_mma_pv: cute.TiledMma,
    ):
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        if warp_idx == 0:
            for atom in (tma_atom_Q, tma_atom_K, tma_atom_V, tma_atom_O):
                cpasync.prefetch_descriptor(atom)

        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(self.shared_storage)

        n_mma = self.num_mma_threads
        pipeline_q = tma_pipeline(storage.mbar_q.data_ptr(), self.q_stages, self.bytes_q, n_mma)
        pipeline_k = tma_pipeline(storage.mbar_k.data_ptr(), self.num_stages, self.bytes_kv, n_mma)
        pipeline_v = tma_pipeline(storage.mbar_v.data_ptr(), self.num_stages, self.bytes_kv, n_mma)
        queue = None
        if const_expr(self.persistent):
            queue = (
                tile_queue(storage.mbar_tile.data_ptr(), n_mma),
                storage.sTile.get_tensor(cute.make_layout((self.tile_words, TILE_QUEUE_STAGES))),
                mTileCounter,
            )
        cute.arch.mbarrier_init_fence()
        cute.arch.sync_threads()

        sQ = storage.sQ.get_tensor(sQ_layout.outer, swizzle=sQ_layout.inner)
        sK = storage.sK.get_tensor(sK_layout.outer, swizzle=sK_layout.inner)
        sV = storage.sV.get_tensor(sV_layout.outer, swizzle=sV_layout.inner)
        o_storage = storage.sO if const_expr(self.persistent) else storage.sQ
        sO_layout = sQ_layout  # one Q stage: O's layout (and buffer, unless persistent)
        if const_expr(self.q_stages > 1):
            sO_layout = _smem_layout(self.dtype, self.tile_m, self.head_dim)
        sO = o_storage.get_tensor(sO_layout.outer, swizzle=sO_layout.inner)
        if const_expr(self.o_store == "wg"):
            # (64, d, warpgroup): each warpgroup's rows in a 64-row TMA box of their own.
            sO_wg_layout = _smem_layout(self.dtype, 64, self.head_dim, NUM_CONSUMER_WARPGROUPS)
            sO = o_storage.get_tensor(sO_wg_layout.outer, swizzle=sO_wg_layout.inner)
        sMask = None
        if const_expr(self.mask_words > 0):
            sMask = storage.sMask.get_tensor(cute.make_layout(self.mask_words_all))

        # Tiles: this CTA's own one (grid = all tiles), or its first one and then whatever the
        # tile queue hands out (persistent).
        bidx, _, _ = cute.arch.block_idx()
        grid_x, _, _ = cute.arch.grid_dim()
        seqlen_q = mQ.shape[0]
        seqlen_k = mK.shape[0]
        num_tiles = cute.ceil_div(seqlen_q, self.tile_m) * mQ.shape[2] * mQ.shape[3]
        tiles = (bidx, num_tiles, grid_x, queue)
        lists = (mBounds, mPartialCnt, mPartialIdx, mFullCnt, mFullIdx, mPartialCode)

        if warp_idx < 4:
            cute.arch.setmaxregister_decrease(REGS_PRODUCER)
            if warp_idx == 0:
                self.load(
                    mQ,
                    mK,
                    mV,
                    sQ,
                    sK,
                    sV,
                    tma_atom_Q,
                    tma_atom_K,
                    tma_atom_V,
                    pipeline_q,
                    pipeline_k,
                    pipeline_v,
                    tiles,
                    lists,
                )
        else:
            cute.arch.setmaxregister_increase(REGS_CONSUMER)
            tidx, _, _ = cute.arch.thread_idx()
            self.mma(
                tiled_mma_qk,
                tiled_mma_pv,
                mO,
                mLSE,
                sQ,
                sK,
                sV,
                sO,
                tma_atom_O,
                pipeline_q,
                pipeline_k,
                pipeline_v,
                tidx - THREADS_PER_WG,
                scale_log2,
                tiles,
                (seqlen_q, seqlen_k, mQ.shape[2], mQ.shape[3]),
                lists,
                sMask,
            )

    @cute.jit
    def tile_coords(self, tile: Int32, sizes: tuple) -> tuple:
        """(m_block, head, batch) of a tile index (Note [Persistent tiles]). One CTA per tile:
        the CTA's own tile, from its (m_block, head, batch) grid coordinates."""
        seqlen_q, seqlen_k, num_heads, num_batch = sizes
        num_m_blocks = cute.ceil_div(seqlen_q, self.tile_m)
        m_block, head_batch = Int32(0), Int32(0)
        if const_expr(not self.persistent):
            bidx, head, batch = cute.arch.block_idx()
            m_block = num_m_blocks - 1 - bidx
            head_batch = head + batch * num_heads
        elif const_expr(self.order == "m"):
            head_batch = tile // num_m_blocks
            m_block = num_m_blocks - 1 - (tile - head_batch * num_m_blocks)
        else:
            # Groups of (batch, head) pairs whose K and V fit in L2 together; inside a group,
            # the last m_blocks of every pair first.
            kv_bytes = seqlen_k * (4 * self.head_dim)
            group = cutlass.max(L2_KV_BUDGET_BYTES // cutlass.max(kv_bytes, 1), 1)
            num_pairs = num_heads * num_batch
            group_tiles = group * num_m_blocks
            group_idx = tile // group_tiles
            first_pair = group_idx * group
            size = cutlass.min(group, num_pairs - first_pair)
            r = tile - group_idx * group_tiles
            m_rev = r // size
            m_block = num_m_blocks - 1 - m_rev
            head_batch = first_pair + (r - m_rev * size)
        batch = head_batch // num_heads
        return m_block, head_batch - batch * num_heads, batch

    @cute.jit
    def tile_info(self, tile: Int32, sizes: tuple, lists: tuple) -> tuple:
        """What a tile's producer and consumers need to know about it, as one tuple of Int32:
        ``(m_block, head, batch, mask_head, n_partial, n_total)``. Persistent kernels compute it
        once, in the producer warp, and hand it out through the tile queue (its divisions and
        the list-count loads then stay out of the consumers' path between two tiles)."""
        seqlen_q, seqlen_k, num_heads, _ = sizes
        m_block, head, batch = self.tile_coords(tile, sizes)
        head_m = Int32(0)
        n_total = Int32(0)
        n_partial = Int32(0)
        if const_expr(self.has_lists):
            head_m, n_partial, n_total = list_counts(lists[1:5], batch, head, num_heads, m_block)
        else:
            n_block_max = cute.ceil_div(seqlen_k, self.tile_n)
            n_partial = Int32(1)
            if const_expr(self.causal):
                # Columns visible to the last row of the tile: j <= (m_block+1)*tile_m - 1 + off.
                last = (m_block + 1) * self.tile_m + seqlen_k - seqlen_q
                n_block_max = cutlass.min(
                    n_block_max, (cutlass.max(last, 0) + self.tile_n - 1) // self.tile_n
                )
                # n_blocks below this one are visible to every row of the tile.
                first = m_block * self.tile_m + seqlen_k - seqlen_q + 1
                n_no_mask = cutlass.max(first, 0) // self.tile_n
                n_partial = cutlass.max(n_block_max - n_no_mask, 1)
            n_total = cutlass.max(n_block_max, 0)
            n_partial = cutlass.min(n_partial, n_total)
        return (m_block, head, batch, head_m, n_partial, n_total)

    @cute.jit
    def tile_blocks(self, info: tuple, lists: tuple) -> tuple:
        """The n_blocks of one tile (``info`` from :meth:`tile_info`): (n_total, n_partial,
        partial list, full list) for :meth:`n_block_at`, and the (s_k, n) bounds of its
        (batch, mask head)."""
        m_block, _, batch, head_m, n_partial, n_total = info
        mPIdx = None
        mFIdx = None
        mPCode = None
        mBoundsCur = None
        if const_expr(self.has_lists):
            mPIdx, mFIdx = list_idx_rows(lists[1:5], batch, head_m, m_block)
            mBoundsCur = lists[0][batch, head_m, None, None]
            if const_expr(self.mask_impl == "codes"):
                mPCode = lists[5][batch, head_m, m_block, None]
        return (n_total, n_partial, mPIdx, mFIdx, mPCode), mBoundsCur

    @cute.jit
    def n_block_at(self, i: Int32, blocks: tuple) -> Int32:
        """The i-th n_block of this m_block's sequence (partial ones first, each descending)."""
        n_total, n_partial, mPIdx, mFIdx = blocks[:4]
        n_block = Int32(0)
        if const_expr(self.has_lists):
            if i < n_partial:
                n_block = mPIdx[n_partial - 1 - i]
            else:
                n_block = mFIdx[n_total - 1 - i]
        else:
            n_block = n_total - 1 - i
        return n_block

    @cute.jit
    def code_at(self, i: Int32, blocks: tuple) -> Int32 | None:
        """mask_impl "codes": the bound code of the i-th n_block if it is a partial one (i <
        n_partial; other i read a valid slot and get a meaningless code). None otherwise."""
        code = None
        if const_expr(self.mask_impl == "codes"):
            n_partial, mPCode = blocks[1], blocks[4]
            code = mPCode[cutlass.max(n_partial - 1 - i, 0)]
        return code

    # ----------------------------------------------------------------------------------------
    # Producer warp
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def load(
        self,
        mQ: cute.Tensor,  # TMA view (s_q, d, h, b)
        mK: cute.Tensor,  # TMA view (s_k, d, h_kv, b)
        mV: cute.Tensor,  # TMA view (s_k, d, h_kv, b)
        sQ: cute.Tensor,  # (tile_m, d)
        sK: cute.Tensor,  # (tile_n, d, stages)
        sV: cute.Tensor,  # (tile_n, d, stages)
        tma_atom_Q: cute.CopyAtom,
        tma_atom_K: cute.CopyAtom,
        tma_atom_V: cute.CopyAtom,
        pipeline_q: pipeline.PipelineAsync,
        pipeline_k: pipeline.PipelineAsync,
        pipeline_v: pipeline.PipelineAsync,
        tiles: tuple,  # (first tile, number of tiles, grid size, tile queue or None)
        lists: tuple,  # bounds and tile lists (None without bounds)
    ):
        tile, num_tiles, grid_x, queue = tiles
        kv_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.num_stages)
        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, self.q_stages)
        env = (mQ, mK, mV, sQ, sK, sV, tma_atom_Q, tma_atom_K, tma_atom_V)
        pipes = (pipeline_q, pipeline_k, pipeline_v)
        sizes = (mQ.shape[0], mK.shape[0], mQ.shape[2], mQ.shape[3])
        if const_expr(self.persistent):
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Producer, TILE_QUEUE_STAGES
            )
            m_block, head, batch, head_m, n_partial, n_total = self.tile_info(tile, sizes, lists)
            # q_ahead (Note [Q ahead]): whether this tile's Q went out with the last tile, and,
            # with k_ahead, its first n_block (first_queued: and that block's bound code), read
            # during the last tile.
            q_ready = Boolean(False)
            n_block0 = Int32(0)
            code0 = Int32(0)
            if const_expr(self.k_ahead):
                n_block0, code0 = self.info_first(
                    (m_block, head, batch, head_m, n_partial, n_total), lists
                )
            while tile < num_tiles:
                info = (m_block, head, batch, head_m, n_partial, n_total)
                words = (tile, *info)
                if const_expr(self.first_queued):
                    words = (*words, n_block0, code0)
                push_tile(queue[0], tile_state, queue[1], words)
                tile_state.advance()
                next_tile = tile + grid_x
                views = self.tile_views(info, env, lists)
                claimed = None
                if const_expr(self.claim == "early"):
                    # Claimed now, used after this tile's loads: the atomic's latency is hidden
                    # (k_ahead: its result is waited for only after the first K).
                    claimed = claim_issue(queue[2])
                    if const_expr(not self.k_ahead):
                        next_tile = claim_result(claimed, grid_x)
                if const_expr(not self.k_ahead):
                    n_block0 = self.first_n_block(views[0])
                q_state, kv_state = self.load_tile_head(
                    views, n_block0, q_state, kv_state, pipes, env, not q_ready
                )
                if const_expr(self.claim == "early" and self.k_ahead):
                    next_tile = claim_result(claimed, grid_x)
                info_nx = None
                if const_expr(self.q_ahead):
                    info_nx = self.next_tile_info(next_tile, num_tiles, sizes, lists)
                    q_ready = info_nx[5] > 0
                if const_expr(self.k_ahead):
                    # Read now, used by the next tile's first K (and, first_queued, pushed).
                    n_block0_nx, code0_nx = self.info_first(info_nx, lists)
                q_state, kv_state = self.load_tile_rest(
                    views, n_block0, q_state, kv_state, pipes, env, info_nx
                )
                if const_expr(self.claim == "late"):
                    next_tile = claim_tile(queue[2], grid_x)
                if const_expr(not self.q_ahead):
                    info_nx = self.next_tile_info(next_tile, num_tiles, sizes, lists)
                if const_expr(self.k_ahead):
                    n_block0 = n_block0_nx
                if const_expr(self.first_queued):
                    code0 = code0_nx
                tile = next_tile
                m_block, head, batch, head_m, n_partial, n_total = info_nx
            # Past the end: the consumers stop.
            push_tile(queue[0], tile_state, queue[1], (tile,) + (Int32(0),) * (self.tile_words - 1))
        else:
            self.load_tile(self.tile_info(tile, sizes, lists), q_state, kv_state, env, pipes, lists)

    @cute.jit
    def load_tile(
        self,
        info: tuple,  # from tile_info
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        env: tuple,  # (mQ, mK, mV, sQ, sK, sV, tma_atom_Q, tma_atom_K, tma_atom_V)
        pipes: tuple,  # (pipeline_q, pipeline_k, pipeline_v)
        lists: tuple,
    ) -> tuple:
        """Producer: the TMA loads of one tile (Q, then K and V of each n_block)."""
        views = self.tile_views(info, env, lists)
        n_block0 = self.first_n_block(views[0])
        q_state, kv_state = self.load_tile_head(views, n_block0, q_state, kv_state, pipes, env)
        return self.load_tile_rest(views, n_block0, q_state, kv_state, pipes, env)

    @cute.jit
    def tile_views(self, info: tuple, env: tuple, lists: tuple) -> tuple:
        """Producer: (blocks, tQgQ, tQsQ, tKgK, tKsK, tVgV, tVsV) of one tile: its n_blocks
        (:meth:`tile_blocks`) and its TMA source / destination views."""
        mQ, mK, mV, _, sK, sV, _, tma_atom_K, tma_atom_V = env
        num_heads = mQ.shape[2]
        cta_layout = cute.make_layout(1)
        head, batch = info[1], info[2]
        blocks, _ = self.tile_blocks(info, lists)
        head_kv = head // (num_heads // mK.shape[2])
        tQsQ, tQgQ = self.q_views(info, env)
        gK = cute.local_tile(
            mK[None, None, head_kv, batch], (self.tile_n, self.head_dim), (None, 0)
        )
        gV = cute.local_tile(
            mV[None, None, head_kv, batch], (self.tile_n, self.head_dim), (None, 0)
        )
        tKsK, tKgK = cpasync.tma_partition(
            tma_atom_K, 0, cta_layout, cute.group_modes(sK, 0, 2), cute.group_modes(gK, 0, 2)
        )
        tVsV, tVgV = cpasync.tma_partition(
            tma_atom_V, 0, cta_layout, cute.group_modes(sV, 0, 2), cute.group_modes(gV, 0, 2)
        )
        return blocks, tQgQ, tQsQ, tKgK, tKsK, tVgV, tVsV

    @cute.jit
    def q_views(self, info: tuple, env: tuple) -> tuple:
        """Producer: (tQsQ, tQgQ), the TMA destination / source views of a tile's Q (``info``
        from :meth:`tile_info`)."""
        mQ, sQ, tma_atom_Q = env[0], env[3], env[6]
        gQ = cute.local_tile(
            mQ[None, None, info[1], info[2]], (self.tile_m, self.head_dim), (info[0], 0)
        )
        return cpasync.tma_partition(
            tma_atom_Q,
            0,
            cute.make_layout(1),
            cute.group_modes(sQ, 0, 2),
            cute.group_modes(gQ, 0, 2),
        )

    @cute.jit
    def info_first(self, info: tuple, lists: tuple) -> tuple:
        """(:meth:`first_n_block`, bound code of that block or 0) of the tile of ``info`` (from
        :meth:`tile_info`); the code only with first_queued, and only meaningful if the tile
        has a partial block."""
        blocks = self.tile_blocks(info, lists)[0]
        code = Int32(0)
        if const_expr(self.first_queued and self.mask_impl == "codes"):
            code = self.code_at(Int32(0), blocks)
        return self.first_n_block(blocks), code

    @cute.jit
    def first_n_block(self, blocks: tuple) -> Int32:
        """A tile's first n_block (0 for a tile with no visible key: its lists are empty)."""
        n_block0 = Int32(0)
        if blocks[0] > 0:
            n_block0 = self.n_block_at(Int32(0), blocks)
        return n_block0

    @cute.jit
    def load_tile_head(
        self,
        views: tuple,  # from tile_views
        n_block0: Int32,  # from first_n_block
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipes: tuple,
        env: tuple,
        load_q: Boolean | bool = True,  # q_ahead: False if this tile's Q is already issued
    ) -> tuple:
        """Producer: a tile's Q and first K (nothing for a tile with no visible key)."""
        blocks, tQgQ, tQsQ, tKgK, tKsK = views[:5]
        pipeline_q, pipeline_k, _ = pipes
        tma_atom_Q, tma_atom_K = env[6], env[7]
        # A tile with no visible key loads nothing (its consumers write zeros and -inf).
        if blocks[0] > 0:
            if const_expr(self.q_stages > 1):  # noqa: SIM102 (constexpr apart)
                # tile_overlap: Q's stage was freed a tile ago, and the consumers need this Q
                # as early as the first K (Note [Tile overlap]): Q first.
                if load_q:
                    q_state = self.load_q_staged(q_state, (pipeline_q, tma_atom_Q, tQsQ), tQgQ)
            tma_load(pipeline_k, kv_state, tma_atom_K, tKgK, tKsK, n_block0)
            if const_expr(self.q_stages == 1):
                # Persistent: waits until the consumers are done with the last tile's Q.
                tma_load(pipeline_q, q_state, tma_atom_Q, tQgQ, tQsQ, staged=False)
                q_state.advance()
        return q_state, kv_state

    @cute.jit
    def load_tile_rest(
        self,
        views: tuple,  # from tile_views
        n_block0: Int32,
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipes: tuple,
        env: tuple,
        info_nx: tuple | None = None,  # q_ahead: the next tile's tile_info (n_total 0: none)
    ) -> tuple:
        """Producer: a tile's other K and every V, after :meth:`load_tile_head`; with
        ``info_nx`` also the next tile's Q (Note [Q ahead])."""
        blocks, _, tQsQ, tKgK, tKsK, tVgV, tVsV = views
        pipeline_q, pipeline_k, pipeline_v = pipes
        tma_atom_Q, tma_atom_K, tma_atom_V = env[6], env[7], env[8]
        n_total = blocks[0]
        ahead = info_nx is not None
        tQgQ_nx = None
        n_total_nx = Int32(0)
        if const_expr(ahead):
            n_total_nx = info_nx[5]
            tQgQ_nx = self.q_views(info_nx, env)[1]
        q_env = (pipeline_q, tma_atom_Q, tQsQ)
        if n_total > 0:
            n_block = n_block0
            # K of block i goes out before V of block i - 1: the consumers' next Q K^T is
            # issued before the current P V (intra-warpgroup overlap).
            for i in cutlass.range(1, n_total, unroll=1):
                n_block_prev = n_block
                n_block = self.n_block_at(i, blocks)
                state_prev = kv_state.clone()
                kv_state.advance()
                tma_load(pipeline_k, kv_state, tma_atom_K, tKgK, tKsK, n_block)
                tma_load(pipeline_v, state_prev, tma_atom_V, tVgV, tVsV, n_block_prev)
                if const_expr(ahead):  # noqa: SIM102 (constexpr apart)
                    # Note [Q ahead]: after the second K, whose stage frees as the last
                    # tile's final Q K^T completes, about when its Q stage frees too.
                    if i == 1 and n_total_nx > 0:
                        q_state = self.load_q_staged(q_state, q_env, tQgQ_nx)
            if const_expr(ahead):  # noqa: SIM102 (constexpr apart)
                if n_total == 1 and n_total_nx > 0:
                    q_state = self.load_q_staged(q_state, q_env, tQgQ_nx)
            tma_load(pipeline_v, kv_state, tma_atom_V, tVgV, tVsV, n_block)
            kv_state.advance()
        elif const_expr(ahead):  # noqa: SIM102 (constexpr apart)
            if n_total_nx > 0:
                q_state = self.load_q_staged(q_state, q_env, tQgQ_nx)
        return q_state, kv_state

    @cute.jit
    def load_q_staged(
        self, q_state: pipeline.PipelineState, q_env: tuple, tQgQ: cute.Tensor
    ) -> pipeline.PipelineState:
        """Producer: one tile's Q into its stage (two Q stages); the state after it."""
        pipeline_q, tma_atom_Q, tQsQ = q_env
        tma_load(pipeline_q, q_state, tma_atom_Q, tQgQ, tQsQ, staged=True)
        nxt = q_state.clone()
        nxt.advance()
        return nxt

    @cute.jit
    def next_tile_info(self, tile: Int32, num_tiles: Int32, sizes: tuple, lists: tuple) -> tuple:
        """:meth:`tile_info` of ``tile``, or, past the last tile, of the last one with n_total
        0 (its list counts are read in bounds and it loads nothing)."""
        m_block, head, batch, head_m, n_partial, n_total = self.tile_info(
            cutlass.min(tile, num_tiles - 1), sizes, lists
        )
        if tile >= num_tiles:
            n_total = Int32(0)
        return (m_block, head, batch, head_m, n_partial, n_total)

    # Note [Q ahead]
    #     With tile_overlap the consumers need the next tile's Q at the tile boundary (its
    #     first Q K^T goes out with this tile's last P V). The producer used to issue it after
    #     all of this tile's loads, behind the last V (whose stage frees only after the
    #     second-to-last P V), the next tile's list counts, the tile queue and the claim's
    #     atomic: on short rows the Q load (from DRAM, read once) had not landed by then. H100,
    #     ncu source counters, sliding_window 8K: 8% of all warp samples were the consumers'
    #     wait for that Q. With ``q_ahead`` the producer computes the next tile's tile_info as
    #     soon as the tile is claimed and issues its Q right after this tile's second K (or
    #     before the last V of a one-block tile; at once for a tile with no visible key). The
    #     second K's stage frees when the last tile's final Q K^T completes, which is about when
    #     the consumers release that tile's Q stage, the one the next Q takes, so the wait for
    #     it is short and holds up no K or V load that could go out earlier.

    # Note [First block queued]
    #     At the tile boundary (:meth:`boundary_step`) the consumers make the next tile's first
    #     mask bits before its first Q K^T. Read from the lists, they wait for two dependent
    #     global loads: the partial list's first entry and its bound code, then the bound words
    #     the code selects. With k_ahead the producer has already read that n_block during the
    #     last tile; with ``first_queued`` it also reads the bound code there and pushes both
    #     with the tile (two more words per queue slot), so only the bound words are loaded on
    #     the consumers' path. A tile with no partial block gets a meaningless code, unused.

    # ----------------------------------------------------------------------------------------
    # Consumer warpgroups
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def mma(
        self,
        tiled_mma_qk: cute.TiledMma,
        tiled_mma_pv: cute.TiledMma,
        mO: cute.Tensor,  # TMA view (s_q, d, h, b)
        mLSE: cute.Tensor,  # (b, h, s_q)
        sQ: cute.Tensor,  # (tile_m, d)
        sK: cute.Tensor,  # (tile_n, d, stages)
        sV: cute.Tensor,  # (tile_n, d, stages)
        sO: cute.Tensor,  # (tile_m, d) or, o_store "wg", (64, d, 2); aliases sQ if not persistent
        tma_atom_O: cute.CopyAtom,
        pipeline_q: pipeline.PipelineAsync,
        pipeline_k: pipeline.PipelineAsync,
        pipeline_v: pipeline.PipelineAsync,
        tidx: Int32,  # 0 .. num_mma_threads - 1
        scale_log2: Float32,
        tiles: tuple,  # (first tile, number of tiles, grid size, tile queue or None)
        sizes: tuple,  # (seqlen_q, seqlen_k, num_heads, batch)
        lists: tuple,  # bounds and tile lists (None without bounds)
        sMask: cute.Tensor | None = None,  # byte masks' buffers (Note [Byte masks])
    ):
        tile, num_tiles, queue = tiles[0], tiles[1], tiles[3]
        wg_idx = cute.arch.make_warp_uniform(tidx // THREADS_PER_WG)
        wg_mma_qk = tiled_mma_qk.get_slice(wg_idx * THREADS_PER_WG)
        wg_mma_pv = tiled_mma_pv.get_slice(wg_idx * THREADS_PER_WG)
        thr_mma_qk = tiled_mma_qk.get_slice(tidx)
        thr_mma_pv = tiled_mma_pv.get_slice(tidx)
        tSrQ = wg_mma_qk.make_fragment_A(wg_mma_qk.partition_A(sQ))
        tSrK = wg_mma_qk.make_fragment_B(wg_mma_qk.partition_B(sK))
        if const_expr(self.qk_desc == "words"):
            # Note [Descriptors per tile]. The high words: one per operand, each made
            # opaque with a different run-time zero (lengths are >= 0).
            self.q_offs = k_block_offsets(tSrQ)
            self.k_offs = k_block_offsets(tSrK)
            self.k_stage_off = cute.crd2idx((0, 0, 0, 1), tSrK.layout)
            tSrQ_0 = tSrQ[None, None, None, 0] if const_expr(self.q_stages > 1) else tSrQ
            self.q_hi = desc_words(tSrQ_0[None, None, 0], sizes[0] >> 31)[1]
            k_lo, self.k_hi = desc_words(tSrK[None, None, 0, 0], sizes[1] >> 31)
            tSrK = k_lo
        sVt = _transpose_view(sV)
        tOrVt = wg_mma_pv.make_fragment_B(wg_mma_pv.partition_B(sVt))
        tOrP = wg_mma_pv.make_fragment_A(wg_mma_pv.partition_shape_A((self.tile_m, self.tile_n)))
        acc_shape_S = wg_mma_qk.partition_shape_C((self.tile_m, self.tile_n))
        acc_O = cute.make_rmem_tensor(
            wg_mma_pv.partition_shape_C((self.tile_m, self.head_dim)), Float32
        )
        cS = cute.make_identity_tensor((self.tile_m, self.tile_n))
        tScS_mn = acc_to_mn(thr_mma_qk.partition_C(cS))
        # This thread's (row, column) offsets within its fragment: static (thread 0's, whose
        # coordinates are compile-time constants; every thread's differ by one (row, col) shift).
        tScS0_mn = acc_to_mn(tiled_mma_qk.get_slice(0).partition_C(cS))
        self.row_offs = [tScS0_mn[r, 0][0] for r in range(cute.size(tScS0_mn, mode=[0]))]
        self.col_offs = [tScS0_mn[0, c][1] for c in range(cute.size(tScS0_mn, mode=[1]))]

        if const_expr(self.mask_words > 0):
            self.byte_env(sMask, tScS_mn, wg_idx, tidx)
        softmax = OnlineSoftmax(scale_log2, cute.size(tScS_mn, mode=[0]))
        # Factor still owed to O (used when O is rescaled just before the next P V).
        o_scale = cute.make_rmem_tensor(cute.size(tScS_mn, mode=[0]), Float32)

        # Ping-pong: the first warpgroup starts with its barrier already half-arrived. Both
        # warpgroups pass the barriers equally often per tile, so this carries over tiles.
        if wg_idx == 0:
            cute.arch.barrier_arrive(
                barrier_id=int(NamedBarrierFwd.WarpSchedulerWG1),
                number_of_threads=2 * THREADS_PER_WG,
            )

        q_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, self.q_stages)
        kv_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, self.num_stages)
        env = (
            tSrQ,
            tSrK,
            tOrVt,
            tOrP,
            acc_O,
            acc_shape_S,
            tScS_mn,
            softmax,
            wg_idx,
            tiled_mma_qk,
            tiled_mma_pv,
            pipeline_k,
            pipeline_v,
            o_scale,
        )
        out = (mO, mLSE, sO, tma_atom_O, thr_mma_pv, tidx)
        if const_expr(self.persistent):
            tile_state = pipeline.make_pipeline_state(
                pipeline.PipelineUserType.Consumer, TILE_QUEUE_STAGES
            )
            tile, *info = pop_tile(queue[0], tile_state, queue[1], self.tile_words)
            tile_state.advance()
            if const_expr(self.tile_overlap):
                tiles_ctx = (num_tiles, queue, tile_state)
                self.mma_tiles_overlapped(
                    tile, info, tiles_ctx, q_state, kv_state, pipeline_q, env, out, sizes, lists
                )
            else:
                m_block, head, batch, head_m, n_partial, n_total = info[:6]
                while tile < num_tiles:
                    info = (m_block, head, batch, head_m, n_partial, n_total)
                    q_state, kv_state = self.mma_epilogue_tile(
                        info, q_state, kv_state, pipeline_q, env, out, sizes, lists
                    )
                    tile, *info = pop_tile(queue[0], tile_state, queue[1], self.tile_words)
                    m_block, head, batch, head_m, n_partial, n_total = info[:6]
                    tile_state.advance()
            # The last O store must have read sO before the CTA exits.
            if tidx % self.o_store_threads() == 0:  # the thread that issued the stores
                cute.arch.cp_async_bulk_wait_group(0, read=True)
        else:
            info = self.tile_info(tile, sizes, lists)
            self.mma_epilogue_tile(info, q_state, kv_state, pipeline_q, env, out, sizes, lists)

    @cute.jit
    def mma_epilogue_tile(
        self,
        info: tuple,  # from tile_info
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipeline_q: pipeline.PipelineAsync,
        env: tuple,  # fragments, accumulators, MMAs, pipelines (see :meth:`mma`)
        out: tuple,  # (mO, mLSE, sO, tma_atom_O, thr_mma_pv, tidx)
        sizes: tuple,  # (seqlen_q, seqlen_k, num_heads, batch)
        lists: tuple,
    ) -> tuple:
        """Consumers: one tile, from its first Q K^T to the TMA store of O and lse."""
        softmax = env[7]
        blocks, ctx = self.tile_ctx(info, q_state, env, sizes, lists)
        q_state, kv_state = self.mma_tile(q_state, kv_state, pipeline_q, blocks, ctx)
        row_scale = softmax.finalize()
        self.finish_tile(info, row_scale, softmax.row_sum, env, out, sizes)
        return q_state, kv_state

    @cute.jit
    def tile_ctx(
        self,
        info: tuple,  # from tile_info
        q_state: pipeline.PipelineState,  # the tile's Q stage
        env: tuple,
        sizes: tuple,
        lists: tuple,
        first: tuple | None = None,  # first_queued: (first n_block, its bound code), queued
    ) -> tuple:
        """A tile's n_blocks (:meth:`tile_blocks`, with ``first`` appended if given: see
        :meth:`first_at`) and ``ctx``: ``env`` with the tile's Q stage (ctx[0]) and its bounds,
        m_block and lengths after the softmax (ctx[8:12])."""
        blocks, mBoundsCur = self.tile_blocks(info, lists)
        if const_expr(first is not None):
            blocks = (*blocks, first)
        tSrQ = env[0]
        if const_expr(self.q_stages > 1):
            tSrQ = env[0][None, None, None, q_state.index]
        if const_expr(self.qk_desc == "words"):
            tSrQ = desc_words(tSrQ[None, None, 0], Int32(0))[0]
        ctx = (tSrQ, *env[1:8], mBoundsCur, info[0], sizes[0], sizes[1], *env[8:])
        return blocks, ctx

    @cute.jit
    def finish_tile(
        self,
        info: tuple,  # the finished tile's, from tile_info
        row_scale: cute.Tensor,  # 1 / row sum (from OnlineSoftmax.finalize)
        lse: cute.Tensor,
        env: tuple,
        out: tuple,  # (mO, mLSE, sO, tma_atom_O, thr_mma_pv, tidx)
        sizes: tuple,
    ) -> None:
        """Normalise O and store it and lse (the epilogue of the tile ``info``)."""
        acc_O, softmax, tiled_mma_pv = env[4], env[7], env[10]
        mO, mLSE, sO, tma_atom_O, thr_mma_pv, tidx = out
        softmax.rescale_o(acc_O, row_scale)
        self.epilogue(
            acc_O,
            lse,
            mO,
            mLSE,
            sO,
            tma_atom_O,
            tiled_mma_pv,
            thr_mma_pv,
            tidx,
            info[0],
            info[1],
            info[2],
            sizes[0],
        )

    @cute.jit
    def mma_tile(
        self,
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipeline_q: pipeline.PipelineAsync,
        blocks: tuple,
        ctx: tuple,
    ) -> tuple:
        """Every n_block of one tile: O (unnormalised) and the row statistics in registers."""
        n_total = blocks[0]
        acc_O, softmax, o_scale = ctx[4], ctx[7], ctx[17]
        softmax.reset()
        if const_expr(self.o_zero == "fill"):
            acc_O.fill(0.0)
        o_scale.fill(1.0)
        if n_total > 0:
            kv_state = self.first_block(q_state, kv_state, pipeline_q, blocks, ctx)
            kv_state = self.rest_blocks(kv_state, blocks, ctx)
            if const_expr(self.persistent):
                # Every Q K^T of this tile is complete: the producer may load the next Q (O has
                # its own buffer; otherwise Q's buffer holds O until the CTA ends).
                pipeline_q.consumer_release(q_state)
            q_state.advance()
            kv_state = self.last_pv(kv_state, ctx, n_total)
        elif const_expr(self.o_zero == "pv"):
            acc_O.fill(0.0)  # no P V wrote it
        return q_state, kv_state

    @cute.jit
    def first_block(
        self,
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipeline_q: pipeline.PipelineAsync,
        blocks: tuple,
        ctx: tuple,
    ) -> pipeline.PipelineState:
        """A tile's first block (n_total > 0): S only, softmax, P; its P V is issued together
        with the next block's Q K^T."""
        n_partial = blocks[1]
        tSrQ, tSrK, tOrP, acc_shape_S, softmax = ctx[0], ctx[1], ctx[3], ctx[5], ctx[7]
        tiled_mma_qk, pipeline_k = ctx[13], ctx[15]
        pipeline_q.consumer_wait(q_state)
        n_block, code = self.first_at(blocks)
        bits = None
        if const_expr(self.first_bits == "early"):
            bits = self.first_mask_bits(n_partial, n_block, ctx, code)
        pipeline_k.consumer_wait(kv_state)
        acc_S = cute.make_rmem_tensor(acc_shape_S, Float32)
        self.gemm_qk(acc_S, tSrQ, tSrK, tiled_mma_qk, kv_state.index)
        if const_expr(self.first_bits == "after_gemm"):
            bits = self.first_mask_bits(n_partial, n_block, ctx, code)
        warpgroup.wait_group(0)
        pipeline_k.consumer_release(kv_state)
        if n_partial > 0:
            apply_mask_bits(acc_S, bits)
        softmax.step(acc_S, is_first=True)
        self.convert_p(acc_S, tOrP, self.use_asm_cvt(True))
        return kv_state

    @cute.jit
    def first_at(self, blocks: tuple) -> tuple:
        """(n_block, bound code or None) of a tile's first block: from the tile queue with
        first_queued (``blocks`` from :meth:`tile_ctx` with ``first``), else from the lists."""
        if const_expr(self.first_queued):
            n_block, code = blocks[5]
            if const_expr(self.mask_impl != "codes"):
                code = None
        else:
            n_block = self.n_block_at(Int32(0), blocks)
            code = self.code_at(Int32(0), blocks)
        return n_block, code

    @cute.jit
    def first_mask_bits(
        self,
        n_partial: Int32,
        n_block: Int32,
        ctx: tuple,
        code: Int32 | None = None,
        guard: cutlass.Constexpr[bool] = False,
    ) -> cute.Tensor:
        """Mask bits of a tile's first block, used only if ``n_partial > 0`` (the block is
        partial); with ``first_guard`` or ``guard`` they are made only then (zeros otherwise)."""
        if const_expr(self.first_guard or guard):
            bits = cute.make_rmem_tensor(len(self.row_offs), Int32)
            bits.fill(0)
            if n_partial > 0:
                bits.store(
                    self.tile_mask_finish(
                        n_block, self.tile_mask_words(n_block, ctx), ctx, code
                    ).load()
                )
        else:
            bits = self.tile_mask_finish(n_block, self.tile_mask_words(n_block, ctx), ctx, code)
        return bits

    @cute.jit
    def rest_blocks(
        self, kv_state: pipeline.PipelineState, blocks: tuple, ctx: tuple
    ) -> pipeline.PipelineState:
        """Blocks 1 .. n_total - 1 of a tile, each Q K^T with the previous block's P V: the
        partial ones (element-wise mask), then the unmasked ones (no mask work at all)."""
        n_total, n_partial = blocks[0], blocks[1]
        if const_expr(self.rest_mask == "bytes"):
            kv_state = self.rest_partial_bytes(kv_state, blocks, ctx)
        else:
            kv_state = self.rest_partial_bits(kv_state, blocks, ctx)
        for i in cutlass.range(cutlass.max(n_partial, 1), n_total, unroll=1):
            n_block = self.n_block_at(i, blocks)
            kv_state = self.mma_one_n_block(kv_state, n_block, False, ctx, i=i)
        return kv_state

    @cute.jit
    def rest_partial_bytes(
        self, kv_state: pipeline.PipelineState, blocks: tuple, ctx: tuple
    ) -> pipeline.PipelineState:
        """Partial blocks 1 .. n_partial - 1 of a tile, masked from bytes (Note [Byte
        masks])."""
        n_total, n_partial = blocks[0], blocks[1]
        # Note [Byte masks]: block 1's column bounds and, always a block ahead, the next
        # ones'; each block stores the next block's bytes.
        n_block = self.n_block_at(cutlass.min(1, n_total - 1), blocks)
        n_block_next = self.n_block_at(cutlass.min(2, n_total - 1), blocks)
        first = cute.make_rmem_tensor(self.n_bounds, Int32)
        ahead = cute.make_rmem_tensor(self.n_bounds, Int32)
        if n_partial > 1:
            self.byte_fetch(first, n_block, ctx)
            self.byte_fetch(ahead, n_block_next, ctx)
        for i in cutlass.range(1, n_partial, unroll=1):
            n_block_2 = self.n_block_at(cutlass.min(i + 2, n_total - 1), blocks)
            step = (first, ahead, n_block_next, n_block_2, i == 1)
            kv_state = self.mma_one_n_block(kv_state, n_block, True, ctx, byte_masks=step, i=i)
            n_block = n_block_next
            n_block_next = n_block_2
        return kv_state

    @cute.jit
    def rest_partial_bits(
        self, kv_state: pipeline.PipelineState, blocks: tuple, ctx: tuple
    ) -> pipeline.PipelineState:
        """Partial blocks 1 .. n_partial - 1 of a tile, masked from bit words."""
        n_total, n_partial = blocks[0], blocks[1]
        if const_expr(self.mask_impl == "codes"):
            # As v2, with the bound code read one block ahead too.
            n_block = self.n_block_at(cutlass.min(1, n_total - 1), blocks)
            code = self.code_at(cutlass.min(1, n_partial - 1), blocks)
            words = None
            if const_expr(self.bound_prefetch):
                # bound_prefetch: block 1's words now, each next one's a block ahead.
                words = cute.make_rmem_tensor(len(self.col_offs) * self.n_bounds, Int32)
                if n_partial > 1:
                    self.load_code_words_at(words, n_block, code, ctx)
            for i in cutlass.range(1, n_partial, unroll=1):
                n_block_next = self.n_block_at(cutlass.min(i + 1, n_total - 1), blocks)
                code_next = self.code_at(cutlass.min(i + 1, n_partial - 1), blocks)
                prefetch = None
                if const_expr(self.bound_prefetch):
                    prefetch = (words, n_block_next, code_next, i + 1 < n_partial)
                kv_state = self.mma_one_n_block(kv_state, n_block, True, ctx, code, prefetch, i=i)
                n_block = n_block_next
                code = code_next
        elif const_expr(self.mask_impl == "v2"):
            # The next partial block's index is read one block ahead: its bounds' loads
            # then wait for one global load, not two.
            n_block = self.n_block_at(cutlass.min(1, n_total - 1), blocks)
            for i in cutlass.range(1, n_partial, unroll=1):
                n_block_next = self.n_block_at(cutlass.min(i + 1, n_total - 1), blocks)
                kv_state = self.mma_one_n_block(kv_state, n_block, True, ctx, i=i)
                n_block = n_block_next
        else:
            for i in cutlass.range(1, n_partial, unroll=1):
                n_block = self.n_block_at(i, blocks)
                kv_state = self.mma_one_n_block(kv_state, n_block, True, ctx, i=i)
        return kv_state

    def pv_accumulate(self, not_first: cutlass.Boolean) -> cutlass.Boolean | None:
        """o_zero "pv": whether a P V adds to O (not the tile's first, which overwrites it);
        None (always adds) with o_zero "fill" (O zeroed at the tile's start)."""
        return not_first if const_expr(self.o_zero == "pv") else None

    @cute.jit
    def last_pv(
        self, kv_state: pipeline.PipelineState, ctx: tuple, n_total: Int32
    ) -> pipeline.PipelineState:
        """The P V of a tile's last block, alone."""
        tOrVt, tOrP, acc_O, softmax = ctx[2], ctx[3], ctx[4], ctx[7]
        tiled_mma_pv, pipeline_v, o_scale = ctx[14], ctx[16], ctx[17]
        if const_expr(self.rescale_o_before_pv):
            softmax.rescale_o(acc_O, o_scale)
        pipeline_v.consumer_wait(kv_state)
        vt = tOrVt[None, None, None, kv_state.index]
        _gemm(tiled_mma_pv, acc_O, tOrP, vt, False, 0, self.pv_accumulate(n_total > 1))
        pipeline_v.consumer_release(kv_state)
        kv_state.advance()
        return kv_state

    # Note [Tile overlap]
    #     Without it (the default), a tile ends with its last P V alone, then the epilogue, and
    #     the next tile starts with its first Q K^T alone: the tensor cores idle for about the
    #     time of two tiles' worth of blocks per tile (session 6, NOTES.md: ~3 us per m_block
    #     at D = 128 against ~1.7 us per unmasked block). With ``tile_overlap`` the producer
    #     loads the next tile's Q into a second stage, and the consumers treat the change of
    #     tile as one more step of the block loop (:meth:`boundary_step`): the next tile's
    #     first Q K^T and this tile's last P V are issued together in the warpgroup's turn;
    #     then this tile's statistics are finalised, the next tile's first softmax runs, and
    #     this tile's O is stored while the other warpgroup's GEMMs run. A tile with no visible
    #     key (n_total == 0), the first tile and the last one take the plain path
    #     (:meth:`first_block` / :meth:`last_pv` / :meth:`finish_tile`).
    @cute.jit
    def mma_tiles_overlapped(
        self,
        tile: Int32,  # the first tile and its tile_info
        info: list,
        queue_ctx: tuple,  # (number of tiles, tile queue, its consumer state)
        q_state: pipeline.PipelineState,
        kv_state: pipeline.PipelineState,
        pipeline_q: pipeline.PipelineAsync,
        env: tuple,
        out: tuple,
        sizes: tuple,
        lists: tuple,
    ) -> None:
        """Consumers, persistent with ``tile_overlap``: every tile of this CTA (Note [Tile
        overlap])."""
        num_tiles, queue, tile_state = queue_ctx
        acc_O, softmax = env[4], env[7]
        m_block, head, batch, head_m, n_partial, n_total = info[:6]
        # first_queued (Note [First block queued]): the tile's first n_block and bound code.
        first = None
        if const_expr(self.first_queued):
            first = (info[6], info[7])
        softmax.reset()
        if const_expr(self.o_zero == "fill"):
            acc_O.fill(0.0)
        if tile < num_tiles:  # noqa: SIM102 (two run-time conditions, kept apart)
            if n_total > 0:
                info_0 = (m_block, head, batch, head_m, n_partial, n_total)
                blocks_0, ctx_0 = self.tile_ctx(info_0, q_state, env, sizes, lists, first)
                kv_state = self.first_block(q_state, kv_state, pipeline_q, blocks_0, ctx_0)
        while tile < num_tiles:
            info_cur = (m_block, head, batch, head_m, n_partial, n_total)
            blocks, ctx = self.tile_ctx(info_cur, q_state, env, sizes, lists)
            if n_total > 0:
                kv_state = self.rest_blocks(kv_state, blocks, ctx)
                # Every Q K^T of this tile is complete: the producer may reuse its Q stage.
                pipeline_q.consumer_release(q_state)
                q_state.advance()
            tile_nx, *words_nx = pop_tile(queue[0], tile_state, queue[1], self.tile_words)
            tile_state.advance()
            info_nx = words_nx[:6]
            n_total_nx = info_nx[5]
            first_nx = None
            if const_expr(self.first_queued):
                first_nx = (words_nx[6], words_nx[7])
            blocks_nx, ctx_nx = self.tile_ctx(info_nx, q_state, env, sizes, lists, first_nx)
            if tile_nx < num_tiles and n_total > 0 and n_total_nx > 0:
                kv_state = self.boundary_step(
                    q_state, kv_state, pipeline_q, blocks_nx, ctx_nx, info_cur, env, out, sizes
                )
            else:
                if n_total > 0:
                    kv_state = self.last_pv(kv_state, ctx, n_total)
                elif const_expr(self.o_zero == "pv"):
                    acc_O.fill(0.0)  # no P V wrote it
                self.finish_tile(info_cur, softmax.finalize(), softmax.row_sum, env, out, sizes)
                softmax.reset()
                if const_expr(self.o_zero == "fill"):
                    acc_O.fill(0.0)
                if tile_nx < num_tiles:  # noqa: SIM102 (two run-time conditions, kept apart)
                    if n_total_nx > 0:
                        kv_state = self.first_block(
                            q_state, kv_state, pipeline_q, blocks_nx, ctx_nx
                        )
            tile = tile_nx
            m_block, head, batch, head_m, n_partial, n_total = info_nx

    @cute.jit
    def boundary_step(
        self,
        q_state: pipeline.PipelineState,  # the next tile's Q stage
        kv_state: pipeline.PipelineState,  # this tile's last block
        pipeline_q: pipeline.PipelineAsync,
        blocks_nx: tuple,  # the next tile's n_blocks and ctx (tile_ctx)
        ctx_nx: tuple,
        info: tuple,  # this tile's tile_info
        env: tuple,
        out: tuple,
        sizes: tuple,
    ) -> pipeline.PipelineState:
        """The next tile's first Q K^T together with this tile's last P V, in this warpgroup's
        turn; then this tile's epilogue (Note [Tile overlap])."""
        n_partial_nx = blocks_nx[1]
        tSrQ, tSrK, tOrVt, tOrP, acc_O, acc_shape_S, _, softmax = ctx_nx[:8]
        wg_idx, tiled_mma_qk, tiled_mma_pv, pipeline_k, pipeline_v = ctx_nx[12:17]
        # The next tile's first mask bits before the GEMMs, as mask_at "early" does: made
        # later, its bound words (n = 2: 64 registers) would be live next to S, O and P.
        # Guarded always: here the bits sit on the path to this tile's last P V.
        n_block, code = self.first_at(blocks_nx)
        bits = self.first_mask_bits(n_partial_nx, n_block, ctx_nx, code, guard=True)
        state_v = kv_state.clone()
        kv_state.advance()
        pipeline_q.consumer_wait(q_state)
        pipeline_k.consumer_wait(kv_state)
        self.scheduler_sync(wg_idx)
        acc_S = cute.make_rmem_tensor(acc_shape_S, Float32)
        self.gemm_qk(acc_S, tSrQ, tSrK, tiled_mma_qk, kv_state.index)
        pipeline_v.consumer_wait(state_v)
        vt = tOrVt[None, None, None, state_v.index]
        _gemm(tiled_mma_pv, acc_O, tOrP, vt, False, -1, self.pv_accumulate(info[5] > 1))
        self.scheduler_arrive(wg_idx)
        # While the GEMMs run: this tile's statistics.
        row_scale = softmax.finalize()
        lse = cute.make_rmem_tensor(softmax.num_rows, Float32)
        lse.store(softmax.row_sum.load())
        warpgroup.wait_group(1)
        pipeline_k.consumer_release(kv_state)
        if n_partial_nx > 0:
            apply_mask_bits(acc_S, bits)
        softmax.step(acc_S, is_first=True)
        self.pv_wait_point(acc_S, pipeline_k, kv_state, ctx_nx[10])
        warpgroup.wait_group(0)
        pipeline_v.consumer_release(state_v)
        self.convert_p(acc_S, tOrP, self.use_asm_cvt(True))
        self.finish_tile(info, row_scale, lse, env, out, sizes)
        if const_expr(self.o_zero == "fill"):
            acc_O.fill(0.0)
        return kv_state

    @cute.jit
    def gemm_qk(
        self,
        acc_S: cute.Tensor,
        tSrQ,  # descriptor view; qk_desc "words": the first low word of the tile's Q stage
        tSrK,  # descriptor view (.., stages); qk_desc "words": K stage 0's first low word
        tiled_mma_qk: cute.TiledMma,
        stage: Int32,
        zero_init: cutlass.Constexpr[bool] = True,
    ) -> None:
        """Issue S = Q K^T with K from stage ``stage`` (left in flight); zero_init=False adds
        it to acc_S's values (Note [Mask as bias])."""
        if const_expr(self.qk_desc == "words"):
            k_lo = tSrK + stage * self.k_stage_off
            lo_q = [tSrQ + off for off in self.q_offs]
            lo_k = [k_lo + off for off in self.k_offs]
            gemm_desc_words(tiled_mma_qk, acc_S, lo_q, lo_k, self.q_hi, self.k_hi, zero_init, -1)
        else:
            _gemm(tiled_mma_qk, acc_S, tSrQ, tSrK[None, None, None, stage], zero_init, -1)

    @cute.jit
    def tile_first(self, n_block: Int32, ctx: tuple) -> tuple:
        """This thread's first (global) row and column in block ``n_block`` of the tile (its
        other rows / columns are at the static ``row_offs`` / ``col_offs``)."""
        tScS_mn, m_block = ctx[6], ctx[9]
        return (m_block * self.tile_m + tScS_mn[0, 0][0], n_block * self.tile_n + tScS_mn[0, 0][1])

    @cute.jit
    def tile_mask_words(self, n_block: Int32, ctx: tuple) -> cute.Tensor | None:
        """mask_impl v2: this thread's bound words of one partial tile (None without bounds)."""
        words = None
        if const_expr(self.mask_impl == "v2" and self.n_bounds > 0):
            mBoundsCur, seqlen_k = ctx[8], ctx[11]
            words = load_bound_words(
                mBoundsCur,
                self.tile_first(n_block, ctx)[1],
                (n_block + 1) * self.tile_n,
                seqlen_k,
                self.col_offs,
                self.n_bounds,
            )
        return words

    @cute.jit
    def tile_mask_finish(
        self, n_block: Int32, words: cute.Tensor | None, ctx: tuple, code: Int32 | None = None
    ) -> cute.Tensor:
        """Mask bits of one partial tile (from :meth:`tile_mask_words`'s words with v2, from
        its bound code with "codes": its bounds loaded here, or ``words`` loaded beforehand by
        :meth:`load_code_words_at`)."""
        tScS_mn, mBoundsCur, m_block, seqlen_q, seqlen_k = ctx[6], ctx[8], ctx[9], ctx[10], ctx[11]
        first = self.tile_first(n_block, ctx)
        rule = (seqlen_q, seqlen_k, self.row_offs, self.col_offs, self.causal, self.n_bounds)
        if const_expr(self.mask_impl == "codes" and words is not None):
            bits = bits_from_code_words(words, code, *first, *rule)
        elif const_expr(self.mask_impl == "codes"):
            col_tile_end = (n_block + 1) * self.tile_n
            bits = bits_from_codes(mBoundsCur, code, *first, col_tile_end, *rule)
        elif const_expr(self.mask_impl == "v1"):
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
        else:
            bits = bits_from_words(words, *first, *rule)
        return bits

    # Note [Mask as bias]
    #     With ``mask_bias`` (bound codes, n = 1) a partial block's mask is written into its S
    #     accumulator before Q K^T, 0 where visible and -inf where masked
    #     (:func:`fill_mask_bias`: one compare and one select per element), and the GEMM
    #     accumulates onto it (Q K^T is finite, so -inf stays -inf). No mask work follows the
    #     GEMM, where the softmax waits for it, and no bit words are made and unpacked
    #     (mask_bits: a compare and an OR per element, then R2P and a select).
    @cute.jit
    def fill_bias(
        self, acc_S: cute.Tensor, n_block: Int32, words: cute.Tensor, ctx: tuple, code: Int32
    ) -> None:
        """mask_bias: acc_S := this partial block's mask as 0 / -inf (Note [Mask as bias])."""
        seqlen_q, seqlen_k = ctx[10], ctx[11]
        fill_mask_bias(
            acc_S,
            words,
            code,
            *self.tile_first(n_block, ctx),
            (n_block + 1) * self.tile_n,
            seqlen_q,
            seqlen_k,
            self.row_offs,
            self.col_offs,
            self.causal,
        )

    @cute.jit
    def load_code_words_at(
        self, words: cute.Tensor, n_block: Int32, code: Int32, ctx: tuple
    ) -> None:
        """bound_prefetch: this thread's bound words of partial block ``n_block`` into
        ``words`` (only when a bound is ACTIVE in ``code``)."""
        mBoundsCur, seqlen_k = ctx[8], ctx[11]
        load_code_words(
            words,
            mBoundsCur,
            code,
            self.tile_first(n_block, ctx)[1],
            (n_block + 1) * self.tile_n,
            seqlen_k,
            self.col_offs,
            self.n_bounds,
        )

    @cute.jit
    def mma_one_n_block(
        self,
        kv_state: pipeline.PipelineState,
        n_block: Int32,
        masked: cutlass.Constexpr[bool],
        ctx: tuple,
        code: Int32 | None = None,
        prefetch: tuple | None = None,
        byte_masks: tuple | None = None,
        i: Int32 | None = None,
    ) -> pipeline.PipelineState:
        """S = Q K^T of this block overlapped with O += P V of the previous one (``code``: a
        partial block's bound code, mask_impl "codes"). ``prefetch`` (bound_prefetch): (this
        block's bound words, the next block's n_block and code, whether it is partial): the
        bits come from the words, and the next partial block's words are loaded into them
        once this block's GEMMs are issued. ``byte_masks`` (rest_mask "bytes", Note [Byte masks]):
        (this thread's column bounds of this block and of the next, the next two blocks'
        n_blocks, whether this is the tile's second block)."""
        (tSrQ, tSrK, tOrVt, tOrP, acc_O, acc_shape_S, _, softmax) = ctx[:8]
        wg_idx, tiled_mma_qk, tiled_mma_pv, pipeline_k, pipeline_v, o_scale = ctx[12:]
        state_v = kv_state.clone()
        kv_state.advance()
        bits = None
        words = None
        if const_expr(prefetch is not None):
            words = prefetch[0]
        with_bits = masked and byte_masks is None
        bias = with_bits and self.mask_bias  # Note [Mask as bias]
        acc_S = cute.make_rmem_tensor(acc_shape_S, Float32)
        if const_expr(bias):
            if const_expr(prefetch is None):
                words = cute.make_rmem_tensor(len(self.col_offs), Int32)
                self.load_code_words_at(words, n_block, code, ctx)
            self.fill_bias(acc_S, n_block, words, ctx, code)
        elif const_expr(with_bits and self.mask_at == "early"):
            if const_expr(prefetch is None):
                words = self.tile_mask_words(n_block, ctx)
            bits = self.tile_mask_finish(n_block, words, ctx, code)
        if const_expr(with_bits and self.mask_at == "split"):
            words = self.tile_mask_words(n_block, ctx)
        pipeline_k.consumer_wait(kv_state)
        self.scheduler_sync(wg_idx)
        self.gemm_qk(acc_S, tSrQ, tSrK, tiled_mma_qk, kv_state.index, zero_init=not bias)
        if const_expr(self.rescale_o_before_pv):
            softmax.rescale_o(acc_O, o_scale)
        pipeline_v.consumer_wait(state_v)
        accumulate = None if i is None else self.pv_accumulate(i > 1)
        vt = tOrVt[None, None, None, state_v.index]
        _gemm(tiled_mma_pv, acc_O, tOrP, vt, False, -1, accumulate)
        self.scheduler_arrive(wg_idx)
        if const_expr(byte_masks is not None):
            bits = self.byte_step(n_block, kv_state.index, byte_masks, ctx)
        # Late mask bits: made while this block's Q K^T runs, after the GEMMs are issued.
        if const_expr(with_bits and self.mask_at != "early"):
            if const_expr(self.mask_at == "late" and prefetch is None):
                words = self.tile_mask_words(n_block, ctx)
            if const_expr(self.mask_guard):
                # A branch ptxas cannot remove (n_block >= 0 always holds) keeps the compares
                # out of the GEMM issue sequence above.
                bits = cute.make_rmem_tensor(len(self.row_offs), Int32)
                bits.fill(0)
                if n_block >= 0:
                    bits.store(self.tile_mask_finish(n_block, words, ctx, code).load())
            else:
                bits = self.tile_mask_finish(n_block, words, ctx, code)
        if const_expr(with_bits and prefetch is not None):  # noqa: SIM102 (const_expr, then run time)
            # The bits are made: the words may take the next partial block's bounds.
            if prefetch[3]:
                self.load_code_words_at(words, prefetch[1], prefetch[2], ctx)
        warpgroup.wait_group(1)
        pipeline_k.consumer_release(kv_state)
        if const_expr(byte_masks is not None):
            self.byte_apply(acc_S, n_block, bits, ctx)
        elif const_expr(with_bits and not bias):
            apply_mask_bits(acc_S, bits)
        row_scale = softmax.step(acc_S, is_first=False)
        self.pv_wait_point(acc_S, pipeline_k, kv_state, ctx[10])
        warpgroup.wait_group(0)
        pipeline_v.consumer_release(state_v)
        self.convert_p(acc_S, tOrP, self.use_asm_cvt(masked))
        if const_expr(self.rescale_o_before_pv):
            o_scale.store(row_scale.load())
        else:
            softmax.rescale_o(acc_O, row_scale)
        return kv_state

    # Note [Byte masks]
    #     With ``rest_mask="bytes"`` (n = 1, 2), a tile's partial blocks after the first are
    #     masked from per-column row thresholds (`mask_bytes.py`). Each thread of a consumer
    #     warpgroup owns one key column: it loads the column's bounds a block ahead and writes
    #     them, relative to the warpgroup's 64 rows, as one byte per bound into the
    #     warpgroup's smem buffer of the next block's K / V stage. Each thread then reads its
    #     own columns' bytes as words of four and compares four columns per subtraction (bit
    #     words compare one element at a time). Two buffers per warpgroup, one per K / V stage,
    #     so a block reads the buffer its predecessor wrote. Every block's scheduler_sync
    #     separates a block's stores from the next block's reads, and from the previous
    #     block's reads of the buffer they overwrite. Only the tile's second block (the
    #     loop's first) stores its own bytes, followed by a 128-thread barrier. The causal
    #     diagonal is applied as a per-row threshold (as for bit words) on the blocks that
    #     cross it: n = 2 causal, or Sq != Sk.
    @cute.jit
    def byte_env(
        self, sMask: cute.Tensor, tScS_mn: cute.Tensor, wg_idx: Int32, tidx: Int32
    ) -> None:
        """The per-thread constants of byte masks (trace-time attributes): its rows' words,
        its column, and where its warpgroup's buffers and its own words start."""
        rows0 = tScS_mn[0, 0][0] - wg_idx * WG_ROWS
        self.mb_rows = row_words([rows0 + off for off in self.row_offs])
        self.mb_col = tidx % THREADS_PER_WG
        base = wg_idx * (self.num_stages * self.mask_words)  # this warpgroup's first word
        self.mb_base = sMask.iterator + base
        q = tScS_mn[0, 0][1] // 2  # the thread's first column is 2q (sm_90 layout)
        self.mb_own = q * (self.tile_n // 16)  # the thread's first word in a plane

    @cute.jit
    def wg_row_base(self, ctx: tuple) -> Int32:
        """The first global row of this warpgroup's 64 rows of the tile."""
        m_block, wg_idx = ctx[9], ctx[12]
        return m_block * self.tile_m + wg_idx * WG_ROWS

    @cute.jit
    def byte_fetch(self, bounds: cute.Tensor, n_block: Int32, ctx: tuple) -> None:
        """This thread's column bounds of block ``n_block`` into ``bounds``."""
        mBoundsCur, seqlen_k = ctx[8], ctx[11]
        col = n_block * self.tile_n + self.mb_col
        load_column_bounds(bounds, mBoundsCur, col, seqlen_k, self.n_bounds)

    @cute.jit
    def byte_store(self, bounds: cute.Tensor, n_block: Int32, stage: Int32, ctx: tuple) -> None:
        """This thread's column of block ``n_block`` as bytes in its warpgroup's buffer of
        K / V stage ``stage`` (threads past tile_n store nothing)."""
        buf = cute.make_tensor(self.mb_base + stage * self.mask_words, self.mask_words)
        args = (
            cute.recast_tensor(buf, Int8),
            bounds,
            self.mb_col,
            n_block * self.tile_n + self.mb_col,
            self.wg_row_base(ctx),
            ctx[11],  # seqlen_k
            self.tile_n,
            self.causal,
            self.n_bounds,
        )
        if const_expr(self.tile_n >= THREADS_PER_WG) or self.mb_col < self.tile_n:
            store_column_bytes(*args)

    @cute.jit
    def byte_step(self, n_block: Int32, stage: Int32, byte_masks: tuple, ctx: tuple) -> cute.Tensor:
        """While this block's Q K^T runs: its mask bits from its bytes; the next block's bytes
        stored and the block after's bounds loaded (``byte_masks`` as :meth:`mma_one_n_block`)."""
        first, ahead, n_block_next, n_block_2, is_second = byte_masks
        wg_idx = ctx[12]
        if is_second:
            self.byte_store(first, n_block, stage, ctx)
            cute.arch.barrier(
                barrier_id=int(NamedBarrierFwd.MaskWG1) + wg_idx, number_of_threads=THREADS_PER_WG
            )
        per_plane = self.tile_n // 4
        per_thread = self.tile_n // 16
        own = self.mb_base + stage * self.mask_words + self.mb_own
        planes = []
        for k in cutlass.range_constexpr(self.n_bounds):
            addr = (own + k * per_plane).toint()
            ptr = cute.make_ptr(Int32, addr, cute.AddressSpace.smem, assumed_align=16)
            planes.append(cute.make_tensor(ptr, cute.make_layout(per_thread)))
        lo = planes[1] if const_expr(self.n_bounds == 2) else None
        inside = masked_inside(self.causal, self.n_bounds)
        # seqlen_k >> 31: the opaque zero that keeps each row word whole (R2P, mask_bytes.py)
        bits = byte_mask_bits(planes[0], lo, self.mb_rows, inside, ctx[11] >> 31)
        self.byte_store(ahead, n_block_next, 1 - stage, ctx)
        self.byte_fetch(ahead, n_block_2, ctx)
        return bits

    @cute.jit
    def byte_apply(self, acc_S: cute.Tensor, n_block: Int32, bits: cute.Tensor, ctx: tuple) -> None:
        """Mask block ``n_block``'s scores from its byte bits, and the causal diagonal where
        the block crosses it for this warpgroup's rows."""
        apply_byte_bits(acc_S, bits)
        if const_expr(self.causal):
            seqlen_q, seqlen_k = ctx[10], ctx[11]
            if (n_block + 1) * self.tile_n - 1 > self.wg_row_base(ctx) + (seqlen_k - seqlen_q):
                rule = (seqlen_q, seqlen_k, self.row_offs, self.col_offs, True, 0)
                diag = bits_from_words(None, *self.tile_first(n_block, ctx), *rule)
                apply_mask_bits(acc_S, diag)

    @cute.jit
    def pv_wait_point(
        self,
        acc_S: cute.Tensor,
        pipeline_k: pipeline.PipelineAsync,
        kv_state: pipeline.PipelineState,
        seqlen_q: Int32,
    ) -> None:
        """pv_wait_after > 0: keep the P V wait after the exp2 of column pv_wait_after - 1 of
        each row (Note [P V wait])."""
        if const_expr(self.pv_wait_after > 0):
            acc_mn = acc_to_mn(acc_S)
            c = self.pv_wait_after - 1
            dep = Int32(acc_mn[0, c] < acc_mn[cute.size(acc_mn, mode=[0]) - 1, c])
            sync_point_after(pipeline_k, kv_state, dep & (seqlen_q >> 31))

    def o_store_threads(self) -> int:
        """Threads that stage and store one O box (see ``o_store``)."""
        return self.num_mma_threads if self.o_store == "cta" else THREADS_PER_WG

    def use_asm_cvt(self, masked: bool) -> bool:
        """Whether P of a masked / unmasked block is converted with inline asm (trace time)."""
        return self.p_cvt_asm is True or (self.p_cvt_asm == "unmasked" and not masked)

    @cute.jit
    def convert_p(
        self, acc_S: cute.Tensor, tOrP: cute.Tensor, use_asm: cutlass.Constexpr[bool]
    ) -> None:
        """P (fp32 accumulator of S after the softmax) -> the 16-bit A operand of P V.

        use_asm: packed inline-asm cvt (Note [Packed conversion]) instead of TensorSSA.to.
        """
        if const_expr(use_asm):
            convert_to_16bit(acc_to_frg_a(acc_S), tOrP)
        else:
            tOrP.store(acc_to_frg_a(acc_S).load().to(self.dtype))

    @cute.jit
    def scheduler_sync(self, wg_idx: Int32) -> None:
        """Wait for this warpgroup's turn to issue GEMMs."""
        cute.arch.barrier(
            barrier_id=int(NamedBarrierFwd.WarpSchedulerWG1) + wg_idx,
            number_of_threads=2 * THREADS_PER_WG,
        )

    @cute.jit
    def scheduler_arrive(self, wg_idx: Int32) -> None:
        """Hand the turn to the other consumer warpgroup."""
        cute.arch.barrier_arrive(
            barrier_id=int(NamedBarrierFwd.WarpSchedulerWG1) + 1 - wg_idx,
            number_of_threads=2 * THREADS_PER_WG,
        )

    # ----------------------------------------------------------------------------------------
    # Epilogue
    # ----------------------------------------------------------------------------------------
    @cute.jit
    def epilogue(
        self,
        acc_O: cute.Tensor,
        lse: cute.Tensor,  # one value per row of this thread
        mO: cute.Tensor,  # TMA view (s_q, d, h, b)
        mLSE: cute.Tensor,  # (b, h, s_q)
        sO: cute.Tensor,  # as in mma()
        tma_atom_O: cute.CopyAtom,
        tiled_mma_pv: cute.TiledMma,
        thr_mma_pv: cute.ThrMma,
        tidx: Int32,
        m_block: Int32,
        head: Int32,
        batch: Int32,
        seqlen_q: Int32,
    ):
        rO = cute.make_rmem_tensor(acc_O.shape, self.dtype)
        rO.store(acc_O.load().to(self.dtype))
        # Threads that stage and store one O box: all consumers ("cta") or one warpgroup ("wg");
        # the first thread of each group issues its TMA store.
        n_store = self.o_store_threads()
        sO_mn = sO  # (tile_m, d) view of the staging buffer
        bar_id = int(NamedBarrierFwd.Epilogue)
        if const_expr(self.o_store == "wg"):
            sO_mn = cute.group_modes(_select(sO, [0, 2, 1]), 0, 2)
            wg = cute.arch.make_warp_uniform(tidx // THREADS_PER_WG)
            bar_id = int(NamedBarrierFwd.EpilogueWG1) + wg
        if const_expr(self.persistent):  # noqa: SIM102 (trace-time + run-time condition)
            # The last tile's O store must have read sO before it is overwritten.
            if tidx % n_store == 0:  # the thread that issued it
                cute.arch.cp_async_bulk_wait_group(0, read=True)
        # One CTA per tile: every consumer must be done reading sQ (its last Q K^T) before O
        # overwrites it. Persistent: sO is its own buffer; the barrier makes the wait above
        # (the last store has read sO) hold for every thread of the group.
        cute.arch.barrier(barrier_id=bar_id, number_of_threads=n_store)
        smem_copy_atom = cute.make_copy_atom(
            warp.StMatrix8x8x16bOp(transpose=False, num_matrices=4), self.dtype
        )
        smem_thr_copy = cute.make_tiled_copy_C(smem_copy_atom, tiled_mma_pv).get_slice(tidx)
        cute.copy(smem_copy_atom, smem_thr_copy.retile(rO), smem_thr_copy.partition_D(sO_mn))

        # lse: the first thread of each row quad writes its rows.
        tOcO_mn = acc_to_mn(
            thr_mma_pv.partition_C(cute.make_identity_tensor((self.tile_m, self.head_dim)))
        )
        if tOcO_mn[0, 0][1] == 0:
            for r in cutlass.range_constexpr(cute.size(tOcO_mn, mode=[0])):
                row = m_block * self.tile_m + tOcO_mn[r, 0][0]
                if row < seqlen_q:
                    mLSE[batch, head, row] = lse[r]

        cute.arch.fence_view_async_shared()
        cute.arch.barrier(barrier_id=bar_id, number_of_threads=n_store)
        # One thread issues the TMA store (a bulk copy is per thread: a whole warp issuing it
        # stored O 32 times).
        if tidx % n_store == 0:
            o_rows = n_store // THREADS_PER_WG * 64
            box = m_block
            sO_box = sO
            if const_expr(self.o_store == "wg"):
                box = m_block * NUM_CONSUMER_WARPGROUPS + wg
                sO_box = sO[None, None, wg]
            gO = cute.local_tile(mO[None, None, head, batch], (o_rows, self.head_dim), (box, 0))
            tOsO, tOgO = cpasync.tma_partition(
                tma_atom_O,
                0,
                cute.make_layout(1),
                cute.group_modes(sO_box, 0, 2),
                cute.group_modes(gO, 0, 2),
            )
            cute.copy(tma_atom_O, tOsO, tOgO)
            cute.arch.cp_async_bulk_commit_group()
            if const_expr(not self.persistent):
                cute.arch.cp_async_bulk_wait_group(0, read=True)
