"""FLOP counting for attention with a mask (FlashAttention's conventions).

Forward: two matrix products per visible (row, column) pair: 2·D (Q K^T) + 2·Dv (P V) FLOPs.
Backward: 2.5x the forward (five products instead of two); forward+backward: 3.5x.

Two ways to count the visible pairs:

- by block density (FlashMask's and the anchors' convention): every 128x128 tile that is not
  fully masked counts as dense, so ``density x B·H·Sq·Sk`` pairs;
- exactly: the unmasked (row, column) pairs of the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

#: FLOPs of each direction relative to the forward.
DIRECTION_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}
DIRECTIONS = tuple(DIRECTION_FACTOR)


def fwd_flops_per_pair(head_dim: int, head_dim_v: int | None = None) -> int:
    """Forward FLOPs per visible (row, column) pair: 2·D + 2·Dv."""
    dv = head_dim if head_dim_v is None else head_dim_v
    return 2 * head_dim + 2 * dv


def direction_factor(direction: str) -> float:
    """FLOPs of ``direction`` relative to the forward ('fwd', 'bwd' or 'fwd+bwd')."""
    try:
        return DIRECTION_FACTOR[direction]
    except KeyError:
        choices = ", ".join(DIRECTIONS)
        raise ValueError(f"direction {direction!r}: choose one of {choices}") from None


def dense_pairs(batch: int, heads: int, seqlen_q: int, seqlen_k: int) -> int:
    """All (row, column) pairs over batch and query heads."""
    return batch * heads * seqlen_q * seqlen_k


def flops(pairs: float, head_dim: int, direction: str, head_dim_v: int | None = None) -> float:
    """FLOPs of ``direction`` for ``pairs`` visible pairs (summed over batch and heads)."""
    return pairs * fwd_flops_per_pair(head_dim, head_dim_v) * direction_factor(direction)


def tflops_per_s(flop: float, ms: float) -> float:
    """TFLOP/s of ``flop`` FLOPs done in ``ms`` milliseconds (nan for a non-positive time)."""
    if not ms or ms <= 0:
        return float("nan")
    return flop / (ms * 1e-3) / 1e12


@dataclass(frozen=True)
class MaskWork:
    """How much work a mask leaves, for one case: block density and exact visible pairs."""

    batch: int
    heads: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    density: float  # share of 128x128 tiles not fully masked
    visible_pairs: int  # exact, over batch and query heads

    @property
    def dense_pairs(self) -> int:
        return dense_pairs(self.batch, self.heads, self.seqlen_q, self.seqlen_k)

    @property
    def visible_fraction(self) -> float:
        return self.visible_pairs / self.dense_pairs if self.dense_pairs else 0.0

    def flops_block(self, direction: str) -> float:
        """FLOPs counted by block density (partial tiles count as dense)."""
        return flops(self.density * self.dense_pairs, self.head_dim, direction)

    def flops_exact(self, direction: str) -> float:
        """FLOPs counted by the exact unmasked pairs."""
        return flops(self.visible_pairs, self.head_dim, direction)

    def tflops_block(self, direction: str, ms: float) -> float:
        return tflops_per_s(self.flops_block(direction), ms)

    def tflops_exact(self, direction: str, ms: float) -> float:
        return tflops_per_s(self.flops_exact(direction), ms)


def mask_work(mask, batch: int, heads: int, head_dim: int) -> MaskWork:
    """`MaskWork` of an `fm4.FlashMask` for ``batch`` x ``heads`` query heads.

    The mask's own batch and head counts (1 when broadcast) are scaled up to the case's.
    """
    sq, sk = mask.seqlen_q, mask.seqlen_k
    pairs = mask.visible_pairs()  # over the mask's batch and mask heads
    scale_b = batch // mask.batch if mask.batch else batch
    scale_h = heads // mask.num_heads if mask.num_heads else heads
    return MaskWork(
        batch=batch,
        heads=heads,
        seqlen_q=sq,
        seqlen_k=sk,
        head_dim=head_dim,
        density=mask.block_density(),
        visible_pairs=int(pairs) * scale_b * scale_h,
    )
