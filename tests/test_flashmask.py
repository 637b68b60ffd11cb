"""FlashMask: validation, dense semantics, from_dense, statistics, pictures, conversions."""

from __future__ import annotations

import pytest
import torch

from fm4.masks import FlashMask, make_mask
from fm4.masks.bounds import masked_rows
from tests.helpers import MODES, dense_from_bounds_loops, random_bounds

SHAPES = [(1, 1), (7, 7), (13, 29), (29, 13), (33, 33)]


@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("sq,sk", SHAPES)
def test_to_dense_matches_definition(causal, n, sq, sk):
    gen = torch.Generator().manual_seed(sq * 100 + sk + n)
    sri = random_bounds(2, 2, sq, sk, n, gen, causal)
    m = FlashMask(sri, causal, seqlen_q=sq)
    assert torch.equal(m.to_dense(), dense_from_bounds_loops(sri, causal, sq, sk))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sq,sk", [(5, 9), (9, 5), (6, 6)])
def test_no_bounds_is_bottom_right_causal(causal, sq, sk):
    dense = FlashMask(None, causal, seqlen_q=sq, seqlen_k=sk).to_dense()
    assert torch.equal(dense, dense_from_bounds_loops(None, causal, sq, sk))
    if causal and sk > sq:  # the last row sees every key
        assert bool(dense[0, 0, -1].all())


def test_values_above_sq_clamp():
    sri = torch.tensor([[[[3], [100], [7]]]], dtype=torch.int32)
    a = FlashMask(sri, True, seqlen_q=5).to_dense()
    b = FlashMask(sri.clamp(max=5), True, seqlen_q=5).to_dense()
    assert torch.equal(a, b)


def test_empty_interval_masks_nothing():
    sri = torch.tensor([[4, 2], [3, 3], [9, 0], [5, 5]], dtype=torch.int32)  # start >= end
    m = FlashMask(sri.view(1, 1, 4, 2), True, seqlen_q=4)
    assert torch.equal(m.to_dense(), FlashMask(None, True, seqlen_q=4, seqlen_k=4).to_dense())


@pytest.mark.parametrize(
    "sri,causal,match",
    [
        (torch.zeros(1, 1, 4, 1, dtype=torch.int64), True, "dtype torch.int64"),
        (torch.zeros(1, 4, 1, dtype=torch.int32), True, "rank 4"),
        (torch.zeros(1, 1, 4, 3, dtype=torch.int32), True, "last dimension must be 1, 2 or 4"),
        (torch.zeros(1, 1, 4, 1, dtype=torch.int32), False, "only defined with causal=True"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), True, "only defined with causal=False"),
        (torch.tensor([[[[1], [-2]]]], dtype=torch.int32), True, r"negative value -2 at index"),
    ],
)
def test_validation_errors(sri, causal, match):
    with pytest.raises((TypeError, ValueError), match=match):
        FlashMask(sri, causal)


def test_seqlen_k_mismatch_error():
    with pytest.raises(ValueError, match="seqlen_k=5 does not match"):
        FlashMask(torch.zeros(1, 1, 4, 1, dtype=torch.int32), True, seqlen_k=5)


def test_unknown_lengths_error():
    with pytest.raises(ValueError, match="does not know its sequence lengths"):
        FlashMask(None, True).to_dense()


@pytest.mark.parametrize("causal,n", MODES)
def test_from_dense_round_trip(causal, n):
    gen = torch.Generator().manual_seed(n)
    sri = random_bounds(2, 3, 37, 41, n, gen, causal)
    dense = FlashMask(sri, causal, seqlen_q=37).to_dense()
    back = FlashMask.from_dense(dense)
    assert torch.equal(back.to_dense(), dense)
    # Asking for the original mode also works.
    forced = FlashMask.from_dense(dense, causal=causal, n=n)
    assert forced.causal == causal and forced.n == n
    assert torch.equal(forced.to_dense(), dense)


