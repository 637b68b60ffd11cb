"""Tile flags and lists against brute-force classification of the dense mask."""

from __future__ import annotations

import pytest
import torch

from fm4.masks import FlashMask, build_tile_lists, make_mask, mask_names
from fm4.masks.tiles import (
    PARTIAL,
    SKIP,
    UNMASKED,
    TileLists,
    block_minmax_torch,
    classify_tiles,
    classify_tiles_exact,
)
from tests.helpers import MODES, dense_from_bounds_loops, random_bounds


def brute_force_flags(dense: torch.Tensor, tile_m: int, tile_n: int) -> torch.Tensor:
    """Exact flags from a dense visible mask [B, H, Sq, Sk]; ragged last n_block never UNMASKED."""
    B, H, sq, sk = dense.shape
    mt, nt = -(-sq // tile_m), -(-sk // tile_n)
    out = torch.empty(B, H, mt, nt, dtype=torch.int8)
    for a in range(mt):
        for c in range(nt):
            t = dense[:, :, a * tile_m : (a + 1) * tile_m, c * tile_n : (c + 1) * tile_n]
            ragged = (c + 1) * tile_n > sk
            vis_any = t.flatten(2).any(-1)
            vis_all = t.flatten(2).all(-1) & (not ragged)
            out[:, :, a, c] = torch.where(
                ~vis_any, SKIP, torch.where(vis_all, UNMASKED, PARTIAL)
            ).to(torch.int8)
    return out


def assert_sound(flags: torch.Tensor, exact: torch.Tensor):
    """flags may call a SKIP or UNMASKED tile PARTIAL, never anything else."""
    agree = flags == exact
    conservative = (flags == PARTIAL) & (exact != PARTIAL)
    wrong = ~(agree | conservative)
    assert not bool(wrong.any()), f"unsound flag at {wrong.nonzero()[0].tolist()}"


SHAPES = [(1, 1), (113, 203), (203, 113), (128, 128), (257, 300)]
TILES = [(16, 16), (64, 32), (128, 128)]


@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("tile_m,tile_n", TILES)
def test_random_bounds_flags(causal, n, sq, sk, tile_m, tile_n):
    gen = torch.Generator().manual_seed(sq + 7 * sk + 13 * n + tile_m + 3 * tile_n + causal)
    sri = random_bounds(2, 2, sq, sk, n, gen, causal)
    dense = FlashMask(sri, causal, seqlen_q=sq).to_dense()
    brute = brute_force_flags(dense, tile_m, tile_n)
    # The exact classifier matches the brute force exactly.
    assert torch.equal(classify_tiles_exact(sri, causal, sq, sk, tile_m, tile_n), brute)
    # The min/max classifier is sound (conservative at most).
    flags = classify_tiles(sri, causal, sq, sk, tile_m, tile_n, impl="torch")
    assert flags.shape == brute.shape
    assert_sound(flags, brute)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sq,sk", SHAPES)
def test_no_bounds_flags_are_exact(causal, sq, sk):
    dense = FlashMask(None, causal, seqlen_q=sq, seqlen_k=sk).to_dense()
    brute = brute_force_flags(dense, 32, 64)
    assert torch.equal(classify_tiles(None, causal, sq, sk, 32, 64), brute)


@pytest.mark.parametrize("name", mask_names())
@pytest.mark.parametrize("S", [203, 1024])
def test_registry_flags_exact_or_nearly(name, S):
    """On the suite's masks, min/max flags are sound, and skip what the exact test skips."""
    m = make_mask(name, S, batch=2, num_heads=2)
    sri = m.startend_row_indices
    exact = classify_tiles_exact(sri, m.causal, S, S, 128, 128)
    flags = classify_tiles(sri, m.causal, S, S, 128, 128, impl="torch")
    assert_sound(flags, exact)
    # The conservative test loses no skipped tile on these masks.
    assert int((flags == SKIP).sum()) == int((exact == SKIP).sum())


def test_the_conservative_case_exists():
    """A tile covered only by the union of the causal triangle and [LTS, Sq) is called partial by
    the min/max test (allowed and documented); the exact classifier skips it."""
    S = 8
    sri = torch.arange(S, dtype=torch.int32).view(1, 1, S, 1)  # LTS_j = j: nobody sees column j
    exact = classify_tiles_exact(sri, True, S, S, 4, 4)
    flags = classify_tiles(sri, True, S, S, 4, 4, impl="torch")
    assert bool((exact == SKIP).all())
    # Diagonal tiles: neither the triangle nor [LTS, Sq) alone covers them.
    assert int(flags[0, 0, 0, 0]) == PARTIAL and int(flags[0, 0, 1, 1]) == PARTIAL
    # Off-diagonal tiles are caught by one of the two.
    assert int(flags[0, 0, 0, 1]) == SKIP and int(flags[0, 0, 1, 0]) == SKIP


@pytest.mark.parametrize("causal,n", MODES)
def test_block_minmax_torch_matches_loops(causal, n):
    gen = torch.Generator().manual_seed(n + 10 * causal)
    sq, sk, tile_n = 50, 77, 16
    sri = random_bounds(2, 3, sq, sk, n, gen, causal)
    mm = block_minmax_torch(sri, causal, sq, tile_n)
    assert mm.shape == (2, 3, 5, n, 2) and mm.dtype == torch.int32
    pairs = [(0, 1)] if (causal and n == 2) else [(0, 1), (2, 3)] if n == 4 else []
    for b in range(2):
        for h in range(3):
            for nb in range(5):
                cols = range(nb * tile_n, min(sk, (nb + 1) * tile_n))
                vals = []
                for j in cols:
                    v = [min(int(x), sq) for x in sri[b, h, j]]
                    for s, e in pairs:
                        if v[s] >= v[e]:
                            v[s] = v[e] = sq
                    vals.append(v)
                for c in range(n):
                    assert int(mm[b, h, nb, c, 0]) == min(v[c] for v in vals)
                    assert int(mm[b, h, nb, c, 1]) == max(v[c] for v in vals)


@pytest.mark.parametrize("causal,n", MODES)
def test_tile_lists(causal, n):
    gen = torch.Generator().manual_seed(99 + n)
    sri = random_bounds(2, 3, 300, 250, n, gen, causal)
    lists = build_tile_lists(sri, causal, 300, 250, 64, 32, impl="torch")
    flags = lists.flags
    mt, nt = flags.shape[-2:]
    assert lists.fwd_partial_idx.shape == (2, 3, mt, nt)
    assert lists.bwd_full_idx.shape == (2, 3, nt, mt)
    for t in (lists.fwd_partial_cnt, lists.fwd_partial_idx, lists.bwd_full_idx):
        assert t.dtype == torch.int32
    # Rebuild the flags from the lists, forward and backward.
    rebuilt_f = torch.zeros_like(flags)
    rebuilt_b = torch.zeros_like(flags)
    for b in range(2):
        for h in range(3):
            for m in range(mt):
                for kind, cnt, idx in (
                    (PARTIAL, lists.fwd_partial_cnt, lists.fwd_partial_idx),
                    (UNMASKED, lists.fwd_full_cnt, lists.fwd_full_idx),
                ):
                    sel = idx[b, h, m, : cnt[b, h, m]]
                    assert bool((sel[1:] > sel[:-1]).all()), "indices must ascend"
                    rebuilt_f[b, h, m, sel.long()] = kind
            for nb in range(nt):
                for kind, cnt, idx in (
                    (PARTIAL, lists.bwd_partial_cnt, lists.bwd_partial_idx),
                    (UNMASKED, lists.bwd_full_cnt, lists.bwd_full_idx),
                ):
                    sel = idx[b, h, nb, : cnt[b, h, nb]]
                    rebuilt_b[b, h, sel.long(), nb] = kind
    assert torch.equal(rebuilt_f, flags)
    assert torch.equal(rebuilt_b, flags)
    assert lists.num_visited == int((flags != SKIP).sum())


def test_empty_lengths():
    sri = torch.zeros(1, 1, 0, 1, dtype=torch.int32)
    lists = build_tile_lists(sri, True, 5, 0, 4, 4, impl="torch")
    assert lists.flags.shape == (1, 1, 2, 0) and lists.num_visited == 0
    lists = build_tile_lists(torch.zeros(1, 1, 3, 1, dtype=torch.int32), True, 0, 3, 4, 4)
    assert lists.flags.shape == (1, 1, 0, 1)


def test_backward_lists_on_demand():
    sri = make_mask("document", 300).startend_row_indices
    fwd = build_tile_lists(sri, False, 300, 300, 64, 64, impl="torch", backward=False)
    assert fwd.bwd_full_cnt is None
    both = build_tile_lists(sri, False, 300, 300, 64, 64, impl="torch")
    fwd.add_backward()
    assert torch.equal(fwd.bwd_partial_idx, both.bwd_partial_idx)
    assert torch.equal(fwd.bwd_full_cnt, both.bwd_full_cnt)


def _code_rule_masked(sri, codes, causal, sq, sk, tile_m, tile_n, b, h, mb, nb):
    """The forward kernel's mask rule for partial tile (mb, nb) with its bound code: bound k is
    compared element-wise (raw, not normalised) only when ACTIVE, else its constant is used
    (Note [Bound codes]). bool [rows, cols] of the tile's valid rows / columns, True = masked."""
    from fm4.masks.tiles import CODE_ACTIVE, CODE_ALWAYS

    rows = torch.arange(mb * tile_m, min((mb + 1) * tile_m, sq))[:, None]
    cols = torch.arange(nb * tile_n, min((nb + 1) * tile_n, sk))[None, :]
    raw = sri[b, h, cols[0]].long()  # (cols, n): raw bounds, as the kernel reads them
    n = raw.shape[-1]
    code = int(codes[b, h, mb, nb])
    ge = []
    for k in range(n):
        if (code >> (2 * k)) & CODE_ACTIVE:
            ge.append(rows >= raw[None, :, k])
        else:
            const = bool((code >> (2 * k)) & CODE_ALWAYS)
            ge.append(torch.full((rows.shape[0], cols.shape[1]), const))
    if n == 1:
        m = ge[0]
    elif n == 2 and causal:
        m = ge[0] & ~ge[1]
    elif n == 2:
        m = ge[0] | ~ge[1]
    else:
        m = (ge[0] & ~ge[1]) | (ge[2] & ~ge[3])
    if causal:
        m = m | (cols > rows + (sk - sq))
    return m


@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("sq,sk,tile_m,tile_n", [(67, 53, 16, 8), (130, 97, 32, 16)])
def test_bound_codes_give_the_mask(causal, n, sq, sk, tile_m, tile_n):
    """Note [Bound codes]: on every partial tile, comparing only the ACTIVE bounds (raw values,
    empty intervals included) and taking the others' constants gives the exact mask."""
    from fm4.masks.tiles import CODE_ACTIVE, bound_codes

    gen = torch.Generator().manual_seed(7 + n + 10 * causal + sq)
    n_const = 0
    for trial in range(6):
        sri = random_bounds(2, 2, sq, sk, n, gen, causal)
        dense_masked = ~dense_from_bounds_loops(sri, causal, sq, sk)
        minmax = block_minmax_torch(sri, causal, sq, tile_n)
        codes = bound_codes(minmax, causal, sq, tile_m)
        flags = classify_tiles(sri, causal, sq, sk, tile_m, tile_n)
        lists = TileLists.from_flags(flags, tile_m, tile_n, backward=False, codes=codes)
        assert int(codes.min()) >= 0 and int(codes.max()) < 4**n  # 2 bits per bound
        for b, h, mb, nb in (flags == PARTIAL).nonzero().tolist():
            want = dense_masked[
                b, h, mb * tile_m : (mb + 1) * tile_m, nb * tile_n : (nb + 1) * tile_n
            ]
            got = _code_rule_masked(sri, codes, causal, sq, sk, tile_m, tile_n, b, h, mb, nb)
            assert torch.equal(got, want), (trial, b, h, mb, nb, int(codes[b, h, mb, nb]))
            code = int(codes[b, h, mb, nb])
            n_const += sum(((code >> (2 * k)) & CODE_ACTIVE) == 0 for k in range(n))
        # The lists carry each partial entry's code, zeros past the count.
        cnt, idx, lc = lists.fwd_partial_cnt, lists.fwd_partial_idx, lists.fwd_partial_code
        for b, h, mb in torch.cartesian_prod(*(torch.arange(s) for s in cnt.shape)).tolist():
            c = int(cnt[b, h, mb])
            assert lc[b, h, mb, :c].tolist() == codes[b, h, mb, idx[b, h, mb, :c].long()].tolist()
            assert not lc[b, h, mb, c:].any()
    assert n_const > 0, "no constant bound in any partial tile: the test would not see them"
