"""The CuTe DSL per-n_block min/max kernel (`fm4.cute_kernels.tile_minmax`).

CPU: the kernel compiles for sm_90a and sm_100a on fake tensors, without a GPU, both ways the
DSL picks an arch (``CUTE_DSL_ARCH`` in a fresh process, ``--gpu-arch`` in this one), and the PTX
has the intended shape (one vector load per column, ``redux.sync`` reductions).
GPU: `block_minmax_cute` is bit-identical to `block_minmax_torch` (run on the CPU).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from fm4.masks.tiles import block_minmax, block_minmax_torch, classify_tiles, normalize_bounds
from tests.helpers import MODES, compile_in_subprocess, random_bounds

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["sm_90a", "sm_100a"]

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def _check_ptx(ptx: str, arch: str, n: int, tile_n: int) -> None:
    lines = ptx.splitlines()
    assert f".target {arch}" in lines, [ln for ln in lines if ".target" in ln]
    loads = [ln.split()[0] for ln in lines if "ld.global" in ln]
    # One load per column owned by the thread, of all n bounds at once.
    want = "ld.global.b32" if n == 1 else f"ld.global.v{n}.b32"
    threads = min(256, 32 * -(-tile_n // 32))
    assert loads == [want] * -(-tile_n // threads), loads
    assert sum("redux.sync.min.s32" in ln for ln in lines) == n
    assert sum("redux.sync.max.s32" in ln for ln in lines) == n
    assert ("bar.sync" in ptx) == (threads > 32)
    assert "ld.local" not in ptx and "st.local" not in ptx  # no spills, no local arrays


# ------------------------------------------------------------------------------------------
# CPU: compile without a GPU
# ------------------------------------------------------------------------------------------
_SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from fm4.cute_kernels.tile_minmax import compile_block_minmax
    out = {}
    for causal, n, tile_n in json.loads(sys.argv[1]):
        fn = compile_block_minmax(n, causal, tile_n)
        out[f"{causal},{n},{tile_n}"] = fn.artifacts.PTX
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("arch", ARCHS)
def test_compile_for_arch_from_env(arch, tmp_path):
    """CI's way: ``CUTE_DSL_ARCH`` is read when cutlass is imported, so set it for a new process."""
    cases = [(c, n, t) for c, n in MODES for t in (64, 176)]
    out = compile_in_subprocess(
        _SUBPROCESS_SCRIPT, [json.dumps(cases)], arch=arch, dump_dir=tmp_path
    )
    ptxs = json.loads(out.strip().splitlines()[-1])
    assert len(ptxs) == len(cases)
    for causal, n, tile_n in cases:
        _check_ptx(ptxs[f"{causal},{n},{tile_n}"], arch, n, tile_n)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("causal,n", MODES)
def test_compile_for_arch_in_process(arch, causal, n, tmp_path):
    """``arch=`` (``--gpu-arch``) picks the target in a process that has imported cutlass."""
    from fm4.cute_kernels.tile_minmax import compile_block_minmax

    for tile_n in (128, 176):
        fn = compile_block_minmax(
            n, causal, tile_n, arch=arch, options=f"--keep-ptx --dump-dir {tmp_path}"
        )
        _check_ptx(fn.artifacts.PTX, arch, n, tile_n)


def test_pairs_match_torch_normalisation():
    """The kernel's pairing rule is `normalize_bounds`' for every (causal, n)."""
    from fm4.cute_kernels.tile_minmax import _pairs

    for causal in (True, False):
        for n in (1, 2, 4):
            x = torch.tensor([[[[5, 3, 9, 1][:n]]]], dtype=torch.int32)  # every pair is empty
            got = normalize_bounds(x, causal, 7)[0, 0, 0].tolist()
            paired = {i for p in _pairs(n, causal) for i in p}
            want = [7 if i in paired else min(v, 7) for i, v in enumerate([5, 3, 9, 1][:n])]
            assert got == want, (causal, n)


def test_cute_rejects_cpu_tensors():
    from fm4.cute_kernels.tile_minmax import block_minmax_cute

    with pytest.raises(ValueError, match="needs a CUDA tensor"):
        block_minmax_cute(torch.zeros(1, 1, 4, 1, dtype=torch.int32), True, 4, 64)


# ------------------------------------------------------------------------------------------
# GPU: bit-exact against the torch twin
# ------------------------------------------------------------------------------------------
def _bounds(B, Hm, sq, sk, n, causal, seed):
    """Random bounds plus the edge values: 0, exactly Sq, just above Sq, INT32_MAX."""
    gen = torch.Generator().manual_seed(seed)
    x = random_bounds(B, Hm, sq, sk, n, gen, causal)
    special = torch.tensor([0, sq, sq + 1, 2**31 - 1], dtype=torch.int32)
    pick = torch.randint(0, 4, x.shape, generator=gen)
    where = torch.rand(x.shape, generator=gen) < 0.15
    return torch.where(where, special[pick], x).contiguous()


