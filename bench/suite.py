"""The benchmark suite in FlashMask V4's configuration.

bf16, D = 128, H = 32 (q and kv; GQA option: 8 kv heads), B = 128K / S; mask parameters scale with
S as in `fm4.masks.registry` (w = S/16, P = S/2, r0 = S/2, G = 16, 5 random documents with
seed = split index).
"""

from __future__ import annotations

from dataclasses import dataclass

from fm4.masks.registry import MASKS, mask_names

TOKENS_PER_BATCH = 128 * 1024  # B = 128K / S
NUM_HEADS = 32
GQA_KV_HEADS = 8
#: Masks whose bounds depend on the seed (document splits, random eviction).
SEEDED_MASKS = frozenset(
    {
        "causal_document",
        "document",
        "share_question",
        "prefix_lm_document",
        "causal_blockwise",
        "random_eviction",
    }
)
#: Masks with no bounds: FA4 dense and SDPA run these.
DENSE_MASKS = frozenset({"full", "causal"})


@dataclass(frozen=True)
class Case:
    """One (mask, length, head dim, heads, split) configuration."""

    mask: str
    seqlen: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seed: int = 0

    @property
    def key(self) -> tuple:
        """What rows of the same configuration share (all but the split)."""
        return (self.mask, self.seqlen, self.head_dim, self.heads, self.kv_heads)

    def label(self) -> str:
        gqa = f" Hkv={self.kv_heads}" if self.kv_heads != self.heads else ""
        split = f" split={self.seed}" if self.mask in SEEDED_MASKS else ""
        return f"{self.mask} S={fmt_len(self.seqlen)} D={self.head_dim}{gqa}{split}"


def fmt_len(s: int) -> str:
    """8192 -> '8K'; other values as they are."""
    return f"{s // 1024}K" if s % 1024 == 0 else str(s)


def parse_len(text: str) -> int:
    """'8K' / '8k' / '8192' -> 8192."""
    t = text.strip().lower()
    if t.endswith("k"):
        return int(t[:-1]) * 1024
    return int(t)


def batch_for(seqlen: int) -> int:
    """B = 128K / S (at least 1)."""
    return max(1, TOKENS_PER_BATCH // seqlen)


def check_masks(names: list[str]) -> list[str]:
    """Validate mask names against the registry (raises ValueError naming the bad one)."""
    for n in names:
        if n not in MASKS:
            raise ValueError(f"unknown mask {n!r}; registered: {', '.join(mask_names())}")
    return names


def build_cases(
    plan: list[tuple[int, list[str]]],
    *,
    head_dims: list[int],
    gqa: bool = False,
    splits: int = 1,
) -> list[Case]:
    """Cases for a plan of (seqlen, masks) groups; seeded masks get ``splits`` seeds 0..splits-1."""
    cases = []
    kv = GQA_KV_HEADS if gqa else NUM_HEADS
    for seqlen, names in plan:
        for d in head_dims:
            for name in check_masks(names):
                seeds = range(splits) if name in SEEDED_MASKS else range(1)
                for seed in seeds:
                    cases.append(Case(name, seqlen, batch_for(seqlen), NUM_HEADS, kv, d, seed))
    return cases
