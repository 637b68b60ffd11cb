"""`FlashMask`: the user-facing mask object (bounds + causal), with its debugging surface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from fm4.masks.bounds import (
    BOUND_NAMES,
    check_bounds_meta,
    check_bounds_values,
    masked_rows,
    visible_rows_per_block,
)

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


class FlashMask:
    """A FlashMask column-bound attention mask.

    Holds ``startend_row_indices`` (int32 ``[B, Hm, Sk, n]``, n in {1, 2, 4}, or None) and
    ``causal``; see `fm4.masks.bounds` (and shared/MASKS.md) for what the bounds mean. Query
    head h uses mask head ``h // (H // Hm)``; Hm may be 1, the number of key/value heads, or the
    number of query heads.

    The dense equivalent (True = the query row may attend to the key column) is::

        i = torch.arange(Sq)[:, None]; j = torch.arange(Sk)[None, :]
        visible = torch.ones(Sq, Sk, dtype=torch.bool)
        if causal: visible &= j <= i + (Sk - Sq)
        # n = 1 (causal):      visible &= ~(i >= LTS[j])
        # n = 2, causal:       visible &= ~((LTS[j] <= i) & (i < LTE[j]))
        # n = 2, not causal:   visible &= ~((i >= LTS[j]) | (i < UTE[j]))
        # n = 4:               visible &= ~(((LTS[j] <= i) & (i < LTE[j]))
        #                                   | ((UTS[j] <= i) & (i < UTE[j])))

    which is what ``mask.to_dense()`` returns, shaped ``[B, Hm, Sq, Sk]``.

    Args:
        startend_row_indices: int32 ``[B, Hm, Sk, n]`` or None (no mask beyond ``causal``).
        causal: whether the causal triangle (bottom-right aligned) is masked too.
        seqlen_q: the query length the mask is meant for (needed by ``to_dense`` and friends;
            may also be given per call). Defaults to Sk when bounds are given.
        seqlen_k: the key length; taken from the bounds when they are given.
        check_values: check that no bound is negative (one device read-back).
    """

    def __init__(
        self,
        startend_row_indices: torch.Tensor | None,
        causal: bool = False,
        *,
        seqlen_q: int | None = None,
        seqlen_k: int | None = None,
        check_values: bool = True,
    ) -> None:
        sri = startend_row_indices
        if sri is not None:
            check_bounds_meta(sri, causal)
            if seqlen_k is not None and seqlen_k != sri.shape[2]:
                raise ValueError(
                    f"seqlen_k={seqlen_k} does not match startend_row_indices of shape "
                    f"{tuple(sri.shape)} (dimension 2 is the key length {sri.shape[2]}); "
                    "drop seqlen_k or make them agree"
                )
            seqlen_k = sri.shape[2]
            if seqlen_q is None:
                seqlen_q = seqlen_k
            if check_values:
                check_bounds_values(sri)
        for name, val in (("seqlen_q", seqlen_q), ("seqlen_k", seqlen_k)):
            if val is not None and (not isinstance(val, int) or val < 0):
                raise ValueError(f"{name}={val!r} must be a non-negative int")
        self.startend_row_indices = sri
        self.causal = bool(causal)
        self.seqlen_q = seqlen_q
        self.seqlen_k = seqlen_k

    # ----------------------------------------------------------------- properties
    @property
    def n(self) -> int:
        """Bounds per column (0 when there are no bounds)."""
        return 0 if self.startend_row_indices is None else self.startend_row_indices.shape[-1]

    @property
    def batch(self) -> int:
        return 1 if self.startend_row_indices is None else self.startend_row_indices.shape[0]

    @property
    def num_heads(self) -> int:
        """Hm, the number of mask heads."""
        return 1 if self.startend_row_indices is None else self.startend_row_indices.shape[1]

    @property
    def device(self) -> torch.device:
        sri = self.startend_row_indices
        return torch.device("cpu") if sri is None else sri.device

    @property
    def bound_names(self) -> tuple[str, ...]:
        return BOUND_NAMES.get((self.causal, self.n), ())

    def _lengths(self, seqlen_q: int | None, seqlen_k: int | None = None) -> tuple[int, int]:
        sq = seqlen_q if seqlen_q is not None else self.seqlen_q
        sk = seqlen_k if seqlen_k is not None else self.seqlen_k
        if sq is None or sk is None:
            raise ValueError(
                "this FlashMask does not know its sequence lengths (it has no bounds): pass "
                "seqlen_q=... and seqlen_k=..., or build it with FlashMask(None, causal, "
                "seqlen_q=..., seqlen_k=...)"
            )
        if self.seqlen_k is not None and sk != self.seqlen_k:
            raise ValueError(f"seqlen_k={sk} does not match the mask's key length {self.seqlen_k}")
        return sq, sk

    # ----------------------------------------------------------------- conversions
    def to(self, device: torch.device | str) -> FlashMask:
        """The same mask with its bounds on ``device``."""
        sri = self.startend_row_indices
        return FlashMask(
            None if sri is None else sri.to(device),
            self.causal,
            seqlen_q=self.seqlen_q,
            seqlen_k=self.seqlen_k,
            check_values=False,
        )

    def __getitem__(self, index) -> FlashMask:
        """Slice batch and mask heads: ``mask[b]``, ``mask[b, h]``, ``mask[:, 0:2]`` (dims kept)."""
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > 2:
            raise IndexError("FlashMask slicing takes at most (batch, head) indices")
        index = tuple(slice(i, i + 1) if isinstance(i, int) else i for i in index)
        sri = self.startend_row_indices
        return FlashMask(
            None if sri is None else sri[index],
            self.causal,
            seqlen_q=self.seqlen_q,
            seqlen_k=self.seqlen_k,
            check_values=False,
        )

    def to_dense(self, seqlen_q: int | None = None, *, seqlen_k: int | None = None) -> torch.Tensor:
        """The dense mask, bool ``[B, Hm, Sq, Sk]``: True where the query may attend the key."""
        sq, sk = self._lengths(seqlen_q, seqlen_k)
        rows = torch.arange(sq, device=self.device)
        masked = masked_rows(self.startend_row_indices, self.causal, rows, sq, sk)
        return ~masked

    @classmethod
    def from_dense(
        cls, visible: torch.Tensor, *, causal: bool | None = None, n: int | None = None
    ) -> FlashMask:
        """Extract the bounds from a dense bool mask ``[B, Hm, Sq, Sk]`` (True = attend).

        With ``causal``/``n`` left as None the simplest representation is chosen, in the order
        no bounds, causal n=1, causal n=2, non-causal n=2, non-causal n=4. Raises ``ValueError``
        naming the first column that no allowed mode can express.
        """
        from fm4.masks.from_dense import bounds_from_dense

        sri, causal_out = bounds_from_dense(visible, causal=causal, n=n)
        return cls(sri, causal_out, seqlen_q=visible.shape[2], seqlen_k=visible.shape[3])

    def to_block_mask(
        self,
        seqlen_q: int | None = None,
        *,
        num_heads: int | None = None,
        block_size: int = 128,
    ) -> BlockMask:
        """A FlexAttention ``BlockMask`` for this mask (built from fm4's tile lists, no compile).

        Args:
            num_heads: query heads H; mask heads are repeated to H when 1 < Hm < H (FlexAttention
                takes 1 or H heads). Default: Hm.
        """
        from fm4.masks.flex import to_block_mask

        sq, sk = self._lengths(seqlen_q)
        return to_block_mask(self, sq, sk, num_heads=num_heads, block_size=block_size)

    # ----------------------------------------------------------------- statistics
    def visible_pairs(self, seqlen_q: int | None = None) -> int:
        """Exact number of visible (row, column) pairs summed over batch and mask heads."""
        sq, sk = self._lengths(seqlen_q)
        starts = torch.zeros(1, dtype=torch.int64, device=self.device)
        ends = torch.full((1,), sq, dtype=torch.int64, device=self.device)
        vis = visible_rows_per_block(self.startend_row_indices, self.causal, sq, sk, starts, ends)
        return int(vis.sum()) * (self.batch * self.num_heads // (vis.shape[0] * vis.shape[1]))

    def block_density(
        self, seqlen_q: int | None = None, *, tile_m: int = 128, tile_n: int = 128
    ) -> float:
        """Share of ``tile_m x tile_n`` tiles that are not fully masked (exact), over B and Hm."""
        from fm4.masks.tiles import classify_tiles_exact

        sq, sk = self._lengths(seqlen_q)
        flags = classify_tiles_exact(self.startend_row_indices, self.causal, sq, sk, tile_m, tile_n)
        if flags.numel() == 0:
            return 0.0
        return float((flags != 0).float().mean())

    def sparsity(self, seqlen_q: int | None = None, *, tile_m: int = 128, tile_n: int = 128):
        """Percentage of tiles skipped (FlexAttention's ``BlockMask.sparsity`` convention)."""
        return 100.0 * (1.0 - self.block_density(seqlen_q, tile_m=tile_m, tile_n=tile_n))

    # ----------------------------------------------------------------- pictures
    def picture(
        self, seqlen_q: int | None = None, *, batch: int = 0, head: int = 0, max_size: int = 48
    ) -> str:
        """A text picture of one (batch, head): '█' all visible, '░' partly, ' ' all masked."""
        from fm4.masks.picture import text_picture

        sq, sk = self._lengths(seqlen_q)
        return text_picture(self, sq, sk, batch=batch, head=head, max_size=max_size)

    def save_png(
        self,
        path: str,
        seqlen_q: int | None = None,
        *,
        batch: int = 0,
        head: int = 0,
        max_size: int = 1024,
    ) -> None:
        """Write a PNG picture of one (batch, head) (white = visible), at most max_size pixels."""
        from fm4.masks.picture import save_png

        sq, sk = self._lengths(seqlen_q)
        save_png(self, path, sq, sk, batch=batch, head=head, max_size=max_size)

    def __repr__(self) -> str:
        sri = self.startend_row_indices
        if sri is None:
            body = f"startend_row_indices=None, causal={self.causal}"
        else:
            names = ", ".join(self.bound_names)
            body = (
                f"startend_row_indices=int32{list(sri.shape)} ({names}), causal={self.causal}, "
                f"device={sri.device}"
            )
        return f"FlashMask({body}, seqlen_q={self.seqlen_q}, seqlen_k={self.seqlen_k})"


def as_flashmask(
    mask: FlashMask | torch.Tensor | None, causal: bool, *, argname: str = "mask"
) -> FlashMask | None:
    """Normalise the public API's ``mask`` argument (FlashMask, bounds tensor or None)."""
    if mask is None or isinstance(mask, FlashMask):
        return mask
    if isinstance(mask, torch.Tensor):
        return FlashMask(mask, causal, check_values=False)
    raise TypeError(
        f"{argname} must be an fm4.FlashMask, an int32 startend_row_indices tensor or None, "
        f"got {type(mask).__name__}"
    )


__all__: Sequence[str] = ["FlashMask", "as_flashmask"]
