# ruff: noqa
# Needs probe_tile_times_rotate.patch applied, with rec[7] = the low word of cute.arch.globaltimer() instead of n_total.
"""Heads in flight in real time (globaltimer), dynamic vs static claim, full 8K."""

import math
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
    for _ in range(2):
        lse.zero_()
        fn(*args, *persistent_args(D, False, 0, torch.device("cuda"), True))
        torch.cuda.synchronize()
    nt = 64 * H * B
    rec = lse.view(-1).view(torch.int32)[: nt * 8].view(nt, 8).cpu().to(torch.int64)
    g = rec[:, 7] & 0xFFFFFFFF
    g0 = int(g.min())
    start = [(int(x) - g0) % (1 << 32) for x in g.tolist()]  # ns, wraps handled for < 4 s
    prev = rec[:, 2].tolist()
    nxt = {p: t for t, p in enumerate(prev) if p >= 0}
    end = {t: start[nxt[t]] for t in range(nt) if t in nxt}
    T = max(start)
    heads = []
    spread = []
    for i in range(1, 40):
        tm = T * i / 40
        act = [t for t in end if start[t] <= tm < end[t]]
        hs = {(int(rec[t, 6]), int(rec[t, 5])) for t in act}
        heads.append(len(hs))
        spread.append(max(act) - min(act) if act else 0)
    per_sm = {}
    for t in range(nt):
        per_sm[int(rec[t, 3])] = per_sm.get(int(rec[t, 3]), 0) + 1
    print(
        f"{name}: run {T / 1e6:.2f} ms; heads in flight over time: mean {sum(heads) / len(heads):.2f}, max {max(heads)}; tile-index spread: mean {sum(spread) / len(spread):.0f}, max {max(spread)}"
    )
    print("  heads in flight at 5% .. 95%:", heads[1::4], " spread:", spread[1::4])
    print(f"  tiles per SM: min {min(per_sm.values())}, max {max(per_sm.values())}")
