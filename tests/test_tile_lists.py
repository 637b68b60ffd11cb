"""The CuTe DSL tile flags + tile lists kernel (`fm4.cute_kernels.tile_lists`).

CPU: the kernel compiles for sm_90a and sm_100a on fake tensors, without a GPU, both ways the
DSL picks an arch (``CUTE_DSL_ARCH`` in a fresh process, ``--gpu-arch`` in this one), in every
mode (four bound modes and no bounds, forward only and forward + backward), and the PTX has the
intended shape (vector loads of the min/max, ballot + popc compaction, no local memory).
GPU: `build_tile_lists(..., impl="cute")` equals the torch path exactly (flags, counts, and the
index lists, entries past cnt included), on random bounds, registry masks, odd shapes.
Timing (opt-in, ``FM4_TIMING=1``): torch path vs cute path of the full `build_tile_lists`.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fm4.masks import build_tile_lists, make_mask, mask_names
from fm4.masks import tiles as tiles_mod
from tests.helpers import MODES, compile_in_subprocess, random_bounds

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["sm_90a", "sm_100a"]
# (causal, n): the four bound modes, and no bounds (n None) causal or not.
ALL_MODES = [*MODES, (True, None), (False, None)]
FIELDS = (
    "flags",
    "fwd_partial_cnt",
    "fwd_partial_idx",
    "fwd_full_cnt",
    "fwd_full_idx",
    "bwd_partial_cnt",
    "bwd_partial_idx",
    "bwd_full_cnt",
    "bwd_full_idx",
)


def _check_ptx(ptx: str, arch: str, n: int | None, backward: bool, fill_tail: bool) -> None:
    lines = [ln.split() for ln in ptx.splitlines() if ln.strip()]
    ops = [ln[0] for ln in lines]
    assert [".target", arch] in [ln[:2] for ln in lines], "wrong .target"
    walks = 2 if backward else 1
    # Min/max: one n_block's 2n int32 per load site; forward: before the loop and one step ahead
    # in it; backward: once per row.
    one = {None: [], 1: ["ld.global.v2.b32"], 2: ["ld.global.v4.b32"]}
    one[4] = ["ld.global.v4.b32"] * 2
    # (sm_100a loads n = 1's 8 bytes as one b64 rather than v2.b32: the same transaction.)
    loads = [o.replace(".b64", ".v2.b32") for o in ops if o.startswith("ld.global")]
    assert loads == one[n] * (walks + 1)
    assert ops.count("vote.sync.ballot.b32") == 2 * walks  # partial and unmasked
    assert ops.count("popc.b32") == 4 * walks  # slot below the lane + row count, per list
    assert ops.count("st.global.b8") == 1  # the flags, forward rows only
    # Per walk: 2 list entries, 2 counts, and 2 tail zeros with fill_tail; with bounds the
    # forward walk also stores each partial entry's bound code (and its tail zero).
    codes = 0 if n is None else (2 if fill_tail else 1)
    assert ops.count("st.global.b32") == (6 if fill_tail else 4) * walks + codes
    assert not any("atom" in o or "red." in o for o in ops)  # no atomics
    assert "ld.local" not in ptx and "st.local" not in ptx  # no spills, no local arrays


# ------------------------------------------------------------------------------------------
# CPU: compile without a GPU
# ------------------------------------------------------------------------------------------
_SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from fm4.cute_kernels.tile_lists import compile_tile_lists
    out = {}
    for causal, n, tm, tn, bwd in json.loads(sys.argv[1]):
        fn = compile_tile_lists(n, causal, tm, tn, backward=bwd)
        out[f"{causal},{n},{tm},{tn},{bwd}"] = fn.artifacts.PTX
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("arch", ARCHS)
def test_compile_for_arch_from_env(arch, tmp_path):
    """CI's way: ``CUTE_DSL_ARCH`` is read when cutlass is imported, so set it for a new process."""
    cases = [(c, n, 128, 128, bwd) for c, n in ALL_MODES for bwd in (False, True)]
    cases += [(True, 2, 64, 176, True), (False, 4, 192, 128, False)]
    out = compile_in_subprocess(
        _SUBPROCESS_SCRIPT, [json.dumps(cases)], arch=arch, dump_dir=tmp_path
    )
    ptxs = json.loads(out.strip().splitlines()[-1])
    assert len(ptxs) == len(cases)
    for causal, n, tm, tn, bwd in cases:
        _check_ptx(ptxs[f"{causal},{n},{tm},{tn},{bwd}"], arch, n, bwd, fill_tail=True)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("causal,n", ALL_MODES)
