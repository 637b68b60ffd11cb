"""Tests of fm4's Hopper backward (fm4/cute_kernels/bwd_sm90.py, bwd_prepost.py, bwd_launch.py).

CPU: every kernel compiles for sm_90a on fake tensors; the main kernel's PTX has wgmma, TMA,
setmaxnreg, fp32 reductions for dQ and no local memory; ptxas reports 0 bytes of spills.
GPU (sm_90, ``@pytest.mark.gpu``): dq, dk, dv against ``fm4.reference.attention_bwd_ref`` (fp32),
the kernel's error at most 2x a same-precision PyTorch computation's error plus a small atol.
The tuning table picks the S / dP layout per number of bounds (``SDP_SWAPAB``, Note [SdP swapAB]
in ``bwd_sm90.py``); the layout it does not pick goes through the same checks in the tests named
``*other_layout*``.
"""

from __future__ import annotations

import glob
import json
import math
import re
import shutil
import subprocess

import pytest
import torch

from tests.helpers import MODES, compile_in_subprocess, needs_cutlass, needs_sm90, random_bounds

# ---------------------------------------------------------------------------------------------
# CPU: compile for sm_90a, inspect PTX
# ---------------------------------------------------------------------------------------------
_COMPILE_SCRIPT = """
import json
import sys
from fm4.cute_kernels import bwd_launch as L
what, dtype, d = sys.argv[1], sys.argv[2], int(sys.argv[3])
if what == "pre":  # has_dlse, zero_dq_accum
    L._compile_pre(dtype, d, sys.argv[4] == "1", 64, sys.argv[5] == "1")
elif what == "post":  # has_tickets
    L._compile_post(dtype, d, sys.argv[4] == "1")
else:
    knobs = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    L._compile_bwd(dtype, d, sys.argv[4] == "1", int(sys.argv[5]), sys.argv[6] == "1", **knobs)
"""


def _compile_and_read_ptx(tmp_path, args: list[str]) -> tuple[str, str]:
    compile_in_subprocess(_COMPILE_SCRIPT, args, arch="sm_90a", dump_dir=tmp_path)
    ptx_files = glob.glob(str(tmp_path / "*.ptx"))
    assert len(ptx_files) == 1, ptx_files
    with open(ptx_files[0]) as f:
        return ptx_files[0], f.read()


