"""FlashMask column-bound masks: the type, builders, a registry, and tile flags."""

from fm4.masks import builders
from fm4.masks.builders import (
    causal,
    causal_blockwise,
    causal_document,
    document,
    full,
    global_sliding_window,
    prefix_lm_causal,
    prefix_lm_document,
    qk_sparse,
    random_doc_lens,
    random_eviction,
    share_question,
    sliding_window,
)
from fm4.masks.flashmask import FlashMask
from fm4.masks.registry import MASKS, MaskSpec, make_mask, mask_names
from fm4.masks.tiles import TileLists, build_tile_lists, classify_tiles, classify_tiles_exact

__all__ = [
    "MASKS",
    "FlashMask",
    "MaskSpec",
    "TileLists",
    "build_tile_lists",
    "builders",
    "causal",
    "causal_blockwise",
    "causal_document",
    "classify_tiles",
    "classify_tiles_exact",
    "document",
    "full",
    "global_sliding_window",
    "make_mask",
    "mask_names",
    "prefix_lm_causal",
    "prefix_lm_document",
    "qk_sparse",
    "random_doc_lens",
    "random_eviction",
    "share_question",
    "sliding_window",
]
