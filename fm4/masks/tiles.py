"""Tile flags and tile lists: which ``tile_m x tile_n`` tiles a kernel visits, and how.

Each tile of the score matrix is one of

* ``SKIP`` (0): fully masked. Appears in no list: no load, no MMA.
* ``PARTIAL`` (1): some element may be masked; the kernel applies the bounds element-wise.
* ``UNMASKED`` (2): no element is masked; the kernel does no mask work at all.

The hot path never builds a dense mask. It takes the per-n_block minimum and maximum of each
(normalised) bound, O(B·Hm·Sk) (`block_minmax`; a CuTe DSL kernel on CUDA), then classifies
every tile from those, O(B·Hm·Mt·Nt) (`classify_tiles`), then turns the flags into per-m_block
lists of n_blocks (forward) and per-n_block lists of m_blocks (backward) (`build_tile_lists`).
On CUDA, `build_tile_lists` does the classification and both lists in one CuTe DSL launch after
the min/max one (`fm4.cute_kernels.tile_lists`), with the same results as the torch code here.

The min/max test may be conservative (call a fully masked tile partial, when a column's rows are
covered only by the union of two intervals), never wrong the other way. `classify_tiles_exact`
gives the exact answer at O(B·Hm·Mt·Sk) cost, for statistics and tests.

Note [Ragged last block]: a tile whose columns extend past Sk (the last n_block when
Sk % tile_n != 0) is never UNMASKED, so UNMASKED tiles need no key-length check either. Rows past
Sq in the last m_block are not checked: their results are never stored.

Note [Empty intervals]: before the min/max, each two-sided interval [A, E) is clamped to Sq and,
if empty (A >= E), replaced by [Sq, Sq). Then an empty column never makes a tile look touched
(min A stays high) nor covered (max A = Sq > any m0).

Note [Bound codes]: a partial tile is partial because of few of its column bounds. For each
bound b_k, the comparison "row i >= b_k[j]" over the tile's rows and columns is ALWAYS true
(m0 >= max b_k), NEVER true (m1 <= min b_k) or ACTIVE (mixed), from the same per-n_block
min/max. `bound_codes` packs that into 2 bits per bound (bit 2k: ACTIVE, bit 2k + 1: ALWAYS),
and the forward lists carry one code per partial entry (``fwd_partial_code``), so that the
kernel loads and compares only the ACTIVE bounds and uses the constant for the others. The
kernel compares the raw bounds, not the normalised ones; the constants stay right for them
except one case, which is made ACTIVE: the end E of a two-sided interval [A, E) that is NEVER
(every row i < E) while some column of the n_block has an empty interval (max A = Sq), whose
raw E may be anything. ALWAYS on A implies no empty column; NEVER on A or ALWAYS on E means the
interval masks nothing in the tile, which the raw comparisons of the other bound cannot undo.
A code with every bound ACTIVE (`ALL_ACTIVE`) is always correct (the full element-wise rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fm4.masks.bounds import visible_rows_per_block

SKIP, PARTIAL, UNMASKED = 0, 1, 2
#: Note [Bound codes]: bit 2k of a code is set when bound k is ACTIVE in the tile, bit 2k + 1
#: when "row >= bound k" holds for every row and column of the tile (ALWAYS); neither: NEVER.
CODE_ACTIVE, CODE_ALWAYS = 1, 2
ALL_ACTIVE = sum(CODE_ACTIVE << (2 * k) for k in range(4))


def interval_pairs(causal: bool, n: int) -> list[tuple[int, int]]:
    """The (start, end) bound indices of the two-sided intervals [A, E) of a mask mode."""
    return [(0, 1)] if (causal and n == 2) else [(0, 1), (2, 3)] if n == 4 else []


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def normalize_bounds(sri: torch.Tensor, causal: bool, seqlen_q: int) -> torch.Tensor:
    """Clamp to Sq and canonicalise empty two-sided intervals to [Sq, Sq) (Note [Empty intervals]).

    sri: int32 ``[B, Hm, Sk, n]``; returns a new int32 tensor of the same shape.
    """
    b = sri.clamp(max=seqlen_q)
    for s, e in interval_pairs(causal, b.shape[-1]):
        empty = b[..., s] >= b[..., e]
        b[..., s] = torch.where(empty, seqlen_q, b[..., s])
        b[..., e] = torch.where(empty, seqlen_q, b[..., e])
    return b


def block_minmax_torch(sri: torch.Tensor, causal: bool, seqlen_q: int, tile_n: int) -> torch.Tensor:
    """Per-n_block min and max of each normalised bound.

    sri: int32 ``[B, Hm, Sk, n]``. Returns int32 ``[B, Hm, Nt, n, 2]`` ([..., 0] min, [..., 1] max).
    """
    B, Hm, Sk, n = sri.shape
    nt = _cdiv(Sk, tile_n)
    b = normalize_bounds(sri, causal, seqlen_q)
    pad = nt * tile_n - Sk
    # Padding columns must not change a min (pad with Sq) nor a max (pad with 0).
    lo = torch.nn.functional.pad(b, (0, 0, 0, pad), value=seqlen_q).view(B, Hm, nt, tile_n, n)
    hi = torch.nn.functional.pad(b, (0, 0, 0, pad), value=0).view(B, Hm, nt, tile_n, n)
    return torch.stack((lo.amin(dim=3), hi.amax(dim=3)), dim=-1).to(torch.int32)


def block_minmax(
    sri: torch.Tensor, causal: bool, seqlen_q: int, tile_n: int, *, impl: str = "auto"
) -> torch.Tensor:
    """Per-n_block min/max: the CuTe DSL kernel on CUDA, else `block_minmax_torch`.

    ``impl``: 'auto' (by device), 'torch' or 'cute'.
    """
    if impl not in ("auto", "torch", "cute"):
        raise ValueError(f"impl={impl!r}: choose 'auto', 'torch' or 'cute'")
    use_cute = impl == "cute" or (impl == "auto" and sri.is_cuda and sri.shape[2] > 0)
    if use_cute:
        from fm4.cute_kernels.tile_minmax import block_minmax_cute

        return block_minmax_cute(sri, causal, seqlen_q, tile_n)
    return block_minmax_torch(sri, causal, seqlen_q, tile_n)


def classify_tiles(
    sri: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    tile_m: int,
    tile_n: int,
    *,
    minmax: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Tile flags from per-n_block min/max (conservative, never wrong).

    Returns int8 ``[B, Hm, Mt, Nt]`` (``[1, 1, Mt, Nt]`` without bounds) of SKIP/PARTIAL/UNMASKED.
    """
    mt, nt = _cdiv(seqlen_q, tile_m), _cdiv(seqlen_k, tile_n)
    dev = sri.device if sri is not None else torch.device("cpu")
    m0 = torch.arange(mt, device=dev, dtype=torch.int32)[:, None] * tile_m  # (Mt, 1)
    m1 = (m0 + tile_m).clamp(max=seqlen_q)
    n0 = torch.arange(nt, device=dev, dtype=torch.int32)[None, :] * tile_n  # (1, Nt)
    n1 = n0 + tile_n
    skip = torch.zeros(mt, nt, dtype=torch.bool, device=dev)
    clean = (n1 <= seqlen_k).expand(mt, nt)  # Note [Ragged last block]
    if causal:
        off = seqlen_k - seqlen_q
        skip = skip | (m1 <= n0 - off)
        clean = clean & (m0 >= n1 - 1 - off)
    if sri is None:
        flags = torch.where(skip, SKIP, torch.where(clean, UNMASKED, PARTIAL))
        return flags.to(torch.int8)[None, None]
    if minmax is None:
        minmax = block_minmax(sri, causal, seqlen_q, tile_n, impl=impl)
    mm = minmax.unsqueeze(2)  # (B, Hm, 1, Nt, n, 2)

    def lo(c: int) -> torch.Tensor:
        return mm[..., c, 0]

    def hi(c: int) -> torch.Tensor:
        return mm[..., c, 1]

    n = sri.shape[-1]
    # Each masked interval [A, E): covers the tile if m0 >= max A and m1 <= min E; leaves it
    # untouched if m1 <= min A or m0 >= max E. One-sided intervals drop the trivial half.
    if n == 1:  # [LTS, Sq)
        cover = m0 >= hi(0)
        untouched = m1 <= lo(0)
    elif causal:  # [LTS, LTE)
        cover = (m0 >= hi(0)) & (m1 <= lo(1))
        untouched = (m1 <= lo(0)) | (m0 >= hi(1))
    elif n == 2:  # [LTS, Sq) and [0, UTE)
        cover = (m0 >= hi(0)) | (m1 <= lo(1))
        untouched = (m1 <= lo(0)) & (m0 >= hi(1))
    else:  # [LTS, LTE) and [UTS, UTE)
        cover = ((m0 >= hi(0)) & (m1 <= lo(1))) | ((m0 >= hi(2)) & (m1 <= lo(3)))
        untouched = ((m1 <= lo(0)) | (m0 >= hi(1))) & ((m1 <= lo(2)) | (m0 >= hi(3)))
    skip = skip | cover
    clean = clean & untouched
    flags = torch.where(skip, SKIP, torch.where(clean, UNMASKED, PARTIAL))
    return flags.to(torch.int8)


