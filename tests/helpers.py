"""Test helpers: dense masks written element by element from MASKS.md's table, random bounds,
skip markers, and compiling in a fresh process for a given arch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

needs_cutlass = pytest.mark.skipif(
    importlib.util.find_spec("cutlass") is None, reason="needs nvidia-cutlass-dsl (CuTe DSL)"
)
needs_sm90 = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9),
    reason="needs an sm_90 (Hopper) GPU",
)


def dense_from_bounds_loops(sri: torch.Tensor | None, causal: bool, sq: int, sk: int):
    """bool [B, Hm, Sq, Sk], True = visible, by plain Python loops over the definition."""
    B, H = (1, 1) if sri is None else sri.shape[:2]
    out = torch.ones(B, H, sq, sk, dtype=torch.bool)
    b_list = None if sri is None else sri.tolist()
    for b in range(B):
        for h in range(H):
            for j in range(sk):
                c = None if b_list is None else [min(x, sq) for x in b_list[b][h][j]]
                for i in range(sq):
                    m = causal and j > i + (sk - sq)
                    if c is not None:
                        if len(c) == 1:
                            m = m or i >= c[0]
                        elif len(c) == 2 and causal:
                            m = m or c[0] <= i < c[1]
                        elif len(c) == 2:
                            m = m or i >= c[0] or i < c[1]
                        else:
                            m = m or (c[0] <= i < c[1]) or (c[2] <= i < c[3])
                    out[b, h, i, j] = not m
    return out


def random_bounds(B: int, H: int, sq: int, sk: int, n: int, gen: torch.Generator, causal: bool):
    """Random bounds with a mix of structure: values in [0, sq + 3], many empty intervals."""
    hi = sq + 4
    x = torch.randint(0, hi, (B, H, sk, n), generator=gen, dtype=torch.int32)
    # Make about half of the intervals ordered (non-empty) so tiles of every kind appear.
    if n >= 2 and (n == 4 or causal):
        for s, e in ((0, 1), (2, 3))[: n // 2]:
            lo = torch.minimum(x[..., s], x[..., e])
            up = torch.maximum(x[..., s], x[..., e])
            flip = torch.rand(x.shape[:-1], generator=gen) < 0.7
            x[..., s] = torch.where(flip, lo, x[..., s])
            x[..., e] = torch.where(flip, up, x[..., e])
    # Smooth runs of columns so that tiles can be fully masked or unmasked.
    if sk > 1:
        run = torch.randint(1, 40, (1,), generator=gen).item()
        idx = (torch.arange(sk) // run) * run
        x = x[:, :, idx]
    return x.contiguous()


MODES = [(True, 1), (True, 2), (False, 2), (False, 4)]


def compile_in_subprocess(script: str, args: list[str], *, arch: str, dump_dir) -> str:
    """Run a compile script in a fresh process targeting ``arch`` without a GPU; its stdout.

    ``CUTE_DSL_ARCH`` is read once, when cutlass is imported, so a new process is the way to pick
    the target in tests; PTX is kept under ``dump_dir`` (``CUTE_DSL_KEEP=ptx``).
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env.update(
        CUTE_DSL_ARCH=arch,
        CUTE_DSL_KEEP="ptx",
        CUTE_DSL_DUMP_DIR=str(dump_dir),
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")])),
    )
    res = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=dump_dir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout
