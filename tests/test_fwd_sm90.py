"""Tests of fm4's Hopper forward kernel (fm4/cute_kernels/fwd_sm90.py).

CPU: the kernel compiles for sm_90a on fake tensors; its PTX has wgmma and no local memory.
GPU (sm_90, ``@pytest.mark.gpu``): out and lse against fm4.reference.attention_ref, with the
kernel's error at most a small multiple of a same-precision PyTorch computation's error.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from fm4.cute_kernels.fwd_launch import FWD_TEST_KNOBS
from tests.helpers import MODES, needs_cutlass, needs_sm90, random_bounds

SHAPES = [(1, 1), (113, 203), (1023, 1024), (256, 256), (384, 200)]
SMOKE_SHAPES = [(113, 203), (1023, 1024)]


# ---------------------------------------------------------------------------------------------
# CPU: compile for sm_90a
# ---------------------------------------------------------------------------------------------
_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from fm4.cute_kernels.fwd_launch import _compile_fwd
    knobs = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    _compile_fwd(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), **knobs)
    """
)


@needs_cutlass
@pytest.mark.parametrize(
    "dtype,head_dim,causal,n_bounds,knobs",
    [
        ("BFloat16", 128, False, 0, "{}"),
        ("BFloat16", 128, True, 2, "{}"),
        ("Float16", 64, False, 4, "{}"),
        # the persistent kernel without tile_overlap (one Q stage) and the "cta" O store
        ("BFloat16", 128, True, 2, '{"tile_overlap": false, "o_store": "cta"}'),
        # bound codes (the default with bounds) for n = 1; n = 4 without them (v1 bits)
        ("BFloat16", 128, True, 1, "{}"),
        ("BFloat16", 128, False, 4, '{"bound_codes": false}'),
        # partial blocks' masks as S's start value, bound words a block ahead (n = 1); n = 2
        # with the words a block ahead (bit words for every partial block; O zeroed per tile:
        # with o_zero "pv" that set spills 232 bytes)
        (
            "BFloat16",
            128,
            True,
            1,
            '{"mask_bias": true, "bound_prefetch": true, "rest_mask": "bits"}',
        ),
        (
            "BFloat16",
            128,
            False,
            2,
            '{"bound_prefetch": true, "rest_mask": "bits", "o_zero": "fill"}',
        ),
        # partial blocks after the first masked from per-column threshold bytes (the default
        # for n = 1, 2) or from bit words
        ("BFloat16", 128, True, 1, '{"rest_mask": "bits"}'),
        ("BFloat16", 256, False, 2, "{}"),
        ("Float16", 64, True, 1, "{}"),
    ],
)
def test_compiles_for_sm90a(tmp_path, dtype, head_dim, causal, n_bounds, knobs):
    env = dict(os.environ)
    env.update(
        CUTE_DSL_ARCH="sm_90a",
        CUTE_DSL_KEEP="ptx",
        CUTE_DSL_DUMP_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")]),
    )
    args = [dtype, str(head_dim), "1" if causal else "0", str(n_bounds), knobs]
    res = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    ptx_files = glob.glob(str(tmp_path / "*.ptx"))
    assert ptx_files, "no PTX was kept"
    with open(ptx_files[0]) as f:
        ptx = f.read()
    assert "wgmma.mma_async" in ptx
    assert "setmaxnreg" in ptx
    assert "cp.async.bulk.tensor" in ptx
    assert "st.local" not in ptx and "ld.local" not in ptx
    ptxas = shutil.which("ptxas")
    if ptxas is not None:
        rep = subprocess.run(
            [ptxas, "-arch=sm_90a", "-v", ptx_files[0], "-o", str(tmp_path / "k.cubin")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert rep.returncode == 0, rep.stderr[-4000:]
        assert "0 bytes spill stores" in rep.stderr, rep.stderr[-2000:]


@needs_cutlass
def test_bound_codes_knob():
    """bound_codes: the default with bounds unless mask_impl is given; clear errors otherwise."""
    import cutlass

    from fm4.cute_kernels.fwd_sm90 import BOUND_CODES, FlashMaskFwdSm90

    bf16 = cutlass.BFloat16
    assert FlashMaskFwdSm90(bf16, 128, True, 1).bound_codes == BOUND_CODES
    assert FlashMaskFwdSm90(bf16, 128, False, 4).mask_impl == ("codes" if BOUND_CODES else "v1")
    assert not FlashMaskFwdSm90(bf16, 128, True, 0).bound_codes
    assert FlashMaskFwdSm90(bf16, 128, True, 2, mask_impl="v2").mask_impl == "v2"
    assert FlashMaskFwdSm90(bf16, 128, True, 2, bound_codes=False).mask_impl == "v2"
    with pytest.raises(ValueError, match="needs bounds"):
        FlashMaskFwdSm90(bf16, 128, True, 0, bound_codes=True)
    with pytest.raises(ValueError, match="replaces mask_impl"):
        FlashMaskFwdSm90(bf16, 128, True, 1, bound_codes=True, mask_impl="v1")
    with pytest.raises(ValueError, match="mask_impl must be"):
        FlashMaskFwdSm90(bf16, 128, True, 1, mask_impl="codes")
    with pytest.raises(ValueError, match="mask_at"):
        FlashMaskFwdSm90(bf16, 128, True, 1, mask_at="split")


@needs_cutlass
def test_bound_prefetch_and_mask_bias_knobs():
    """bound_prefetch (n = 1, 2) and mask_bias (n = 1) apply with bound codes only; prefetch is
    on by default for n = 1 (session 19's cycles), mask_bias off (NOTES.md sessions 15, 19);
    mask_bias needs mask_at "early"."""
    import cutlass

    from fm4.cute_kernels.fwd_sm90 import MASK_BIAS, FlashMaskFwdSm90

    bf16 = cutlass.BFloat16
    assert not MASK_BIAS
    assert FlashMaskFwdSm90(bf16, 128, True, 1).bound_prefetch
    assert FlashMaskFwdSm90(bf16, 128, False, 1).bound_prefetch
    assert not FlashMaskFwdSm90(bf16, 128, True, 2).bound_prefetch
    assert not FlashMaskFwdSm90(bf16, 128, False, 4).bound_prefetch
    assert not FlashMaskFwdSm90(bf16, 128, True, 1, bound_prefetch=False).bound_prefetch
    assert FlashMaskFwdSm90(bf16, 128, True, 1, bound_prefetch=True).bound_prefetch
    assert FlashMaskFwdSm90(bf16, 128, False, 2, bound_prefetch=True).bound_prefetch
    assert not FlashMaskFwdSm90(bf16, 128, False, 4, bound_prefetch=True).bound_prefetch
    v2 = FlashMaskFwdSm90(bf16, 128, True, 1, bound_prefetch=True, mask_impl="v2")
    assert not v2.bound_prefetch
    assert FlashMaskFwdSm90(bf16, 128, True, 1, mask_bias=True).mask_bias
    assert not FlashMaskFwdSm90(bf16, 128, True, 2, mask_bias=True).mask_bias
    assert not FlashMaskFwdSm90(bf16, 128, True, 0, mask_bias=True).mask_bias
    with pytest.raises(ValueError, match="mask_bias=True needs mask_at 'early', got 'late'"):
        FlashMaskFwdSm90(bf16, 128, True, 1, mask_bias=True, mask_at="late")


@needs_cutlass
def test_ahead_knobs():
    """q_ahead -> k_ahead -> first_queued: each on by default where the one before it is (and,
    first_queued, with bounds), a clear error when forced without it; first_queued widens the
    tile queue's slots by two words."""
    import cutlass

    from fm4.cute_kernels.fwd_sm90 import FIRST_QUEUED, K_AHEAD, Q_AHEAD, FlashMaskFwdSm90
    from fm4.cute_kernels.tile_scheduler import TILE_INFO_WORDS

    bf16 = cutlass.BFloat16
    kern = FlashMaskFwdSm90(bf16, 128, True, 1)
    assert (kern.q_ahead, kern.k_ahead, kern.first_queued) == (Q_AHEAD, K_AHEAD, FIRST_QUEUED)
    assert kern.tile_words == TILE_INFO_WORDS + (2 if kern.first_queued else 0)
    dense = FlashMaskFwdSm90(bf16, 128, True, 0)
    assert not dense.first_queued and dense.tile_words == TILE_INFO_WORDS
    assert not FlashMaskFwdSm90(bf16, 128, True, 1, k_ahead=False).first_queued
    assert not FlashMaskFwdSm90(bf16, 128, False, 2, persistent=False).first_queued
    unq = FlashMaskFwdSm90(bf16, 128, False, 2, first_queued=False)
    assert not unq.first_queued and unq.tile_words == TILE_INFO_WORDS
    with pytest.raises(ValueError, match=r"first_queued=True needs k_ahead .* n_bounds=0"):
        FlashMaskFwdSm90(bf16, 128, True, 0, first_queued=True)
    with pytest.raises(ValueError, match=r"first_queued=True needs k_ahead .* k_ahead=False"):
        FlashMaskFwdSm90(bf16, 128, True, 1, k_ahead=False, first_queued=True)
    with pytest.raises(ValueError, match="k_ahead=True needs q_ahead"):
        FlashMaskFwdSm90(bf16, 128, True, 1, q_ahead=False, k_ahead=True)
    with pytest.raises(ValueError, match="q_ahead=True needs tile_overlap"):
        FlashMaskFwdSm90(bf16, 128, True, 1, claim="late", q_ahead=True)


@needs_cutlass
def test_max_ctas_needs_a_persistent_kernel():
    """``attention_fwd_sm90(max_ctas=...)`` caps the persistent grid; for a kernel with one CTA
    per tile (head dim 256, or ``persistent=False``) it is an error, not silently ignored."""
    from fm4.cute_kernels.fwd_launch import check_max_ctas

    check_max_ctas(4, 128, True, 0, {})
    check_max_ctas(4, 128, False, 2, {})
    check_max_ctas(4, 128, False, 0, {"persistent": True})
    with pytest.raises(ValueError, match="max_ctas=4 applies to the persistent kernel only"):
        check_max_ctas(4, 256, True, 1, {})
    with pytest.raises(ValueError, match="head dim 128, causal=True, 1 bounds with kernel_opt"):
        check_max_ctas(4, 128, True, 1, {"persistent": False})
    # the full mask (no bounds, not causal) is persistent by default too (session 11)
    check_max_ctas(4, 128, False, 0, {})
    with pytest.raises(ValueError, match="head dim 64, causal=False, 0 bounds with kernel_opt"):
        check_max_ctas(4, 64, False, 0, {"persistent": False})
    with pytest.raises(ValueError, match="max_ctas must be >= 1, got 0"):
        check_max_ctas(0, 128, True, 0, {})


@needs_cutlass
def test_persistent_default_and_compile_key_knobs():
    """Every mode (the full mask too) runs the persistent kernel by default at D <= 128, one CTA
    per tile at D = 256; ``{"persistent": <the default>}`` shares the default kernel's compile
    key."""
    from fm4.cute_kernels.fwd_launch import fwd_knobs, is_persistent

    assert is_persistent(128, False, 0, None)
    assert not is_persistent(128, False, 0, False)
    assert all(is_persistent(d, c, n, None) for d in (64, 128) for c, n in [*MODES, (True, 0)])
    assert not is_persistent(256, True, 1, None)
    assert not is_persistent(256, False, 0, None)
    assert fwd_knobs(128, True, 0, {"persistent": True}) == {}
    assert fwd_knobs(128, False, 0, {"persistent": True}) == {}
    assert fwd_knobs(128, False, 0, {"persistent": False}) == {"persistent": False}
    assert fwd_knobs(128, True, 2, {"persistent": False, "claim": "late"}) == {
        "persistent": False,
        "claim": "late",
    }


# ---------------------------------------------------------------------------------------------
# GPU: correctness
# ---------------------------------------------------------------------------------------------
def _inputs(B, sq, sk, H, Hkv, D, dtype):
    q = torch.randn(B, sq, H, D, device="cuda", dtype=dtype)
    k = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
    v = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
    return q, k, v


def _check(q, k, v, sri, causal, out, lse):
    from fm4.testing import check_attention

    e = check_attention(q, k, v, sri, causal, out, lse)
    return e.out_err, e.out_err_torch


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fwd_dense(sq, sk, causal, dtype):
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    q, k, v = _inputs(2, sq, sk, 4, 2, 128, dtype)
    out, lse = attention_fwd_sm90(q, k, v, None, causal)
    _check(q, k, v, None, causal, out, lse)


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("sq,sk", SMOKE_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_fwd_dense_d64(sq, sk, causal):
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    q, k, v = _inputs(2, sq, sk, 4, 1, 64, torch.bfloat16)
    out, lse = attention_fwd_sm90(q, k, v, None, causal)
    _check(q, k, v, None, causal, out, lse)


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("hm", [1, 4])
def test_fwd_bounds(sq, sk, causal, n, hm):
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    gen = torch.Generator().manual_seed(sq * 7 + sk + n)
    q, k, v = _inputs(2, sq, sk, 4, 2, 128, torch.bfloat16)
    sri = random_bounds(2, hm, sq, sk, n, gen, causal).cuda()
    out, lse = attention_fwd_sm90(q, k, v, sri, causal)
    _check(q, k, v, sri, causal, out, lse)


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("causal,n", [(True, 0), (False, 2)])
def test_fwd_d256(causal, n):
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    gen = torch.Generator().manual_seed(2)
    q, k, v = _inputs(1, 300, 451, 2, 1, 256, torch.bfloat16)
    sri = random_bounds(1, 1, 300, 451, n, gen, causal).cuda() if n else None
    out, lse = attention_fwd_sm90(q, k, v, sri, causal)
    _check(q, k, v, sri, causal, out, lse)


@pytest.mark.gpu
@needs_sm90
def test_fwd_bounds_d64_fp16():
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    gen = torch.Generator().manual_seed(1)
    q, k, v = _inputs(1, 500, 700, 2, 2, 64, torch.float16)
    sri = random_bounds(1, 2, 500, 700, 2, gen, False).cuda()
    out, lse = attention_fwd_sm90(q, k, v, sri, False)
    _check(q, k, v, sri, False, out, lse)


@pytest.mark.gpu
@needs_sm90
def test_fwd_fully_masked_rows_and_tiles():
    """Rows [0, 300) see nothing (n == 4 intervals cover them): out 0, lse -inf, no NaN."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    sq = sk = 640
    q, k, v = _inputs(1, sq, sk, 2, 2, 128, torch.bfloat16)
    sri = torch.zeros(1, 1, sk, 4, dtype=torch.int32)
    sri[..., 0], sri[..., 1] = 0, 300  # rows [0, 300) masked in every column
    sri[..., 2], sri[..., 3] = 500, 520
    sri = sri.cuda()
    out, lse = attention_fwd_sm90(q, k, v, sri, False)
    assert torch.isneginf(lse[:, :, :300]).all()
    assert (out[:, :300] == 0).all()
    _check(q, k, v, sri, False, out, lse)


@pytest.mark.gpu
@needs_sm90
def test_fwd_causal_sq_longer_than_sk():
    """Bottom-right causal with Sq > Sk: the first Sq - Sk rows see nothing."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    q, k, v = _inputs(1, 700, 150, 2, 1, 128, torch.bfloat16)
    out, lse = attention_fwd_sm90(q, k, v, None, True)
    _check(q, k, v, None, True, out, lse)
    assert torch.isneginf(lse[:, :, : 700 - 150]).all()


@pytest.mark.gpu
@needs_sm90
def test_fwd_writes_every_element():
    """Every element of out and lse is written (memory poisoned with NaN before each call)."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    q, k, v = _inputs(2, 333, 333, 4, 4, 128, torch.bfloat16)
    for _ in range(2):
        # Leave NaN in the memory the caching allocator hands out next for out and lse.
        poison = [torch.full_like(q, math.nan), torch.full((2, 4, 333), math.nan, device="cuda")]
        del poison
        out, lse = attention_fwd_sm90(q, k, v, None, False)
        assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    _check(q, k, v, None, False, out, lse)


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("causal,n", MODES)
def test_fwd_bound_codes_or_not_bitwise(causal, n):
    """Partial blocks' bits from the bound codes (default), from lists without codes (every
    bound ACTIVE) and without codes at all (v1 / v2 bits) give bitwise the same out / lse, with
    byte masks (the default for n = 1, 2) or bit words for the partial blocks after the
    first."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90, tile_shape
    from fm4.masks.tiles import TileLists, build_tile_lists

    gen = torch.Generator().manual_seed(23 + n + 7 * causal)
    B, S, H, D = 2, 1537, 4, 128
    q, k, v = _inputs(B, S, S, H, 2, D, torch.bfloat16)
    sri = random_bounds(B, 2, S, S, n, gen, causal).cuda()
    lists = build_tile_lists(sri, causal, S, S, *tile_shape(D), backward=False)
    assert lists.fwd_partial_code is not None
    bare = TileLists.from_flags(lists.flags, *tile_shape(D), backward=False)
    assert bare.fwd_partial_code is None
    out, lse = attention_fwd_sm90(q, k, v, sri, causal, tile_lists=lists)
    bits = {"rest_mask": "bits"}
    variants = (
        (bare, None),
        (lists, {"bound_codes": False}),
        (bare, bits),
        (lists, {"bound_codes": False, **bits}),
    )
    for tl, opts in variants:
        o2, l2 = attention_fwd_sm90(q, k, v, sri, causal, tile_lists=tl, kernel_options=opts)
        assert torch.equal(o2, out) and torch.equal(l2, lse)
    _check(q, k, v, sri, causal, out, lse)


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("causal,n", [m for m in MODES if m[1] in (1, 2)])
@pytest.mark.parametrize("D", [64, 128, 256])
@pytest.mark.parametrize("sq,sk", [(113, 203), (1500, 1500), (2100, 1000), (1000, 2100)])
def test_fwd_rest_mask_bytes_bitwise(causal, n, D, sq, sk):
    """Partial blocks masked from per-column threshold bytes (``rest_mask="bytes"``, the
    default for n = 1, 2; Note [Byte masks]) give bitwise the out / lse of bit words: Sq != Sk
    (a causal diagonal that reaches later partial blocks), ragged tiles, the three mask-head
    counts, fp16 at D = 64."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    gen = torch.Generator().manual_seed(sq + 3 * sk + 11 * n + D + int(causal))
    B, H, Hkv = 2, 4, 2
    dtype = torch.float16 if D == 64 else torch.bfloat16
    q, k, v = _inputs(B, sq, sk, H, Hkv, D, dtype)
    for hm in (1, Hkv, H):
        sri = random_bounds(B, hm, sq, sk, n, gen, causal).cuda()
        out, lse = attention_fwd_sm90(q, k, v, sri, causal, kernel_options={"rest_mask": "bits"})
        o2, l2 = attention_fwd_sm90(q, k, v, sri, causal)
        assert torch.equal(o2, out) and torch.equal(l2, lse)
        assert not torch.isnan(o2).any()
    _check(q, k, v, sri, causal, o2, l2)


# The persistent kernel's knob sets: the default one ("persistent": the default kernel, except
# for the full mask, whose default is one CTA per tile) and the experimental ones.
PERSISTENT_SETS = [k for k in FWD_TEST_KNOBS if k != "single_tile"]


@pytest.mark.gpu
@needs_sm90
@pytest.mark.parametrize("knobs", PERSISTENT_SETS)
@pytest.mark.parametrize("causal,n", [(True, 0), (False, 0), *MODES])
@pytest.mark.parametrize("S,grid", [(1500, None), (1050, 4)])
def test_fwd_persistent_matches_one_cta_per_tile(causal, n, knobs, S, grid):
    """The persistent kernel (default for D <= 128 but the full mask), and its variants
    (``FWD_TEST_KNOBS``), give bitwise the same out / lse as one CTA per tile, on a grid with
    several tiles per SM
    (``grid`` 4: ~40 tiles per CTA, so Q stages are reused and tile changes chain), empty tiles
    included, over repeated calls (the tile counter is fresh for every launch). S = 1050: the
    last m_block's 26 rows leave the second warpgroup's 64 rows wholly past the end."""
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

    gen = torch.Generator().manual_seed(11 + n)
    B, H, D = 3, 6, 128  # S = 1500: 12 m_blocks x 18 (b, h) = 216 tiles
    q, k, v = _inputs(B, S, S, H, 3, D, torch.bfloat16)
    sri = random_bounds(B, 2, S, S, n, gen, causal) if n else None
    if sri is not None:
        # Batch 1 of n = 1 and n = 4: every row masked in every column, so every tile is empty.
        if n == 1:
            sri[1] = 0
        if n == 4:
            sri[1, ..., 0], sri[1, ..., 1] = 0, S
        # Batch 2, mask head 0 of n = 2: only rows 256 .. 767 (m_blocks 2-5) masked (causal) or
        # visible (not causal), so empty and non-empty tiles alternate in the tile order.
        if n == 2:
            sri[2, 0, :, 0], sri[2, 0, :, 1] = (256, 768) if causal else (768, 256)
        sri = sri.cuda()
    single = FWD_TEST_KNOBS["single_tile"]
    out1, lse1 = attention_fwd_sm90(q, k, v, sri, causal, kernel_options=single)
    for _ in range(3):
        opts = FWD_TEST_KNOBS[knobs]
        out, lse = attention_fwd_sm90(q, k, v, sri, causal, kernel_options=opts, max_ctas=grid)
        assert torch.equal(out, out1)
        assert torch.equal(lse, lse1)
    _check(q, k, v, sri, causal, out, lse)