def _check(sri_cpu, causal, sq, tile_n, sri_gpu=None):
    from fm4.cute_kernels.tile_minmax import block_minmax_cute

    want = block_minmax_torch(sri_cpu, causal, sq, tile_n)
    got = block_minmax_cute(sri_cpu.cuda() if sri_gpu is None else sri_gpu, causal, sq, tile_n)
    torch.cuda.synchronize()
    assert got.dtype == torch.int32 and got.shape == want.shape
    assert torch.equal(got.cpu(), want), (got.cpu() != want).nonzero()[:8].tolist()


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("tile_n", [64, 128, 176])
@pytest.mark.parametrize("sk", [1, 113, 128, 203, 1024, 8192 + 5])
@pytest.mark.parametrize("B,Hm", [(1, 1), (2, 3)])
def test_cute_equals_torch(causal, n, tile_n, sk, B, Hm):
    seed = hash((causal, n, tile_n, sk, B, Hm)) % 2**31
    for sq in (sk, 1000):  # Sq = Sk, and Sq unrelated to Sk (below or above it)
        _check(_bounds(B, Hm, sq, sk, n, causal, seed), causal, sq, tile_n)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("causal,n", MODES)
def test_cute_equals_torch_edge_values(causal, n):
    """Sq = 0 and 1, all-empty intervals, all values above Sq, negatives (passed through)."""
    sk = 300
    for sq in (0, 1, 77):
        gen = torch.Generator().manual_seed(sq)
        cases = [
            torch.full((2, 2, sk, n), sq + 5, dtype=torch.int32),
            torch.zeros(2, 2, sk, n, dtype=torch.int32),
            torch.randint(-50, 50, (2, 2, sk, n), generator=gen, dtype=torch.int32),
        ]
        if n >= 2:  # empty intervals everywhere: start >= end
            empty = torch.randint(0, sq + 3, (2, 2, sk, n), generator=gen, dtype=torch.int32)
            empty[..., 0] = empty[..., 1] + torch.randint(0, 3, (2, 2, sk), generator=gen)
            cases.append(empty)
        for x in cases:
            for tile_n in (64, 128, 176):
                _check(x, causal, sq, tile_n)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("causal,n", MODES)
def test_cute_odd_layouts_and_empty(causal, n):
    from fm4.cute_kernels.tile_minmax import block_minmax_cute

    B, Hm, sk, sq = 2, 3, 203, 150
    x = _bounds(B, Hm, sq, sk, n, causal, 7)
    # A view 4 bytes past an aligned allocation (misaligned for the vector load).
    flat = torch.zeros(x.numel() + 1, dtype=torch.int32, device="cuda")
    flat[1:] = x.flatten().cuda()
    _check(x, causal, sq, 128, sri_gpu=flat[1:].view(x.shape))
    # Non-contiguous: heads and keys transposed in memory.
    t = x.transpose(1, 2).contiguous().cuda().transpose(1, 2)
    assert not t.is_contiguous()
    _check(x, causal, sq, 64, sri_gpu=t)
    # Size-1 dims with arbitrary strides (contiguous to torch).
    one = x[:1, :1, :1].cuda()
    one = one.as_strided(one.shape, (999, 999, 999, 999 if n == 1 else 1))
    _check(x[:1, :1, :1], causal, sq, 64, sri_gpu=one)
    # Empty inputs: no launch, empty output of the right shape.
    for shape, nt in (((0, Hm, sk, n), 2), ((B, Hm, 0, n), 0), ((B, 0, sk, n), 2)):
        e = torch.zeros(shape, dtype=torch.int32, device="cuda")
        out = block_minmax_cute(e, causal, sq, 128)
        assert out.shape == (shape[0], shape[1], nt, n, 2) and out.dtype == torch.int32


@pytest.mark.gpu
@requires_cuda
def test_cute_no_recompile_side_stream_and_dispatch():
    from fm4.cute_kernels import tile_minmax

    causal, n, tile_n = False, 4, 128
    _check(_bounds(1, 2, 100, 300, n, causal, 1), causal, 100, tile_n)
    size = len(tile_minmax._compile_cache)
    for B, Hm, sk, sq in ((3, 1, 8192 + 5, 8000), (1, 4, 129, 5)):  # new shapes and Sq
        _check(_bounds(B, Hm, sq, sk, n, causal, sk), causal, sq, tile_n)
    assert len(tile_minmax._compile_cache) == size  # B, Hm, Sk, Sq are runtime values
    # The launch goes to the current stream.
    x = _bounds(4, 8, 4000, 8192 + 5, n, causal, 3)
    xg = x.cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = tile_minmax.block_minmax_cute(xg, causal, 4000, tile_n)
    s.synchronize()
    assert torch.equal(got.cpu(), block_minmax_torch(x, causal, 4000, tile_n))
    # `block_minmax` picks the kernel on CUDA; the tile flags agree with the torch path.
    assert torch.equal(block_minmax(xg, causal, 4000, tile_n).cpu(), got.cpu())
    a = classify_tiles(xg, causal, 4000, 8192 + 5, 128, tile_n, impl="cute").cpu()
    b = classify_tiles(x, causal, 4000, 8192 + 5, 128, tile_n, impl="torch")
    assert torch.equal(a, b)
