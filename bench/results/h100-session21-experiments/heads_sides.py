# ruff: noqa
# Needs probe_tile_times_rotate.patch applied.
"""For candidate SM -> L2-partition maps, how mixed is each head's set of SMs per step, static
vs dynamic claim (probe_tile_times)."""

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
maps = {
    "smid<66": lambda s: s < 66,
    "smid%2": lambda s: s % 2 == 0,
    "(smid//2)%2": lambda s: (s // 2) % 2 == 0,
    "(smid//8)%2": lambda s: (s // 8) % 2 == 0,
    "(smid//16)%2": lambda s: (s // 16) % 2 == 0,
    "(smid//16)<4": lambda s: (s // 16) < 4,
    "(smid//18)%2": lambda s: (s // 18) % 2 == 0,
}
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
    rec = lse.view(-1).view(torch.int32)[: nt * 8].view(nt, 8).cpu().tolist()
    prev = [r[2] for r in rec]
    sm = [r[3] for r in rec]
    nxt = {p: t for t, p in enumerate(prev) if p >= 0}
    pos = {}
    for f in [t for t in range(nt) if prev[t] < 0]:
        k, t = 0, f
        while True:
            pos[t] = k
            k += 1
            if t not in nxt:
                break
            t = nxt[t]
    groups = {}
    for t, k in pos.items():
        groups.setdefault((k, rec[t][6], rec[t][5]), []).append(sm[t])
    print(f"{name}: SMs seen {len(set(sm))}")
    for mname, f in maps.items():
        mix = []
        w = []
        for key, sms in groups.items():
            a = sum(1 for s in sms if f(s))
            n = len(sms)
            mix.append(min(a, n - a) / n)
            w.append(n)
        wm = sum(x * y for x, y in zip(mix, w)) / sum(w)
        print(f"  {mname:14s} weighted minority share per (step, head): {wm:.3f}")
    # per-SM: how many distinct heads an SM touches over consecutive steps, and sequence sample
    seq = {}
    for t, k in sorted(pos.items(), key=lambda x: x[1]):
        seq.setdefault(sm[t], []).append((rec[t][6], rec[t][5], rec[t][4]))
    s0 = sorted(seq)[:3]
    for s in s0:
        print(f"  sm {s}: first tiles (b, h, m): {seq[s][:6]}")