def test_compile_for_arch_in_process(arch, causal, n, tmp_path):
    """``arch=`` (``--gpu-arch``) picks the target in a process that has imported cutlass."""
    from fm4.cute_kernels.tile_lists import compile_tile_lists

    opts = f"--keep-ptx --dump-dir {tmp_path}"
    for tile_m, tile_n, bwd, fill in ((128, 128, True, True), (64, 176, False, False)):
        fn = compile_tile_lists(
            n, causal, tile_m, tile_n, backward=bwd, fill_tail=fill, arch=arch, options=opts
        )
        _check_ptx(fn.artifacts.PTX, arch, n, bwd, fill)


def test_flag_values_match_tiles():
    from fm4.cute_kernels import tile_lists

    assert (tile_lists.SKIP, tile_lists.PARTIAL, tile_lists.UNMASKED) == (
        tiles_mod.SKIP,
        tiles_mod.PARTIAL,
        tiles_mod.UNMASKED,
    )


def test_cute_rejects_cpu_and_bad_impl():
    from fm4.cute_kernels.tile_lists import tile_lists_from_minmax

    mm = torch.zeros(1, 1, 2, 1, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        tile_lists_from_minmax(mm, True, 100, 200, 64, 128)
    with pytest.raises(ValueError, match="impl="):
        build_tile_lists(None, True, 10, 10, 4, 4, impl="triton")
    with pytest.raises(ValueError, match="needs a CUDA"):
        build_tile_lists(torch.zeros(1, 1, 8, 1, dtype=torch.int32), True, 8, 8, 4, 4, impl="cute")


def test_cpu_auto_stays_torch():
    """On the CPU, 'auto' is the torch path; without bounds, ``device`` places the lists."""
    sri = random_bounds(2, 2, 100, 90, 2, torch.Generator().manual_seed(0), False)
    a = build_tile_lists(sri, False, 100, 90, 16, 32)
    b = build_tile_lists(sri, False, 100, 90, 16, 32, impl="torch")
    for f in (*FIELDS, "fwd_partial_code"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.fwd_partial_code is not None
    c = build_tile_lists(None, True, 100, 90, 16, 32, device="cpu")
    assert c.flags.device.type == "cpu" and c.flags.shape == (1, 1, 7, 3)


# ------------------------------------------------------------------------------------------
# GPU: exact equality with the torch path
# ------------------------------------------------------------------------------------------
def _assert_same(got, want, backward: bool = True, whole: bool = True) -> None:
    """Every field equal; ``whole=False`` compares only the first cnt entries of each list."""
    for f in FIELDS if backward else FIELDS[:5]:
        a, b = getattr(got, f), getattr(want, f)
        assert a.device.type == "cuda" and a.dtype == b.dtype and a.shape == b.shape, f
        a, b = a.cpu(), b.cpu()
        if f.endswith("_idx"):
            cnt = getattr(want, f.replace("_idx", "_cnt")).cpu()
            assert bool(torch.equal(getattr(got, f.replace("_idx", "_cnt")).cpu(), cnt)), f
            valid = torch.arange(a.shape[-1]) < cnt[..., None]
            if whole:
                assert bool((a[~valid] == 0).all()), f"{f}: tail not zero"
            a, b = a[valid], b[valid]
        if not torch.equal(a, b):
            bad = (a != b).nonzero()[:5].tolist()
            raise AssertionError(f"{f} differs at {bad}")
    if not backward:
        assert got.bwd_partial_cnt is None
    # Bound codes (Note [Bound codes]): per partial entry, with bounds only.
    a, b = got.fwd_partial_code, want.fwd_partial_code
    assert (a is None) == (b is None)
    if a is not None:
        assert a.device.type == "cuda" and a.dtype == b.dtype and a.shape == b.shape
        a, b = a.cpu(), b.cpu()
        valid = torch.arange(a.shape[-1]) < want.fwd_partial_cnt.cpu()[..., None]
        if whole:
            assert bool((a[~valid] == 0).all()), "fwd_partial_code: tail not zero"
        if not torch.equal(a[valid], b[valid]):
            raise AssertionError(f"fwd_partial_code differs at {(a != b).nonzero()[:5].tolist()}")


def _both(sri, causal, sq, sk, tm, tn, backward=True, fill_tail=True, device=None):
    from fm4.cute_kernels.tile_lists import build_tile_lists_cute

    want = build_tile_lists(sri, causal, sq, sk, tm, tn, impl="torch", backward=backward)
    if sri is None:
        want = tiles_mod.TileLists.from_flags(want.flags.cuda(), tm, tn, backward=backward)
    got = build_tile_lists_cute(
        sri, causal, sq, sk, tm, tn, backward=backward, fill_tail=fill_tail, device=device
    )
    torch.cuda.synchronize()
    _assert_same(got, want, backward, whole=fill_tail)
    return got


@pytest.mark.gpu
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("tm,tn", [(128, 128), (64, 128), (128, 176), (192, 128)])
@pytest.mark.parametrize("sq,sk", [(1, 1), (1, 300), (300, 1), (1000, 1000), (203, 1777)])
def test_random_bounds(causal, n, tm, tn, sq, sk):
    seed = hash((causal, n, tm, tn, sq, sk)) % 2**31
    gen = torch.Generator().manual_seed(seed)
    for B, Hm in ((1, 1), (2, 3)):
        sri = random_bounds(B, Hm, sq, sk, n, gen, causal).cuda()
        _both(sri, causal, sq, sk, tm, tn)


@pytest.mark.gpu
@pytest.mark.parametrize("causal,n", MODES)
def test_random_bounds_forward_only_and_no_fill(causal, n):
    gen = torch.Generator().manual_seed(n)
    for sq, sk in ((1000, 1000), (2049, 4000), (4000, 2049)):
        sri = random_bounds(3, 2, sq, sk, n, gen, causal).cuda()
        _both(sri, causal, sq, sk, 128, 128, backward=False)
        _both(sri, causal, sq, sk, 128, 128, backward=True, fill_tail=False)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tm,tn", [(128, 128), (64, 128), (128, 176), (192, 128)])
def test_no_bounds(causal, tm, tn):
    for sq, sk in ((1, 1), (1, 5000), (5000, 1), (8192 + 5, 8192 + 5), (1000, 8192), (8192, 77)):
        for bwd in (True, False):
            got = _both(None, causal, sq, sk, tm, tn, backward=bwd, device="cuda")
            assert got.flags.shape[:2] == (1, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("name", mask_names())
@pytest.mark.parametrize("S", [8192 + 5, 32768])
def test_registry_masks(name, S):
    m = make_mask(name, S, batch=2, num_heads=2, device="cuda")
    sri = m.startend_row_indices
    dev = "cuda" if sri is None else None
    for tm, tn in ((128, 128), (64, 128)):
        _both(sri, m.causal, S, S, tm, tn, device=dev)
    # Sq != Sk: the same bounds read against a shorter and a longer query.
    for sq in (S // 3, S + 1000):
        _both(sri, m.causal, sq, S, 128, 128, device=dev)


@pytest.mark.gpu
def test_empty_no_launch_and_dispatch():
    from fm4.cute_kernels import tile_lists as tl

    sri = random_bounds(2, 2, 300, 300, 2, torch.Generator().manual_seed(1), True).cuda()
    size = len(tl._compile_cache)
    for shape, sq, sk in (
        ((0, 2, 300, 2), 300, 300),
        ((2, 2, 0, 2), 300, 0),
        ((2, 2, 300, 2), 0, 300),
    ):
        e = torch.zeros(shape, dtype=torch.int32, device="cuda")
        got = build_tile_lists(e, True, sq, sk, 128, 128, impl="cute")
        want = build_tile_lists(e, True, sq, sk, 128, 128, impl="torch")
        _assert_same(got, want)
    got = build_tile_lists(None, True, 0, 5, 128, 128, impl="cute", device="cuda")
    assert got.flags.shape == (1, 1, 0, 1) and got.fwd_full_cnt.shape == (1, 1, 0)
    assert len(tl._compile_cache) == size  # nothing compiled: nothing launched
    # 'auto' on CUDA is the cute path; new shapes and lengths never recompile.
    _both(sri, True, 300, 300, 128, 128)
    size = len(tl._compile_cache)
    auto = build_tile_lists(sri, True, 300, 300, 128, 128)
    _assert_same(auto, build_tile_lists(sri, True, 300, 300, 128, 128, impl="torch"))
    sri2 = random_bounds(5, 1, 999, 4321, 2, torch.Generator().manual_seed(2), True).cuda()
    _both(sri2, True, 999, 4321, 128, 128)
    assert len(tl._compile_cache) == size
    # The launch goes to the current stream.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = build_tile_lists(sri2, True, 999, 4321, 128, 128)
    s.synchronize()
    _assert_same(got, build_tile_lists(sri2, True, 999, 4321, 128, 128, impl="torch"))
    # Backward lists added later from the flags agree with the fused ones.
    fwd = build_tile_lists(sri2, True, 999, 4321, 128, 128, backward=False).add_backward()
    _assert_same(fwd, got)


# ------------------------------------------------------------------------------------------
# Timing (opt-in): torch path vs cute path of build_tile_lists
# ------------------------------------------------------------------------------------------
def _median_ms(fn, warmup: int = 3, reps: int = 25) -> float:
    """Median milliseconds between CUDA events around ``fn()``: GPU time plus any host time the
    GPU waits for (what a caller sees when the lists are built right before the attention)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _gpu_and_host(fn, reps: int = 15) -> tuple[float, float]:
    """(GPU-only ms, host us) medians: a sleep kernel queued first lets the host run ahead, so
    the events see only the GPU work; the host time is the enqueue time of ``fn()``.

    The host figure is noisy (on the H100 machine it read well above the event-measured total
    of the cute path); trust the GPU-only figure and `_median_ms`.
    """
    fn()
    gpu, host = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t0) * 1e6)
        end.record()
        end.synchronize()
        gpu.append(start.elapsed_time(end))
    return statistics.median(gpu), statistics.median(host)


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("FM4_TIMING") != "1", reason="timing: set FM4_TIMING=1")
def test_timing_table():
    K = 1024
    cases = []
    for name in ("document", "sliding_window"):
        cases.append((f"{name} S=8K B=16 Hm=1", make_mask(name, 8 * K, batch=16, device="cuda")))
    m = make_mask("random_eviction", 8 * K, batch=16, num_heads=32, device="cuda")
    cases.append(("random_eviction S=8K B=16 Hm=32", m))
    m = make_mask("causal_document", 128 * K, batch=1, device="cuda")
    cases.append(("causal_document S=128K B=1 Hm=1", m))
    gen = torch.Generator().manual_seed(0)
    sri = random_bounds(1, 32, 128 * K, 128 * K, 4, gen, False).cuda()
    cases.append(("random n=4 S=128K B=1 Hm=32", (sri, False, 128 * K)))
    from fm4.cute_kernels.tile_lists import build_tile_lists_cute, tile_lists_from_minmax
    from fm4.cute_kernels.tile_minmax import block_minmax_cute

    rows = []
    for label, m in cases:
        if isinstance(m, tuple):
            sri, causal, S = m
        else:
            sri, causal, S = m.startend_row_indices, m.causal, m.seqlen_k
        args = (sri, causal, S, S, 128, 128)
        for bwd in (False, True):
            row = {"case": label, "lists": "fwd+bwd" if bwd else "fwd"}
            mm = None if sri is None else block_minmax_cute(sri, causal, S, 128)
            fns = {
                "torch": functools.partial(build_tile_lists, *args, impl="torch", backward=bwd),
                "cute": functools.partial(build_tile_lists_cute, *args, backward=bwd),
                "cute_nofill": functools.partial(
                    build_tile_lists_cute, *args, backward=bwd, fill_tail=False
                ),
                # The lists kernel alone, from a ready min/max.
                "cute_lists_only": functools.partial(
                    tile_lists_from_minmax, mm, *args[1:], backward=bwd
                ),
            }
            for key, fn in fns.items():
                row[key] = _median_ms(fn)
            for key in ("torch", "cute", "cute_nofill"):
                row[f"{key}_gpu"], row[f"{key}_host_us"] = _gpu_and_host(fns[key])
            row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            row["speedup"] = round(row["torch"] / row["cute"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "tile_lists_timing.json").write_text(json.dumps(rows, indent=1))
