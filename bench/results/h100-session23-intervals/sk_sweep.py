# ruff: noqa
"""Session 23: per-tile vs per-block cost, fm4 vs FA4 dense: Sq = 8K, Sk = 128 .. 8K, full."""

import sys, torch
from bench.timing import time_cuda
import fm4
from flash_attn.cute import flash_attn_func

B, H, D, S = 16, 32, 128, 8192
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
rows = []
for sk in [int(x) for x in sys.argv[1].split(",")]:
    k = torch.randn(B, sk, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(B, sk, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    fns = {
        "fm4": lambda: fm4.attention(q, k, v, None),
        "fa4": lambda: flash_attn_func(q, k, v, causal=False),
    }
    for f in fns.values():
        f()
    torch.cuda.synchronize()
    res = {n: [] for n in fns}
    for r in range(2):
        for n in fns if r == 0 else list(fns)[::-1]:
            res[n].append(time_cuda(fns[n], warmup_ms=800, target_ms=800, max_reps=5000).median_ms)
    line = f"Sk={sk:6d} " + " ".join(
        f"{n} {min(t):8.4f} ({max(t) / min(t):.3f})" for n, t in res.items()
    )
    line += f"  fm4/fa4 {min(res['fm4']) / min(res['fa4']):.4f}"
    print(line, flush=True)