def test_from_dense_picks_simplest():
    assert FlashMask.from_dense(torch.ones(1, 1, 5, 5, dtype=torch.bool)).n == 0
    causal = FlashMask(None, True, seqlen_q=4, seqlen_k=6).to_dense()
    m = FlashMask.from_dense(causal)
    assert m.n == 0 and m.causal


def test_from_dense_error_names_column():
    dense = torch.ones(1, 1, 8, 4, dtype=torch.bool)
    dense[0, 0, [1, 3, 5], 2] = False  # three separate masked runs in column 2
    with pytest.raises(ValueError, match=r"column 2 \(batch 0, head 0\) has 3 masked run"):
        FlashMask.from_dense(dense)


def test_visible_pairs_and_density_match_dense():
    m = make_mask("share_question", 300, batch=2)
    dense = m.to_dense()
    assert m.visible_pairs() == int(dense.sum())
    tiles = dense.view(2, 1, 300 // 30, 30, 300 // 30, 30).any(-1).any(-2)
    assert m.block_density(tile_m=30, tile_n=30) == pytest.approx(float(tiles.float().mean()))
    assert m.sparsity(tile_m=30, tile_n=30) == pytest.approx(
        100 * (1 - float(tiles.float().mean()))
    )


def test_repr_picture_png(tmp_path):
    m = make_mask("document", 200, batch=2)
    r = repr(m)
    assert "int32[2, 1, 200, 2]" in r and "LTS, UTE" in r and "causal=False" in r
    pic = m.picture(max_size=20)
    lines = pic.splitlines()
    assert len(lines) == 1 + 2 + 20 and all(len(ln) == 22 for ln in lines[1:])
    assert "█" in pic and " " in pic
    path = tmp_path / "m.png"
    m.save_png(str(path), max_size=64)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (50, 50)


def test_slicing_and_to():
    m = make_mask("random_eviction", 64, batch=2, num_heads=4)
    s = m[1, 2]
    assert s.startend_row_indices.shape == (1, 1, 64, 1)
    assert torch.equal(s.to_dense()[0, 0], m.to_dense()[1, 2])
    moved = m.to("meta")
    assert moved.device.type == "meta" and moved.causal == m.causal


@pytest.mark.parametrize("name", ["causal", "document", "global_sliding_window", "qk_sparse"])
@pytest.mark.parametrize("num_heads", [None, 4])
def test_to_block_mask(name, num_heads):
    from torch.nn.attention.flex_attention import create_mask

    m = make_mask(name, 203, batch=2, num_heads=4)
    bm = m.to_block_mask(num_heads=num_heads, block_size=64)
    # Element level: the mask_mod reproduces the dense mask.
    H = 1 if num_heads is None else num_heads
    dense = create_mask(bm.mask_mod, 2 if m.n else 1, H, 203, 203, device="cpu")
    ref = m.to_dense()
    assert torch.equal(dense, ref.expand_as(dense))
    # Block level: every visible element lies in a listed block, full blocks are all visible.
    blocks = bm.to_dense()  # (B, H, Mt, Nt) 0/1 over partial + full blocks
    pad = torch.nn.functional.pad(ref, (0, 256 - 203, 0, 256 - 203))
    tiles_vis = pad.reshape(*pad.shape[:2], 4, 64, 4, 64).any(-1).any(-2)
    assert bool((blocks.bool() | ~tiles_vis.expand_as(blocks)).all())


def test_masked_rows_subset_of_rows():
    m = make_mask("causal_blockwise", 100)
    rows = torch.tensor([0, 17, 99])
    part = masked_rows(m.startend_row_indices, True, rows, 100, 100)
    assert torch.equal(~part, m.to_dense()[:, :, rows])


@pytest.mark.parametrize("name", ["causal", "document"])
def test_semantics_stay_on_the_rows_device(name):
    # Regression: the causal triangle of a mask without bounds was built on the CPU.
    m = make_mask(name, 16).to("meta")
    rows = torch.arange(16, device="meta")
    assert masked_rows(m.startend_row_indices, m.causal, rows, 16, 16).device.type == "meta"
