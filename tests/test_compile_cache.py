"""The opt-in on-disk compile cache (Note [Disk cache] in fm4/cute_kernels/compile_utils.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers import needs_sm90

pytest.importorskip("cutlass", reason="needs nvidia-cutlass-dsl (CuTe DSL)")

_CPU_SCRIPT = textwrap.dedent(
    """
    from fm4.cute_kernels import compile_utils
    from fm4.cute_kernels.tile_minmax import compile_block_minmax
    fn = compile_utils.get_or_compile(
        {}, (2, True, 128, "sm_90a"), lambda: compile_block_minmax(2, True, 128, arch="sm_90a"),
        name="block_minmax",
    )
    assert callable(fn)
    print("compiles", compile_utils.compile_count)
    """
)


def _run(script: str, cache_dir, **env_extra) -> str:
    env = dict(os.environ, FM4_CACHE_DIR=str(cache_dir), **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_disk_cache_round_trip_cpu(tmp_path):
    assert "compiles 1" in _run(_CPU_SCRIPT, tmp_path)
    files = list(tmp_path.rglob("block_minmax-*.o"))
    assert len(files) == 1
    assert "compiles 0" in _run(_CPU_SCRIPT, tmp_path)  # a fresh process loads, no compile


def test_corrupt_cache_file_is_recompiled(tmp_path):
    _run(_CPU_SCRIPT, tmp_path)
    (obj,) = tmp_path.rglob("block_minmax-*.o")
    obj.write_bytes(b"not an object file")
    assert "compiles 1" in _run(_CPU_SCRIPT, tmp_path)


_GPU_SCRIPT = textwrap.dedent(
    """
    import torch, fm4
    from fm4.cute_kernels import compile_utils
    from fm4.masks import make_mask
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 300, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    m = make_mask("document", 300, batch=2, device="cuda")
    out = fm4.attention(q, k, v, m)
    torch.save(out.cpu(), OUT)
    print("compiles", compile_utils.compile_count)
    """
)


@pytest.mark.gpu
@needs_sm90
def test_disk_cache_attention_gpu(tmp_path):
    first = _run(_GPU_SCRIPT.replace("OUT", repr(str(tmp_path / "a.pt"))), tmp_path / "c")
    second = _run(_GPU_SCRIPT.replace("OUT", repr(str(tmp_path / "b.pt"))), tmp_path / "c")
    assert "compiles 3" in first  # min/max, tile lists, forward
    assert "compiles 0" in second
    assert torch.equal(torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt"))