def classify_tiles_exact(
    sri: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    tile_m: int,
    tile_n: int,
    *,
    rows_per_chunk: int = 1 << 22,
) -> torch.Tensor:
    """Exact tile flags, from per-column visible-row counts: int8 ``[B, Hm, Mt, Nt]``.

    O(B·Hm·Mt·Sk) integer work in chunks of m_blocks; for statistics and tests, not the hot path.
    """
    mt, nt = _cdiv(seqlen_q, tile_m), _cdiv(seqlen_k, tile_n)
    dev = sri.device if sri is not None else torch.device("cpu")
    bh = 1 if sri is None else sri.shape[0] * sri.shape[1]
    chunk = max(1, rows_per_chunk // max(1, bh * seqlen_k))
    pad = nt * tile_n - seqlen_k
    out = []
    for c0 in range(0, mt, chunk):
        mb = torch.arange(c0, min(mt, c0 + chunk), device=dev, dtype=torch.int64)
        starts = mb * tile_m
        ends = (starts + tile_m).clamp(max=seqlen_q)
        vis = visible_rows_per_block(sri, causal, seqlen_q, seqlen_k, starts, ends)
        rows = (ends - starts)[:, None]  # (R, 1)
        full_col = torch.nn.functional.pad(vis == rows, (0, pad), value=False)
        any_vis = torch.nn.functional.pad(vis > 0, (0, pad), value=False)
        shp = (*vis.shape[:-1], nt, tile_n)
        all_full = full_col.view(shp).all(-1)
        some = any_vis.view(shp).any(-1)
        out.append(torch.where(~some, SKIP, torch.where(all_full, UNMASKED, PARTIAL)))
    if not out:
        b, h = (1, 1) if sri is None else sri.shape[:2]
        return torch.zeros(b, h, 0, nt, dtype=torch.int8, device=dev)
    return torch.cat(out, dim=2).to(torch.int8)


def bound_codes(minmax: torch.Tensor, causal: bool, seqlen_q: int, tile_m: int) -> torch.Tensor:
    """Per-tile bound codes (Note [Bound codes]) from the per-n_block min/max.

    minmax: int32 ``[B, Hm, Nt, n, 2]`` (`block_minmax`). Returns int32 ``[B, Hm, Mt, Nt]``;
    meaningful for the partial tiles (the kernels read it for those only).
    """
    B, Hm, nt, n, _ = minmax.shape
    mt = _cdiv(seqlen_q, tile_m)
    dev = minmax.device
    m0 = torch.arange(mt, device=dev, dtype=torch.int32)[:, None] * tile_m  # (Mt, 1)
    m1 = (m0 + tile_m).clamp(max=seqlen_q)
    lo = minmax[..., 0].unsqueeze(2)  # (B, Hm, 1, Nt, n)
    hi = minmax[..., 1].unsqueeze(2)
    always = [m0 >= hi[..., k] for k in range(n)]  # each (B, Hm, Mt, Nt)
    never = [m1 <= lo[..., k] for k in range(n)]
    for a, e in interval_pairs(causal, n):
        never[e] = never[e] & (hi[..., a] < seqlen_q)  # an empty column: E stays ACTIVE
    code = torch.zeros(B, Hm, mt, nt, dtype=torch.int32, device=dev)
    for k in range(n):
        active = ~(always[k] | never[k])
        code |= (active.to(torch.int32) * CODE_ACTIVE) << (2 * k)
        code |= (always[k].to(torch.int32) * CODE_ALWAYS) << (2 * k)
    return code


def _lists(flags: torch.Tensor, kind: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Count and ascending index list of the entries equal to ``kind`` along the last dim."""
    hit = flags == kind
    cnt = hit.sum(-1, dtype=torch.int32)
    last = flags.shape[-1]
    pos = torch.where(hit, hit.cumsum(-1) - 1, last)  # misses go to a dump column
    idx = torch.zeros(*flags.shape[:-1], last + 1, dtype=torch.int32, device=flags.device)
    src = torch.arange(last, dtype=torch.int32, device=flags.device).expand_as(pos)
    idx.scatter_(-1, pos, src)
    return cnt, idx[..., :last].contiguous()


@dataclass
class TileLists:
    """What a kernel receives for a mask: per-row (and per-column) lists of tiles to visit.

    Forward, per (b, mask head, m_block): the n_blocks, partial and unmasked apart; backward, per
    (b, mask head, n_block): the m_blocks. ``*_cnt`` int32, ``*_idx`` int32 with the first
    ``cnt`` entries valid, ascending; fully masked tiles appear in no list.
    ``fwd_partial_code``: the bound code (Note [Bound codes]) of each forward partial entry,
    zero past ``cnt``; None without bounds, or when the lists were made from flags alone
    (the forward kernel then takes every bound as ACTIVE).
    """

    tile_m: int
    tile_n: int
    flags: torch.Tensor  # int8 (B, Hm, Mt, Nt)
    fwd_partial_cnt: torch.Tensor  # (B, Hm, Mt)
    fwd_partial_idx: torch.Tensor  # (B, Hm, Mt, Nt)
    fwd_full_cnt: torch.Tensor  # (B, Hm, Mt)
    fwd_full_idx: torch.Tensor  # (B, Hm, Mt, Nt)
    # Backward lists: None unless built with backward=True.
    bwd_partial_cnt: torch.Tensor | None = None  # (B, Hm, Nt)
    bwd_partial_idx: torch.Tensor | None = None  # (B, Hm, Nt, Mt)
    bwd_full_cnt: torch.Tensor | None = None  # (B, Hm, Nt)
    bwd_full_idx: torch.Tensor | None = None  # (B, Hm, Nt, Mt)
    fwd_partial_code: torch.Tensor | None = None  # (B, Hm, Mt, Nt), with fwd_partial_idx

    @classmethod
    def from_flags(
        cls,
        flags: torch.Tensor,
        tile_m: int,
        tile_n: int,
        *,
        backward: bool = True,
        codes: torch.Tensor | None = None,
    ) -> TileLists:
        """Lists from tile flags; ``codes`` (`bound_codes`, per tile) gives the partial
        entries their bound codes."""
        fp_cnt, fp_idx = _lists(flags, PARTIAL)
        ff_cnt, ff_idx = _lists(flags, UNMASKED)
        lists = cls(tile_m, tile_n, flags, fp_cnt, fp_idx, ff_cnt, ff_idx)
        if codes is not None:
            slot = torch.arange(flags.shape[-1], device=flags.device, dtype=torch.int32)
            picked = torch.gather(codes.to(flags.device), -1, fp_idx.long())
            lists.fwd_partial_code = torch.where(slot < fp_cnt[..., None], picked, 0)
        if backward:
            lists.add_backward()
        return lists

    def add_backward(self) -> TileLists:
        """Build the backward (per n_block) lists from the flags, if not built yet."""
        if self.bwd_partial_cnt is None:
            flags_t = self.flags.transpose(-1, -2)
            self.bwd_partial_cnt, self.bwd_partial_idx = _lists(flags_t, PARTIAL)
            self.bwd_full_cnt, self.bwd_full_idx = _lists(flags_t, UNMASKED)
        return self

    @property
    def num_visited(self) -> int:
        """Tiles visited (partial + unmasked) over all (b, mask head)."""
        return int(self.fwd_partial_cnt.sum() + self.fwd_full_cnt.sum())


def build_tile_lists(
    sri: torch.Tensor | None,
    causal: bool,
    seqlen_q: int,
    seqlen_k: int,
    tile_m: int,
    tile_n: int,
    *,
    impl: str = "auto",
    backward: bool = True,
    device: torch.device | str | None = None,
) -> TileLists:
    """Tile flags and lists for a mask, computed on the bounds' device (no dense mask).

    ``backward=False`` skips the per-n_block lists (the forward does not need them).
    ``impl``: 'auto' (by device), 'torch' (`classify_tiles` + `TileLists.from_flags`) or 'cute'
    (on CUDA: the min/max kernel and the lists kernel of `fm4.cute_kernels.tile_lists`, two
    launches, bit-identical results). Without bounds, ``device`` says where the lists go
    (default: the CPU).
    """
    if tile_m <= 0 or tile_n <= 0:
        raise ValueError(f"tile sizes must be positive, got tile_m={tile_m}, tile_n={tile_n}")
    if impl not in ("auto", "torch", "cute"):
        raise ValueError(f"impl={impl!r}: choose 'auto', 'torch' or 'cute'")
    dev = sri.device if sri is not None else torch.device(device if device is not None else "cpu")
    if impl == "cute" or (impl == "auto" and dev.type == "cuda"):
        from fm4.cute_kernels.tile_lists import build_tile_lists_cute

        return build_tile_lists_cute(
            sri, causal, seqlen_q, seqlen_k, tile_m, tile_n, backward=backward, device=dev
        )
    minmax = codes = None
    if sri is not None:
        minmax = block_minmax(sri, causal, seqlen_q, tile_n, impl=impl)
        codes = bound_codes(minmax, causal, seqlen_q, tile_m)
    flags = classify_tiles(
        sri, causal, seqlen_q, seqlen_k, tile_m, tile_n, minmax=minmax, impl=impl
    )
    return TileLists.from_flags(flags.to(dev), tile_m, tile_n, backward=backward, codes=codes)