def _ptxas_report(tmp_path, ptx_file: str) -> str | None:
    ptxas = shutil.which("ptxas") or shutil.which("/usr/local/bin/ptxas")
    if ptxas is None:
        return None
    rep = subprocess.run(
        [ptxas, "-arch=sm_90a", "-v", ptx_file, "-o", str(tmp_path / "k.cubin")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rep.returncode == 0, rep.stderr[-4000:]
    return rep.stderr


MAIN_CONFIGS = [
    ("BFloat16", 128, False, 0, False),
    ("BFloat16", 128, True, 0, False),
    ("BFloat16", 128, True, 1, False),
    ("BFloat16", 128, True, 2, False),
    ("BFloat16", 128, False, 2, False),
    ("BFloat16", 128, False, 4, False),
    ("Float16", 64, False, 0, False),
    ("BFloat16", 64, True, 2, False),
    ("Float16", 64, False, 4, False),
    ("BFloat16", 128, True, 0, True),
    ("BFloat16", 128, False, 4, True),
    # head dim 256: tile 64 x 64, dK / dV split over d (Note [dK dV split])
    ("BFloat16", 256, True, 0, False),
    ("BFloat16", 256, True, 1, False),
    ("Float16", 256, False, 2, False),
    ("BFloat16", 256, False, 4, True),
]


@needs_cutlass
@pytest.mark.parametrize("dtype,head_dim,causal,n_bounds,deterministic", MAIN_CONFIGS)
def test_bwd_main_compiles_for_sm90a(tmp_path, dtype, head_dim, causal, n_bounds, deterministic):
    flags = ["1" if causal else "0", str(n_bounds), "1" if deterministic else "0"]
    args = ["main", dtype, str(head_dim), *flags]
    ptx_file, ptx = _compile_and_read_ptx(tmp_path, args)
    assert "wgmma.mma_async" in ptx
    assert "setmaxnreg" in ptx
    assert "cp.async.bulk.tensor" in ptx  # TMA loads of Q, dO, K, V and stores of dK, dV
    assert "stmatrix" in ptx  # P / dS and the dK / dV epilogue through smem
    # dQ added to the fp32 accumulator in global memory by the bulk-copy engine
    assert "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32" in ptx
    if deterministic:  # the semaphores that order the additions
        assert "ld.acquire.gpu" in ptx and "red.release.gpu" in ptx
    # Note [dQ lazy zero]: an m_block's first visitor zeroes its tile (a ticket, a flag, proxy
    # fences); deterministic mode has the preprocess zero the accumulator instead
    lazy_zero = all(
        op in ptx for op in ("atom.relaxed.gpu", "fence.proxy.async.global", "red.release.gpu")
    )
    assert lazy_zero == (not deterministic)
    assert "st.local" not in ptx and "ld.local" not in ptx
    rep = _ptxas_report(tmp_path, ptx_file)
    if rep is not None:
        # n = 4: the dQ warp (24 registers in the producer warpgroup, walking the lists) spills
        # one 8-byte value, checked by compiling without it; the consumers spill nothing.
        allowed = 8 if n_bounds == 4 else 0
        _assert_spills_at_most(rep, allowed)


def _assert_spills_at_most(rep: str, allowed: int) -> None:
    """ptxas -v report: spill stores and loads each at most ``allowed`` bytes."""
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", rep)
    assert spills is not None, rep[-2000:]
    assert max(int(spills[1]), int(spills[2])) <= allowed, rep[-2000:]


# sdp_swapab on (with the other knobs at their defaults unless given) and, last, off
SWAPAB_CONFIGS = [
    ("BFloat16", 128, True, 0, False, {}),
    ("BFloat16", 128, False, 2, False, {}),
    ("Float16", 64, False, 4, False, {}),
    ("BFloat16", 128, True, 1, True, {}),
    ("BFloat16", 64, True, 2, False, {"pds_stages": 1, "early_dv": False}),
    ("BFloat16", 128, True, 2, False, {"sdp_swapab": False}),
    ("BFloat16", 128, False, 0, True, {"sdp_swapab": False}),
    # tile_n 64 at head dim 128: dK / dV split over d (Note [dK dV split]), S / dP not swapped
    ("BFloat16", 128, True, 2, False, {"sdp_swapab": False, "tile_n": 64}),
]


@needs_cutlass
@pytest.mark.parametrize("dtype,head_dim,causal,n_bounds,deterministic,knobs", SWAPAB_CONFIGS)
def test_bwd_main_swapab_compiles_for_sm90a(
    tmp_path, dtype, head_dim, causal, n_bounds, deterministic, knobs
):
    """S^T / dP^T (Note [SdP swapAB]): dV and dK are register-A wgmmas, dS is written to smem
    transposed, lse / Delta staged in smem by the stats warp (no bulk copies); with
    sdp_swapab off, every wgmma reads A from smem. No local memory, no spills."""
    flags = ["1" if causal else "0", str(n_bounds), "1" if deterministic else "0"]
    knobs = {"sdp_swapab": True, **knobs}
    args = ["main", dtype, str(head_dim), *flags, json.dumps(knobs)]
    ptx_file, ptx = _compile_and_read_ptx(tmp_path, args)
    wgmma = re.findall(r"wgmma\.mma_async\S*\s+\{[^}]*\},\s*(\S)", ptx)
    bulk_stats = "cp.async.bulk.shared::cta.global.mbarrier::complete_tx::bytes" in ptx
    if knobs["sdp_swapab"]:
        assert wgmma and "{" in wgmma and "%" in wgmma  # A from registers and from smem
        assert "stmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in ptx  # dS^T -> sdS as (q, k)
        assert not bulk_stats  # lse / Delta: ordinary loads / stores by the stats warp
    else:
        assert wgmma and set(wgmma) == {"%"} and not bulk_stats
    assert "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32" in ptx
    if deterministic:
        assert "ld.acquire.gpu" in ptx and "red.release.gpu" in ptx
    assert "st.local" not in ptx and "ld.local" not in ptx
    rep = _ptxas_report(tmp_path, ptx_file)
    if rep is not None:
        # Same allowance as the default kernel (its n = 4 dQ warp); measured 0 everywhere.
        allowed = 8 if n_bounds == 4 else 0
        _assert_spills_at_most(rep, allowed)


# persistent (Note [Persistent backward]), with the other knobs at their defaults unless given
PERSISTENT_CONFIGS = [
    ("BFloat16", 128, True, 1, False, {}),
    ("BFloat16", 128, False, 4, True, {}),
    ("Float16", 64, False, 2, False, {"sdp_swapab": False}),
    ("BFloat16", 256, True, 2, False, {}),
    ("BFloat16", 128, True, 2, False, {"dkv_store": "direct"}),
]


@needs_cutlass
@pytest.mark.parametrize("dtype,head_dim,causal,n_bounds,deterministic,knobs", PERSISTENT_CONFIGS)
def test_bwd_main_persistent_compiles_for_sm90a(
    tmp_path, dtype, head_dim, causal, n_bounds, deterministic, knobs
):
    """The persistent kernel: the producer claims work items with a global atomic; no local
    memory, no spills (same allowance as the default kernel)."""
    flags = ["1" if causal else "0", str(n_bounds), "1" if deterministic else "0"]
    knobs = {"persistent": True, **knobs}
    args = ["main", dtype, str(head_dim), *flags, json.dumps(knobs)]
    ptx_file, ptx = _compile_and_read_ptx(tmp_path, args)
    assert "wgmma.mma_async" in ptx and "atom.global.add" in ptx
    assert "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32" in ptx
    if knobs.get("dkv_store") == "direct":  # dK / dV from registers, pairs of columns
        assert "st.global.b32" in ptx and "cp.async.bulk.tensor.4d.global.shared" not in ptx
    assert "st.local" not in ptx and "ld.local" not in ptx
    rep = _ptxas_report(tmp_path, ptx_file)
    if rep is not None:
        _assert_spills_at_most(rep, 8 if n_bounds == 4 else 0)


def test_bwd_persistent_options():
    from fm4.cute_kernels.bwd_launch import bwd_persistent

    assert bwd_persistent({"persistent": True}, 4)
    assert not bwd_persistent({"persistent": False})
    with pytest.raises(ValueError, match="max_ctas=4 applies to the persistent backward only"):
        bwd_persistent({"persistent": False}, 4)
    with pytest.raises(ValueError, match="max_ctas must be >= 1, got 0"):
        bwd_persistent({"persistent": True}, 0)


@needs_cutlass
@pytest.mark.parametrize(
    "args",
    [
        ["pre", "BFloat16", "128", "0", "0"],
        ["pre", "Float16", "64", "1", "1"],
        ["pre", "BFloat16", "128", "0", "1"],
        ["post", "BFloat16", "128", "1"],
        ["post", "Float16", "64", "0"],
        ["pre", "BFloat16", "256", "1", "0"],
        ["post", "BFloat16", "256", "1"],
    ],
)
def test_bwd_prepost_compile_for_sm90a(tmp_path, args):
    ptx_file, ptx = _compile_and_read_ptx(tmp_path, args)
    assert "st.local" not in ptx and "ld.local" not in ptx
    if args[0] == "pre":
        assert "shfl.sync.bfly" in ptx  # row sums of dO * O across the row's threads
        # The accumulator's zero fill (16-byte stores), only when asked for (deterministic)
        assert ("st.global.v4" in ptx) == (args[4] == "1")
    else:  # with tickets: one 4-byte load of the m_block's ticket (Note [dQ lazy zero])
        assert ("ld.global.b32" in ptx) == (args[3] == "1")
    rep = _ptxas_report(tmp_path, ptx_file)
    if rep is not None:
        assert "0 bytes spill stores" in rep, rep[-2000:]


def test_bwd_rejects_unsupported_configs():
    from fm4.cute_kernels.bwd_prepost import FlashMaskBwdPreprocess
    from fm4.cute_kernels.bwd_sm90 import FlashMaskBwdSm90

    with pytest.raises(ValueError, match="head_dim 96"):
        FlashMaskBwdSm90(None, 96, False, 0)
    with pytest.raises(ValueError, match="tile_n must be 64 or 128, got 96"):
        FlashMaskBwdSm90(None, 128, False, 0, tile_n=96)
    with pytest.raises(ValueError, match=r"tile_n 64 .* sdp_swapab and early_dv off"):
        FlashMaskBwdSm90(None, 256, False, 0, sdp_swapab=True)
    with pytest.raises(ValueError, match=r"tile_n 64 .* sdp_swapab and early_dv off"):
        FlashMaskBwdSm90(None, 128, False, 0, tile_n=64, early_dv=True)
    with pytest.raises(ValueError, match=r"tile_n 64 .* needs head_dim >= 128, got 64"):
        FlashMaskBwdSm90(None, 64, False, 0, tile_n=64)
    split = FlashMaskBwdSm90(None, 256, True, 2)
    assert (split.tile_n, split.num_stages, split.pds_stages) == (64, 1, 1)
    assert split.split_d and not split.sdp_swapab and not split.early_dv
    with pytest.raises(ValueError, match="n_bounds"):
        FlashMaskBwdSm90(None, 128, False, 3)
    with pytest.raises(ValueError, match="head_dim 96"):
        FlashMaskBwdPreprocess(None, 96, False, 64)


@needs_cutlass
def test_bwd_smem_over_capacity_is_a_clear_error(tmp_path):
    """Two Q / dO stages at head dim 256 need 289 KB of smem: refused when compiling."""
    script = (
        "from fm4.cute_kernels import bwd_launch as L\n"
        "try:\n"
        "    L._compile_bwd('BFloat16', 256, True, 1, False, num_stages=2)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = compile_in_subprocess(script, [], arch="sm_90a", dump_dir=tmp_path)
    assert "backward smem 295936 B over sm_90's capacity" in out, out


def test_bwd_can_implement_reasons_on_cpu():
    from fm4.cute_kernels.bwd_launch import can_implement

    q = torch.randn(1, 8, 2, 128, dtype=torch.bfloat16)
    k = torch.randn(1, 8, 1, 128, dtype=torch.bfloat16)
    ok, why = can_implement(q, q, k, k, q)
    assert not ok and "CUDA" in why
    q96 = torch.randn(1, 8, 2, 96, dtype=torch.bfloat16)
    k96 = torch.randn(1, 8, 1, 96, dtype=torch.bfloat16)
    ok, why = can_implement(q96, q96, k96, k96, q96)
    assert not ok and "96" in why
    ok, why = can_implement(q.float(), q.float(), k.float(), k.float(), q.float())
    assert not ok and "dtype" in why


# ---------------------------------------------------------------------------------------------
# GPU: correctness against fm4.reference.attention_bwd_ref
# ---------------------------------------------------------------------------------------------
SHAPES = [(1, 1), (113, 203), (1023, 1024), (256, 256), (384, 200)]


def _mask_names() -> list[str]:
    from fm4.masks import mask_names

    return mask_names()


SMOKE_SHAPES = [(113, 203), (1023, 1024)]


def _inputs(B, sq, sk, H, Hkv, D, dtype, gen_seed=0):
    g = torch.Generator(device="cuda").manual_seed(gen_seed)
    q = torch.randn(B, sq, H, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype, generator=g)
    dout = torch.randn(B, sq, H, D, device="cuda", dtype=dtype, generator=g)
    return q, k, v, dout


def _random_case(seed, B, sq, sk, H, Hkv, D, dtype, hm, n, causal, gen_seed=0):
    """Inputs (``_inputs``) and random bounds with ``hm`` mask heads (None when n = 0); the
    bounds come from a CPU generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v, dout = _inputs(B, sq, sk, H, Hkv, D, dtype, gen_seed=gen_seed)
    sri = random_bounds(B, hm, sq, sk, n, gen, causal).cuda() if n else None
    return q, k, v, dout, sri


def _run_and_check(q, k, v, dout, sri, causal, *, dlse=None, kernel_options=None):
    """Forward with the reference, backward with the kernel (``kernel_options``: its knobs);
    compare with the fp32 reference (``fm4.testing.check_attention_grads``: FA4's tolerance
    rule, zero gradients for rows that see nothing, no NaN)."""
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref
    from fm4.testing import check_attention_grads

    out, lse = attention_ref(q, k, v, sri, causal)
    grads = attention_bwd_sm90(
        dout, q, k, v, out, lse, sri, causal, dlse=dlse, kernel_options=kernel_options
    )
    return check_attention_grads(dout, q, k, v, sri, causal, grads, dlse=dlse)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [128, 256])
def test_bwd_dense(sq, sk, causal, dtype, head_dim):
    """Head dim 256: tile 64 x 64, dK / dV split over d (Note [dK dV split])."""
    q, k, v, dout = _inputs(2, sq, sk, 4, 2, head_dim, dtype)
    _run_and_check(q, k, v, dout, None, causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SMOKE_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_bwd_dense_d64(sq, sk, causal):
    q, k, v, dout = _inputs(2, sq, sk, 4, 1, 64, torch.bfloat16)
    _run_and_check(q, k, v, dout, None, causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("hm", [1, 2, 4])
@pytest.mark.parametrize("head_dim", [128, 256])
def test_bwd_bounds(sq, sk, causal, n, hm, head_dim):
    """Random bounds (fuzz), Hm in {1, Hkv, H}, GQA 4:2; head dim 256: Note [dK dV split]."""
    seed = head_dim + sq * 7 + sk + n + hm
    q, k, v, dout, sri = _random_case(
        seed, 2, sq, sk, 4, 2, head_dim, torch.bfloat16, hm, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("seed", range(4))
def test_bwd_bounds_fuzz_d64_fp16(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    causal, n = MODES[seed % len(MODES)]
    sq, sk = 300 + 37 * seed, 500 - 41 * seed
    q, k, v, dout = _inputs(1, sq, sk, 4, 4, 64, torch.float16, gen_seed=seed)
    sri = random_bounds(1, 4, sq, sk, n, gen, causal).cuda()
    _run_and_check(q, k, v, dout, sri, causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("name", _mask_names())
def test_bwd_registry_masks(name):
    from fm4.masks import make_mask

    S, B, H, Hkv = 1024, 2, 4, 2
    mask = make_mask(name, S, batch=B, num_heads=H, device="cuda", seed=3)
    q, k, v, dout = _inputs(B, S, S, H, Hkv, 128, torch.bfloat16)
    _run_and_check(q, k, v, dout, mask.startend_row_indices, mask.causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("hkv", [1, 2, 4])
def test_bwd_gqa_mqa(hkv):
    """dK / dV summed over the group's query heads inside the CTA (Note [GQA in the CTA])."""
    q, k, v, dout, sri = _random_case(5, 2, 333, 517, 4, hkv, 128, torch.bfloat16, 1, 2, False)
    _run_and_check(q, k, v, dout, sri, False)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
def test_bwd_fully_masked_rows_and_columns():
    """Rows [0, 300) and columns [500, 640) see nothing: their gradients are exactly 0."""
    _check_fully_masked_rows_and_columns(None)


def _check_fully_masked_rows_and_columns(kernel_options, head_dim=128):
    sq = sk = 640
    q, k, v, dout = _inputs(1, sq, sk, 2, 2, head_dim, torch.bfloat16)
    sri = torch.zeros(1, 1, sk, 4, dtype=torch.int32)
    sri[..., 0], sri[..., 1] = 0, 300  # rows [0, 300) masked in every column
    sri[..., 2], sri[..., 3] = 500, 520
    sri[:, :, 500:, 0], sri[:, :, 500:, 1] = 0, sq  # columns [500, 640) fully masked
    sri = sri.cuda()
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref

    _run_and_check(q, k, v, dout, sri, False, kernel_options=kernel_options)
    out, lse = attention_ref(q, k, v, sri, False)
    dq, dk, dv = attention_bwd_sm90(
        dout, q, k, v, out, lse, sri, False, kernel_options=kernel_options
    )
    assert (dq[:, :300] == 0).all()
    assert (dk[:, 500:] == 0).all() and (dv[:, 500:] == 0).all()


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
def test_bwd_causal_sq_longer_than_sk():
    """Bottom-right causal with Sq > Sk: the first Sq - Sk rows see nothing (dq == 0)."""
    q, k, v, dout = _inputs(1, 700, 300, 2, 1, 128, torch.bfloat16)
    _run_and_check(q, k, v, dout, None, True)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("n_mode", [0, 2])
def test_bwd_with_dlse(n_mode):
    gen = torch.Generator().manual_seed(9)
    sq, sk = 257, 390
    q, k, v, dout = _inputs(2, sq, sk, 4, 2, 128, torch.bfloat16)
    sri = random_bounds(2, 2, sq, sk, 2, gen, False).cuda() if n_mode else None
    dlse = torch.randn(2, 4, sq, device="cuda", dtype=torch.float32)
    _run_and_check(q, k, v, dout, sri, False, dlse=dlse)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
def test_bwd_prebuilt_tile_lists_and_no_recompile():
    """Lists built once with ``tile_shape_bwd``; a new length reuses the compiled kernels."""
    from fm4.cute_kernels import compile_utils
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90, tile_shape_bwd
    from fm4.masks.tiles import build_tile_lists
    from fm4.reference import attention_ref

    gen = torch.Generator().manual_seed(11)
    for sq, sk in ((200, 330), (420, 610)):
        q, k, v, dout = _inputs(1, sq, sk, 2, 2, 128, torch.bfloat16)
        sri = random_bounds(1, 2, sq, sk, 4, gen, False).cuda()
        lists = build_tile_lists(sri, False, sq, sk, *tile_shape_bwd(128), backward=True)
        out, lse = attention_ref(q, k, v, sri, False)
        before = compile_utils.compile_count
        attention_bwd_sm90(dout, q, k, v, out, lse, sri, False, tile_lists=lists)
        if sq == 420:
            assert compile_utils.compile_count == before, "a new length must not recompile"
    assert math.isfinite(float(lse[torch.isfinite(lse)].sum()))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("mode", ["causal", "bounds4", "bounds2_causal_gqa"])
def test_bwd_deterministic_bitwise(mode):
    """deterministic=True: dq, dk, dv bitwise identical over repeated runs (dQ additions
    ordered by semaphores, Note [Deterministic dQ]) and correct."""
    _check_deterministic_bitwise(mode, None)


def _check_deterministic_bitwise(mode, kernel_options, head_dim=128):
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref
    from fm4.testing import check_attention_grads

    gen = torch.Generator().manual_seed(21)
    sq, sk, H, Hkv = 777, 1100, 4, 2
    q, k, v, dout = _inputs(2, sq, sk, H, Hkv, head_dim, torch.bfloat16)
    sri, causal = None, True
    if mode == "bounds4":
        sri, causal = random_bounds(2, 2, sq, sk, 4, gen, False).cuda(), False
    elif mode == "bounds2_causal_gqa":
        sri = random_bounds(2, 1, sq, sk, 2, gen, True).cuda()
    out, lse = attention_ref(q, k, v, sri, causal)
    call = (dout, q, k, v, out, lse, sri, causal)
    opts = {"deterministic": True, "kernel_options": kernel_options}
    first = attention_bwd_sm90(*call, **opts)
    for _ in range(4):
        again = attention_bwd_sm90(*call, **opts)
        for a, b in zip(first, again, strict=True):
            assert torch.equal(a, b)
    check_attention_grads(dout, q, k, v, sri, causal, first)


# ---------------------------------------------------------------------------------------------
# GPU: the S / dP layout the tuning table does not pick (sdp_swapab, Note [SdP swapAB]) through
# the same checks, so both layouts are tested whatever the defaults are
# ---------------------------------------------------------------------------------------------
SWAPAB = {"sdp_swapab": True}


def _other_layout(n_bounds: int) -> dict:
    """Kernel options selecting the layout that ``SDP_SWAPAB`` does not pick for ``n_bounds``."""
    from fm4.cute_kernels.bwd_sm90 import SDP_SWAPAB

    return {"sdp_swapab": not SDP_SWAPAB[n_bounds]}


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "head_dim,dtype", [(128, torch.bfloat16), (128, torch.float16), (64, torch.bfloat16)]
)
def test_bwd_other_layout_dense(sq, sk, causal, head_dim, dtype):
    q, k, v, dout = _inputs(2, sq, sk, 4, 2, head_dim, dtype)
    _run_and_check(q, k, v, dout, None, causal, kernel_options=_other_layout(0))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("hm", [1, 4])
def test_bwd_other_layout_bounds(sq, sk, causal, n, hm):
    """Random bounds (fuzz), Hm in {1, H}, GQA 4:2 (swapab: the transposed mask bits)."""
    q, k, v, dout, sri = _random_case(
        sq * 7 + sk + n + hm, 2, sq, sk, 4, 2, 128, torch.bfloat16, hm, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal, kernel_options=_other_layout(n))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SMOKE_SHAPES)
@pytest.mark.parametrize("causal,n", MODES)
def test_bwd_other_layout_bounds_d64_fp16(sq, sk, causal, n):
    q, k, v, dout, sri = _random_case(
        200 + sq + n, 1, sq, sk, 4, 4, 64, torch.float16, 4, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal, kernel_options=_other_layout(n))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize(
    "knobs", [{"pds_stages": 1}, {"early_dv": False}, {"pds_stages": 1, "early_dv": False}]
)
@pytest.mark.parametrize("sq,sk,causal,n", [(1023, 1024, True, 2), (113, 203, False, 4)])
def test_bwd_swapab_knobs(knobs, sq, sk, causal, n):
    """One dS buffer (a barrier before the write) and dV after the dS barrier."""
    q, k, v, dout, sri = _random_case(sq + n, 2, sq, sk, 4, 2, 128, torch.bfloat16, 2, n, causal)
    _run_and_check(q, k, v, dout, sri, causal, kernel_options={**SWAPAB, **knobs})


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("name", _mask_names())
def test_bwd_other_layout_registry_masks(name):
    from fm4.masks import make_mask

    S, B, H, Hkv = 1024, 2, 4, 2
    mask = make_mask(name, S, batch=B, num_heads=H, device="cuda", seed=3)
    q, k, v, dout = _inputs(B, S, S, H, Hkv, 128, torch.bfloat16)
    sri = mask.startend_row_indices
    opts = _other_layout(0 if sri is None else sri.shape[-1])
    _run_and_check(q, k, v, dout, sri, mask.causal, kernel_options=opts)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("hkv", [1, 2, 4])
def test_bwd_other_layout_gqa_mqa(hkv):
    """lse / Delta and the key-row bounds follow each query head of the group."""
    q, k, v, dout, sri = _random_case(5, 2, 333, 517, 4, hkv, 128, torch.bfloat16, 4, 2, False)
    _run_and_check(q, k, v, dout, sri, False, kernel_options=_other_layout(2))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
def test_bwd_other_layout_fully_masked_rows_and_columns():
    _check_fully_masked_rows_and_columns(_other_layout(4))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
def test_bwd_other_layout_causal_sq_longer_than_sk():
    q, k, v, dout = _inputs(1, 700, 300, 2, 1, 128, torch.bfloat16)
    _run_and_check(q, k, v, dout, None, True, kernel_options=_other_layout(0))


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("n_mode", [0, 2])
def test_bwd_other_layout_with_dlse(n_mode):
    gen = torch.Generator().manual_seed(9)
    sq, sk = 257, 390
    q, k, v, dout = _inputs(2, sq, sk, 4, 2, 128, torch.bfloat16)
    sri = random_bounds(2, 2, sq, sk, 2, gen, False).cuda() if n_mode else None
    dlse = torch.randn(2, 4, sq, device="cuda", dtype=torch.float32)
    opts = _other_layout(n_mode)
    _run_and_check(q, k, v, dout, sri, False, dlse=dlse, kernel_options=opts)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("mode", ["causal", "bounds4", "bounds2_causal_gqa"])
def test_bwd_other_layout_deterministic_bitwise(mode):
    n = {"causal": 0, "bounds4": 4, "bounds2_causal_gqa": 2}[mode]
    _check_deterministic_bitwise(mode, _other_layout(n))


@needs_cutlass
def test_bwd_perf_variants_are_kernel_knobs():
    """Every variant of ``bench/bwd_perf.py`` constructs the kernel (no GPU needed)."""
    import cutlass

    from bench.bwd_perf import VARIANTS
    from fm4.cute_kernels.bwd_sm90 import FlashMaskBwdSm90

    for opts in VARIANTS.values():
        FlashMaskBwdSm90(cutlass.BFloat16, 128, True, 2, **opts)


# ---------------------------------------------------------------------------------------------
# GPU: more of head dim 256 and the dK / dV split over d (tile_n 64, Note [dK dV split]; dense
# and bounds at 256 are in test_bwd_dense / test_bwd_bounds); the split is also run at head dim
# 128, where the tuning table does not pick it
# ---------------------------------------------------------------------------------------------
SPLIT_D = {"tile_n": 64}


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk", SMOKE_SHAPES)
@pytest.mark.parametrize("causal,n", [(False, 0), (True, 0), *MODES])
def test_bwd_split_d_d128(sq, sk, causal, n):
    """tile_n 64 at head dim 128 (two P / dS buffers there, one at head dim 256)."""
    q, k, v, dout, sri = _random_case(
        400 + sq + n, 2, sq, sk, 4, 2, 128, torch.bfloat16, 2, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal, kernel_options=SPLIT_D)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("causal,n", MODES)
def test_bwd_d256_mqa_fp16_bounds(causal, n):
    q, k, v, dout, sri = _random_case(
        450 + n, 1, 333, 517, 4, 1, 256, torch.float16, 1, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("head_dim,kernel_options", [(256, None), (128, SPLIT_D)])
def test_bwd_split_d_fully_masked_rows_and_columns(head_dim, kernel_options):
    _check_fully_masked_rows_and_columns(kernel_options, head_dim)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("mode", ["causal", "bounds4", "bounds2_causal_gqa"])
@pytest.mark.parametrize("head_dim,kernel_options", [(256, None), (128, SPLIT_D)])
def test_bwd_split_d_deterministic_bitwise(mode, head_dim, kernel_options):
    _check_deterministic_bitwise(mode, kernel_options, head_dim=head_dim)


# ---------------------------------------------------------------------------------------------
# GPU: the persistent kernel (Note [Persistent backward]) against one CTA per work item: dK / dV
# bitwise (each item's math is the same), dQ within tolerance (the order of its fp32 additions
# differs), everything bitwise with deterministic=True
# ---------------------------------------------------------------------------------------------
PERSISTENT = {"persistent": True}
DIRECT = {"dkv_store": "direct"}


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("causal,n", [(False, 0), (True, 0), *MODES])
@pytest.mark.parametrize("sq,sk,grid", [(1500, 1500, None), (1050, 777, 4)])
@pytest.mark.parametrize("knobs", [PERSISTENT, {**PERSISTENT, **DIRECT}])
def test_bwd_persistent_matches_one_cta_per_item(causal, n, sq, sk, grid, knobs):
    """``grid`` 4: dozens of items per CTA (pipeline states and the queue carried over, items
    without m_blocks in between). ``dkv_store="direct"``: dK / dV stored from registers."""
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref
    from fm4.testing import check_attention_grads

    q, k, v, dout, sri = _random_case(
        500 + sq + n, 2, sq, sk, 4, 2, 128, torch.bfloat16, 2, n, causal, gen_seed=n
    )
    out, lse = attention_ref(q, k, v, sri, causal)
    call = (dout, q, k, v, out, lse, sri, causal)
    _, dk0, dv0 = attention_bwd_sm90(*call)
    got = attention_bwd_sm90(*call, kernel_options=knobs, max_ctas=grid)
    assert torch.equal(got[1], dk0) and torch.equal(got[2], dv0)
    check_attention_grads(dout, q, k, v, sri, causal, got)
    det = {"deterministic": True}
    ref = attention_bwd_sm90(*call, **det)
    again = attention_bwd_sm90(*call, **det, kernel_options=knobs, max_ctas=grid)
    for a, b in zip(ref, again, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize(
    "head_dim,kernel_options",
    [
        (128, PERSISTENT),
        (256, PERSISTENT),
        (128, {**PERSISTENT, "sdp_swapab": False}),
        (128, DIRECT),
        (256, {**PERSISTENT, **DIRECT}),
    ],
)
def test_bwd_persistent_fully_masked_and_other_layouts(head_dim, kernel_options):
    _check_fully_masked_rows_and_columns(kernel_options, head_dim)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("causal,n", [(True, 0), (False, 2), (True, 1)])
def test_bwd_direct_store_matches_tma_store(causal, n):
    """One CTA per item, ``dkv_store="direct"`` (ragged last n_block: rows past the keys not
    written): dK / dV bitwise equal to the TMA store's."""
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref

    q, k, v, dout, sri = _random_case(
        600 + n, 2, 700, 650, 4, 2, 128, torch.bfloat16, 2, n, causal, gen_seed=n
    )
    out, lse = attention_ref(q, k, v, sri, causal)
    call = (dout, q, k, v, out, lse, sri, causal)
    _, dk0, dv0 = attention_bwd_sm90(*call)
    got = attention_bwd_sm90(*call, kernel_options=DIRECT)
    assert torch.equal(got[1], dk0) and torch.equal(got[2], dv0)


# ---------------------------------------------------------------------------------------------
# GPU: the dQ accumulator zeroed by the main kernel (Note [dQ lazy zero]): every torch.empty of
# the call comes back poisoned (NaN floats, tickets / semaphores with the flag set), so a tile
# added to before it is zeroed, an unzeroed ticket or an unvisited m_block read by the
# postprocess shows up as NaN or a wrong dQ
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def poisoned_empty(monkeypatch):
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype == torch.int32:
            t.fill_(0x5A5A5A5A)  # bit 30 (DQ_STORED_FLAG) set, low bits nonzero
        return t

    monkeypatch.setattr(torch, "empty", empty)


FIRST_STORE_CASES = [
    # (sq, sk, causal, n): full with 16 n_blocks (all visit every m_block), causal, bounds
    (1000, 2000, False, 0),
    (1023, 1024, True, 0),
    (777, 1100, False, 2),
    (333, 517, False, 4),
    (555, 700, True, 1),
]


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("sq,sk,causal,n", FIRST_STORE_CASES)
@pytest.mark.parametrize(
    "knobs",
    [None, {"dq_lazy_zero": False}, {"persistent": True}, {"sdp_swapab": False}],
)
def test_bwd_dq_lazy_zero_poisoned(poisoned_empty, sq, sk, causal, n, knobs):
    q, k, v, dout, sri = _random_case(
        700 + sq + n, 2, sq, sk, 4, 2, 128, torch.bfloat16, 2, n, causal, gen_seed=n
    )
    _run_and_check(q, k, v, dout, sri, causal, kernel_options=knobs)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("knobs", [None, {"persistent": True}, {"sdp_swapab": False}])
def test_bwd_dq_lazy_zero_unvisited_m_blocks_poisoned(poisoned_empty, knobs):
    """Rows [0, 300) see nothing: their m_blocks have no visitor, dq there is exactly 0."""
    _check_fully_masked_rows_and_columns(knobs)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("mode", ["causal", "bounds4"])
def test_bwd_deterministic_poisoned(poisoned_empty, mode):
    """Deterministic mode zeroes its accumulator and semaphores in the preprocess."""
    _check_deterministic_bitwise(mode, None)


@pytest.mark.gpu
@needs_cutlass
@needs_sm90
@pytest.mark.parametrize("causal,n", [(False, 0), (True, 2)])
def test_bwd_dq_lazy_zero_matches_zero_fill(causal, n):
    """dK / dV bitwise equal to the zero-filled accumulator's, dq within tolerance."""
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
    from fm4.reference import attention_ref
    from fm4.testing import check_attention_grads

    q, k, v, dout, sri = _random_case(
        800 + n, 2, 900, 1300, 4, 2, 128, torch.bfloat16, 2, n, causal, gen_seed=n
    )
    out, lse = attention_ref(q, k, v, sri, causal)
    call = (dout, q, k, v, out, lse, sri, causal)
    ref = attention_bwd_sm90(*call, kernel_options={"dq_lazy_zero": False})
    got = attention_bwd_sm90(*call, kernel_options={"dq_lazy_zero": True})
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
    check_attention_grads(dout, q, k, v, sri, causal, got)
