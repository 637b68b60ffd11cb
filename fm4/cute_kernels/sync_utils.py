"""Small PTX helpers for cross-CTA ordering and bulk reductions (sm_90), as inline asm.

* ``bulk_reduce_add_f32``: ``cp.reduce.async.bulk`` of a contiguous fp32 range from shared to
  global memory (element-wise add, performed by the bulk-copy engine; tracked by the issuing
  thread's bulk groups: ``cute.arch.cp_async_bulk_commit_group`` / ``..._wait_group``).
* ``ld_acquire_gpu`` / ``red_release_add_gpu`` / ``atom_add_relaxed_gpu``: a semaphore read
  with acquire, an increment with release, and a relaxed fetch-and-add at GPU scope (the
  backward's dQ hand-offs: Notes [Deterministic dQ] and [dQ lazy zero]).
* ``fence_proxy_async_global``: orders this thread's generic-proxy and async-proxy (bulk copy)
  accesses to global memory (between zeros or a flag and the bulk reductions they guard).
* ``thread_idx_x_here``: ``threadIdx.x`` read where it is written (a volatile read the compiler
  keeps in place), so that values derived from it inside a loop are not hoisted out of it.
"""

from __future__ import annotations

import cutlass.cute as cute
from cutlass import Int32
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op


def _asm(ptx: str, constraints: str, args: list, *, ret_i32: bool = False):
    """One volatile inline-asm statement (kept in place: ``has_side_effects``); an i32 result
    when ``ret_i32``."""
    out = llvm.inline_asm(
        T.i32() if ret_i32 else None,
        args,
        ptx,
        constraints,
        has_side_effects=True,
        is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT,
    )
    return Int32(out) if ret_i32 else None


@dsl_user_op
def bulk_reduce_add_f32(
    smem_ptr: cute.Pointer, gmem_ptr: cute.Pointer, num_bytes: int | Int32, *, loc=None, ip=None
) -> None:
    """gmem[0 : num_bytes / 4] += smem[0 : num_bytes / 4] (fp32), asynchronously.

    Both addresses 16-byte aligned, ``num_bytes`` a multiple of 16. Issue from one thread.
    """
    smem_addr = smem_ptr.toint(loc=loc, ip=ip).ir_value()
    _asm(
        "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [$0], [$1], $2;",
        "l,r,r",
        [gmem_ptr.llvm_ptr, smem_addr, Int32(num_bytes).ir_value(loc=loc, ip=ip)],
    )


@dsl_user_op
def fence_proxy_async_global(*, loc=None, ip=None) -> None:
    """``fence.proxy.async.global``: this thread's global-memory accesses through the generic
    proxy (loads, atomics) and through the async proxy (bulk copies) are ordered across it."""
    _asm("fence.proxy.async.global;", "", [])


@dsl_user_op
def atom_add_relaxed_gpu(ptr: cute.Pointer, val: int | Int32, *, loc=None, ip=None) -> Int32:
    """``old = *ptr; *ptr += val`` (int32), relaxed, at GPU scope; returns ``old``."""
    return _asm(
        "atom.relaxed.gpu.global.add.s32 $0, [$1], $2;",
        "=r,l,r",
        [ptr.llvm_ptr, Int32(val).ir_value(loc=loc, ip=ip)],
        ret_i32=True,
    )


@dsl_user_op
def ld_acquire_gpu(ptr: cute.Pointer, *, loc=None, ip=None) -> Int32:
    """A 32-bit global load with acquire semantics at GPU scope."""
    return _asm("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [ptr.llvm_ptr], ret_i32=True)


@dsl_user_op
def red_release_add_gpu(ptr: cute.Pointer, val: int | Int32, *, loc=None, ip=None) -> None:
    """``*ptr += val`` (int32) with release semantics at GPU scope."""
    _asm(
        "red.release.gpu.global.add.s32 [$0], $1;",
        "l,r",
        [ptr.llvm_ptr, Int32(val).ir_value(loc=loc, ip=ip)],
    )


@dsl_user_op
def thread_idx_x_here(*, loc=None, ip=None) -> Int32:
    """``threadIdx.x``, read by a volatile ``mov``: LLVM cannot hoist it, or what is computed
    from it, out of the loop it is in. For addresses used once per iteration of an outer loop
    (e.g. the persistent backward's epilogue), which would otherwise stay live across the
    inner loops next to the accumulators and spill."""
    return _asm("mov.u32 $0, %tid.x;", "=r", [], ret_i32=True)
