"""A small fm4.attention case per mask mode, for compute-sanitizer (memcheck, racecheck).

Run on an sm_90 GPU:  compute-sanitizer --tool memcheck --report-api-errors no \\
    python3 tests/gpu_sanitize_case.py [--bwd]
With ``--bwd`` each case also runs the backward (the CuTe DSL backward kernels). With
``--many-tiles`` the forward gets more tiles than an H100 has SMs (2 x 16 heads x 8 m_blocks),
so each CTA of the persistent forward runs several tiles. ``--fwd-knobs JSON`` runs the forward
kernel alone with those `FlashMaskFwdSm90` options (e.g. ``'{"tile_overlap": true}'``; no
backward), persistent in every mode (the full mask too) unless they say ``"persistent": false``;
``--grid N`` with it caps the persistent grid at N CTAs (many tiles per CTA).
``--head-dim D`` (default 128) picks the head dim, e.g. 256 for the backward whose consumers
split d of dK / dV (Note [dK dV split] in ``bwd_sm90.py``). ``--bwd-knobs JSON`` runs the
backward kernels alone (reference forward) with those `FlashMaskBwdSm90` options, e.g.
``'{"persistent": true}'``; ``--grid N`` with it caps the persistent grid.
"""

from __future__ import annotations

import json
import sys

import torch

import fm4
from tests.helpers import MODES, random_bounds


def main() -> None:
    B, Sq, Sk, H, Hkv, D = 1, 200, 300, 2, 1, 128
    if "--many-tiles" in sys.argv:
        B, Sq, Sk, H, Hkv = 2, 1000, 900, 16, 4
    if "--head-dim" in sys.argv:
        D = int(sys.argv[sys.argv.index("--head-dim") + 1])
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, Sq, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Sk, Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, Sk, Hkv, D, device="cuda", dtype=torch.bfloat16)
    bwd = "--bwd" in sys.argv
    knobs = None
    grid = None
    if "--grid" in sys.argv:
        grid = int(sys.argv[sys.argv.index("--grid") + 1])
    if "--fwd-knobs" in sys.argv:
        knobs = {"persistent": True, **json.loads(sys.argv[sys.argv.index("--fwd-knobs") + 1])}
        if bwd:
            raise SystemExit("--fwd-knobs runs the forward kernel alone: drop --bwd")
    bwd_knobs = None
    if "--bwd-knobs" in sys.argv:
        bwd_knobs = json.loads(sys.argv[sys.argv.index("--bwd-knobs") + 1])
        if bwd or knobs is not None:
            raise SystemExit("--bwd-knobs runs the backward alone: drop --bwd and --fwd-knobs")
    for t in (q, k, v):
        t.requires_grad_(bwd)

    def run(sri, causal):
        if bwd_knobs is not None:
            from fm4.cute_kernels.bwd_launch import attention_bwd_sm90
            from fm4.reference import attention_ref

            out, lse = attention_ref(q, k, v, sri, causal)
            dout = torch.randn_like(out)
            attention_bwd_sm90(
                dout, q, k, v, out, lse, sri, causal, kernel_options=bwd_knobs, max_ctas=grid
            )
            return
        if knobs is not None:
            from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

            attention_fwd_sm90(q, k, v, sri, causal, kernel_options=knobs, max_ctas=grid)
            return
        out = fm4.attention(q, k, v, sri, causal=causal)
        if bwd:
            out.backward(torch.ones_like(out))

    for causal in (False, True):
        run(None, causal)
    for causal, n in MODES:
        run(random_bounds(B, H, Sq, Sk, n, gen, causal).cuda(), causal)
    torch.cuda.synchronize()
    print("sanitize case: done")


if __name__ == "__main__":
    main()
