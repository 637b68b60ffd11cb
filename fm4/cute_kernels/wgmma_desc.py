"""wgmma shared-memory descriptors as 32-bit words held in registers (sm_90).

A ``make_fragment_A`` / ``make_fragment_B`` of a shared-memory tensor is a *descriptor view*:
``cute.gemm`` turns its iterator into the 64-bit wgmma descriptor where the GEMM is issued.
In the persistent forward kernel's n_block loop that is redone every iteration and ptxas
rebuilds each k-block's descriptor from the shared-memory address, with 64-bit adds split in
two (Note [Descriptors per tile] in fwd_sm90.py). These helpers take a descriptor out once as
two 32-bit words and issue a GEMM from the words:

* :func:`desc_words`: a descriptor view's first descriptor as (low word, high word).
* :func:`k_block_offsets`: the static offsets of a view's k-blocks, to add to the low word.
* :func:`gemm_desc_words`: one warpgroup GEMM from per-k-block low words and the high words.

Low word: the start address (bits 0-13, in 16-byte units) and the leading byte offset (bits
16-29). A k-block or pipeline-stage offset is added to the low word alone: shared memory ends
below 2^18 bytes, so the start address never carries into bit 14.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass import Int32, Int64
from cutlass._mlir.dialects import llvm
from cutlass.cute.nvgpu import warpgroup
from cutlass.cute.nvgpu.tcgen05 import int_to_smem_descriptor, smem_descriptor_to_int
from cutlass.cutlass_dsl import T, dsl_user_op


def _asm(ret, args: list, text: str, constraints: str):
    return llvm.inline_asm(
        ret,
        args,
        text,
        constraints,
        has_side_effects=False,
        is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT,
    )


@dsl_user_op
def _low_word(desc: Int64, *, loc=None, ip=None) -> Int32:
    """The low 32 bits of ``desc``, through inline asm LLVM does not look into (so the value
    is computed where this is called, not re-derived from the address where it is used)."""
    arg = Int64(desc).ir_value(loc=loc, ip=ip)
    return Int32(_asm(T.i32(), [arg], "cvt.u32.u64 $0, $1;", "=r,l"))


@dsl_user_op
def _pack(lo: Int32, hi: Int32, *, loc=None, ip=None) -> Int64:
    """The 64-bit descriptor ``{lo, hi}``."""
    args = [Int32(lo).ir_value(loc=loc, ip=ip), Int32(hi).ir_value(loc=loc, ip=ip)]
    return Int64(_asm(T.i64(), args, "mov.b64 $0, {$1, $2};", "=l,r,r"))


def desc_words(view: cute.Tensor, runtime_zero: Int32) -> tuple[Int32, Int32]:
    """(low word, high word) of the descriptor at the start of a descriptor view (e.g.
    ``tSrQ[None, None, 0]``).

    ``runtime_zero`` must be 0 at run time but unknown to the compiler (e.g. ``seqlen >> 31``):
    it is OR-ed into the high word, which is otherwise a constant. ptxas then keeps the high
    word in the GEMM's uniform registers across the k-blocks instead of writing the constant
    into them again before every wgmma.
    """
    desc = smem_descriptor_to_int(view.iterator)
    return _low_word(desc), Int32(desc >> 32) | runtime_zero


def k_block_offsets(view: cute.Tensor) -> list[int]:
    """Static low-word offsets (16-byte units) of the k-blocks (mode 2) of a descriptor view
    ``(MMA, MMA_M|N, MMA_K, ...)``, relative to k-block 0."""
    lay = view.layout
    rest = (0,) * (cute.rank(lay) - 3)
    return [cute.crd2idx((0, 0, k, *rest), lay) for k in range(cute.size(view.shape[2]))]


@cute.jit
def gemm_desc_words(
    tiled_mma: cute.TiledMma,
    acc: cute.Tensor,
    lo_a: list,  # Int32 low word per k-block
    lo_b: list,
    hi_a: Int32,
    hi_b: Int32,
    zero_init: cutlass.Constexpr[bool],
    wg_wait: cutlass.Constexpr[int],
) -> None:
    """One warpgroup GEMM, acc (+)= A B, over k-blocks given by descriptor words (both operands
    from shared memory); wg_wait < 0 leaves it in flight."""
    warpgroup.fence()
    atom = cute.make_mma_atom(tiled_mma.op)
    atom.set(warpgroup.Field.ACCUMULATE, not zero_init)
    one = cute.make_layout((1, 1), stride=(0, 0))
    for k in cutlass.range_constexpr(len(lo_a)):
        a = cute.make_tensor(int_to_smem_descriptor(_pack(lo_a[k], hi_a)), one)
        b = cute.make_tensor(int_to_smem_descriptor(_pack(lo_b[k], hi_b)), one)
        cute.gemm(atom, acc, a, b, acc)
        atom.set(warpgroup.Field.ACCUMULATE, True)
    warpgroup.commit_group()
    if cutlass.const_expr(wg_wait >= 0):
        warpgroup.wait_group(wg_wait)
