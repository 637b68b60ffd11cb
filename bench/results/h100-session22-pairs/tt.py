# ruff: noqa
"""Session 22: per-SM tile times (probe_tile_times) of default / pair variants on one case."""

import math, sys, statistics as st
import torch
from bench.fwd_perf import compile_variant, kernel_mask_args, VARIANTS
from bench.peers import make_inputs
from bench.suite import Case
from fm4.cute_kernels.fwd_launch import persistent_args

D = 128
spec = sys.argv[1]
mask, S = spec.split("@")
S = int(S)
B, H = max(1, 16 * 8192 // S), 32
inp = make_inputs(Case(mask, S, B, H, H, D), torch.device("cuda"))
m = inp.mask
causal = bool(m.causal)
nb = 0 if m.startend_row_indices is None else m.startend_row_indices.shape[-1]
mb = (S + 127) // 128
for var in sys.argv[2].split(","):
    knobs = VARIANTS[var]
    fn = compile_variant(D, causal, nb, None, **knobs)
    out = torch.empty_like(inp.q)
    lse = torch.zeros(B, H, S, dtype=torch.float32, device="cuda")
    args = (inp.q, inp.k, inp.v, out, lse, 1 / math.sqrt(D), *kernel_mask_args(m, D))
    nrec = mb * H * B if "kv_pair" not in knobs else 2 * ((mb + 1) // 2) * H * B
    for rep in range(4):
        lse.zero_()
        fn(*args, *persistent_args(D, causal, nb, torch.device("cuda"), True))
        torch.cuda.synchronize()
    rec = lse.view(-1).view(torch.int32)[: nrec * 8].view(nrec, 8).cpu().to(torch.int64)
    clk = (rec[:, 0] & 0xFFFFFFFF) | (rec[:, 1] << 32)
    gt = rec[:, 7] & 0xFFFFFFFF
    sm = rec[:, 2]
    per = {}
    for i in range(nrec):
        if rec[i, 6] <= 0 and rec[i, 0] == 0:
            continue
        per.setdefault(int(sm[i]), []).append((int(clk[i]), int(gt[i])))
    stats = {}
    for s_, lst in per.items():
        lst.sort()
        dc = [b[0] - a[0] for a, b in zip(lst, lst[1:])]
        dg = [(b[1] - a[1]) % (1 << 32) for a, b in zip(lst, lst[1:])]
        stats[s_] = (len(lst), st.mean(dc), st.mean(dg), st.median(dg))
    counts = [v[0] for v in stats.values()]
    ns = [v[2] for v in stats.values()]
    print(
        f"== {var} {spec}: SMs {len(stats)}, tiles per SM {min(counts)}-{max(counts)}, "
        f"mean tile ns per SM {min(ns):.0f}-{max(ns):.0f} (mean {st.mean(ns):.0f}), "
        f"cycles/ns {st.mean(v[1] for v in stats.values()) / st.mean(ns):.3f}"
    )
    diffs = [
        (stats[2 * k][2] - stats[2 * k + 1][2]) / st.mean(ns)
        for k in range(66)
        if 2 * k in stats and 2 * k + 1 in stats
    ]
    print(
        f"   TPC siblings (even - odd) / mean: mean {st.mean(diffs):+.4f}, sd {st.pstdev(diffs):.4f}, "
        f"mean |d| {st.mean(abs(d) for d in diffs):.4f}"
    )
    rank = sorted(stats, key=lambda s_: stats[s_][2])
    print(
        "   fastest SMs:",
        [(s_, round(stats[s_][2])) for s_ in rank[:6]],
        "slowest:",
        [(s_, round(stats[s_][2])) for s_ in rank[-6:]],
    )
    print("   per SM ns:", " ".join(f"{s_}:{stats[s_][2]:.0f}" for s_ in sorted(stats)))
