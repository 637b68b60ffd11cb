# ruff: noqa
# Needs probe_tile_times_rotate.patch applied.
"""Heads in flight over time, dynamic vs static claim (probe_tile_times)."""

import json, math, sys
import torch
from bench.fwd_perf import compile_variant, kernel_mask_args
from bench.peers import make_inputs
from bench.suite import Case
from fm4.cute_kernels.fwd_launch import persistent_args

D = 128
S = 8192
B, H = 16, 32
inp = make_inputs(Case("full", S, B, H, H, D), torch.device("cuda"))
m = inp.mask
for name, extra in (("dynamic", {}), ("static", {"claim": "static"})):
    fn = compile_variant(D, False, 0, None, persistent=True, probe_tile_times=True, **extra)
    out = torch.empty_like(inp.q)
    lse = torch.zeros(B, H, S, dtype=torch.float32, device="cuda")
    args = (inp.q, inp.k, inp.v, out, lse, 1 / math.sqrt(D), *kernel_mask_args(m, D))
    for _ in range(3):
        lse.zero_()
        fn(*args, *persistent_args(D, False, 0, torch.device("cuda"), True))
        torch.cuda.synchronize()
    nt = 64 * H * B
    rec = lse.view(-1).view(torch.int32)[: nt * 8].view(nt, 8).cpu().to(torch.int64)
    # per SM: clock64 differs between SMs; use per-CTA sequence position instead of time:
    # position k of a tile in its CTA's sequence ~ time (tile times are uniform to 0.1%).
    prev = rec[:, 2].tolist()
    sm = rec[:, 3].tolist()
    nxt = {p: t for t, p in enumerate(prev) if p >= 0}
    firsts = [t for t in range(nt) if prev[t] < 0]
    pos = {}
    for f in firsts:
        k, t = 0, f
        while True:
            pos[t] = k
            k += 1
            if t not in nxt:
                break
            t = nxt[t]
    steps = {}
    for t, k in pos.items():
        steps.setdefault(k, []).append(t)
    heads_per_step = [
        len({(int(rec[t, 6]), int(rec[t, 5])) for t in ts}) for k, ts in sorted(steps.items())
    ]
    spread = [max(ts) - min(ts) for k, ts in sorted(steps.items())]
    mb_same = []
    print(
        f"{name}: CTAs {len(firsts)}, steps {len(steps)}; distinct heads per step: mean {sum(heads_per_step) / len(heads_per_step):.2f}, max {max(heads_per_step)}; tile-index spread per step: mean {sum(spread) / len(spread):.0f}, max {max(spread)}"
    )
    print("  first steps' heads:", heads_per_step[:12], " spreads:", spread[:12])
    # how many CTAs run the same m_block's neighbours... and the smid of each CTA's first tile
    print("  first 16 tiles -> sm:", [sm[t] for t in range(16)])
