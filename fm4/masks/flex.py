"""Conversion of a FlashMask to a FlexAttention ``BlockMask`` (from fm4's tile lists)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fm4.masks.tiles import build_tile_lists

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from fm4.masks.flashmask import FlashMask


def flex_mask_mod(sri: torch.Tensor | None, causal: bool, seqlen_q: int, seqlen_k: int):
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` reading the column bounds.

    sri: int32 ``[B, H', Sk, n]`` with H' = 1 or the query heads. True = attend.
    """
    off = seqlen_k - seqlen_q
    n = 0 if sri is None else sri.shape[-1]
    one_head = sri is not None and sri.shape[1] == 1

    def mask_mod(b, h, q_idx, kv_idx):
        ok = kv_idx <= q_idx + off if causal else kv_idx >= 0
        if sri is None:
            return ok
        hh = 0 if one_head else h
        col = sri[b, hh, kv_idx]
        if n == 1:
            return ok & (q_idx < col[0])
        if n == 2 and causal:
            return ok & ~((q_idx >= col[0]) & (q_idx < col[1]))
        if n == 2:
            return ok & (q_idx < col[0]) & (q_idx >= col[1])
        lower = (q_idx >= col[0]) & (q_idx < col[1])
        upper = (q_idx >= col[2]) & (q_idx < col[3])
        return ok & ~(lower | upper)

    return mask_mod


def to_block_mask(
    mask: FlashMask, seqlen_q: int, seqlen_k: int, *, num_heads: int | None, block_size: int
) -> BlockMask:
    """Build the ``BlockMask`` from fm4's tile lists (no ``create_block_mask`` compile)."""
    from torch.nn.attention.flex_attention import BlockMask

    sri = mask.startend_row_indices
    hm = mask.num_heads
    if num_heads is not None and sri is not None and hm not in (1, num_heads):
        if num_heads % hm:
            raise ValueError(f"num_heads={num_heads} is not a multiple of the mask heads {hm}")
        sri = sri.repeat_interleave(num_heads // hm, dim=1)
    lists = build_tile_lists(
        sri, mask.causal, seqlen_q, seqlen_k, block_size, block_size, backward=False
    )
    return BlockMask.from_kv_blocks(
        lists.fwd_partial_cnt,
        lists.fwd_partial_idx,
        lists.fwd_full_cnt,
        lists.fwd_full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=flex_mask_mod(sri, mask.causal, seqlen_q, seqlen_k),
        seq_lengths=(seqlen_q, seqlen_k),
    )
