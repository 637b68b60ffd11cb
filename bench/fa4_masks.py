"""FA4 (flash-attn-4) CuTe DSL ``mask_mod`` functions that read FlashMask column bounds.

One generic mask_mod per (causal, n, per-head) mode: it gathers the bounds of key column j from
``aux_tensors[0]`` (the int32 ``startend_row_indices`` ``[B, Hm, Sk, n]``) for every element of a
partial tile, the way a FlashMask user would port a column-bound mask to FA4's mask_mod API.
This is the "FA4 mask_mod" baseline FlashMask V4 compares against.

FA4 (4.0.0b36, sm_90) calls ``mask_mod(batch, head, q_idx, kv_idx, seqlen_info, aux_tensors)``
with (1,)-shaped Int32 ``TensorSSA`` indices and expects a Boolean ``TensorSSA`` (True = keep).
FA4 hashes a mask_mod by its source and closure values, so each mode compiles once and every mask
of that mode (and every sequence length) reuses the kernel.

Imports of ``cutlass`` and ``flash_attn`` are lazy: this module imports on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache


@cache
def column_bound_mask_mod(causal: bool, n: int, per_head: bool, offset: int = 0) -> Callable:
    """The FA4 mask_mod for FlashMask mode (causal, n); ``per_head``: mask head = query head.

    Args:
        causal: also mask the causal triangle (bottom-right aligned by ``offset = Sk - Sq``).
        n: bounds per column (0: plain causal, no aux tensor read).
        per_head: the bounds have Hm = H query heads (else Hm = 1).
    Returns:
        a ``@cute.jit`` mask_mod reading ``aux_tensors[0]``.
    """
    if n not in (0, 1, 2, 4):
        raise ValueError(f"n={n} must be 0, 1, 2 or 4")
    if n == 0 and not causal:
        raise ValueError("no bounds and not causal: that is dense attention, not a mask_mod")
    if (n == 1 and not causal) or (n == 4 and causal):
        raise ValueError(f"(causal={causal}, n={n}) is not a FlashMask mode")

    import cutlass.cute as cute
    from cutlass import Int32, const_expr
    from flash_attn.cute import utils

    @cute.jit
    def fm_column_mask_mod(batch, head, m_idx, n_idx, seqlen_info, aux_tensors):
        keep = n_idx <= m_idx + utils.scalar_to_ssa(offset, Int32)  # causal, overwritten below
        if const_expr(n > 0):
            sri = aux_tensors[0]
            b = batch[0]
            j = n_idx[0]
            h = Int32(0)
            if const_expr(per_head):
                h = head[0]
            a0 = utils.scalar_to_ssa(sri[b, h, j, 0], Int32)
            if const_expr(n == 1):
                vis = m_idx < a0
            else:
                a1 = utils.scalar_to_ssa(sri[b, h, j, 1], Int32)
                if const_expr(n == 2 and causal):  # masked: [LTS, LTE)
                    vis = (m_idx < a0) | (m_idx >= a1)
                if const_expr(n == 2 and not causal):  # masked: [LTS, Sq) and [0, UTE)
                    vis = (m_idx < a0) & (m_idx >= a1)
                if const_expr(n == 4):  # masked: [LTS, LTE) and [UTS, UTE)
                    a2 = utils.scalar_to_ssa(sri[b, h, j, 2], Int32)
                    a3 = utils.scalar_to_ssa(sri[b, h, j, 3], Int32)
                    vis = ((m_idx < a0) | (m_idx >= a1)) & ((m_idx < a2) | (m_idx >= a3))
            if const_expr(causal):
                keep = keep & vis
            else:
                keep = vis
        return keep

    return fm_column_mask_mod
