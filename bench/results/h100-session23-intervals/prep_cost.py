# ruff: noqa
"""Session 23: how much of fm4's 8K forward call is outside the main kernel (prep kernels,
counter fill, launch gaps). A: fm4.attention (lists built per call). B: the kernel with lists
prebuilt (no prep kernels). Sustained protocol. Then a profiler timeline of A."""

import sys, json, torch
from bench.suite import Case, batch_for
from bench.peers import make_inputs
from bench.timing import time_cuda
import fm4
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90, tile_shape
from fm4.masks.tiles import build_tile_lists

masks = sys.argv[1].split(",")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
dev = torch.device("cuda")
res = {}
for m in masks:
    S = 8192
    case = Case(m, S, batch_for(S), 32, 32, 128, 0)
    inp = make_inputs(case, dev)
    q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
    sri, causal = inp.mask.startend_row_indices, inp.mask.causal
    tm, tn = tile_shape(128)
    lists = build_tile_lists(sri, causal, S, S, tm, tn, backward=False)
    A = lambda: fm4.attention(q, k, v, inp.mask)
    B = lambda: attention_fwd_sm90(q, k, v, sri, causal, tile_lists=lists)
    A()
    B()
    torch.cuda.synchronize()
    ta, tb = [], []
    for r in range(rounds):
        for name, fn, acc in (
            (("A", A, ta), ("B", B, tb)) if r % 2 == 0 else (("B", B, tb), ("A", A, ta))
        ):
            t = time_cuda(fn, warmup_ms=1000, target_ms=1000, max_reps=5000)
            acc.append(t.median_ms)
    # profiler timeline of A: 20 calls queued
    from torch.profiler import profile, ProfilerActivity

    for _ in range(30):
        A()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            A()
        torch.cuda.synchronize()
    evs = sorted(
        [
            (e.time_range.start, e.time_range.end, e.name)
            for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA
        ],
        key=lambda x: x[0],
    )
    per = {}
    for s, e, n in evs:
        key = n[:60]
        per.setdefault(key, []).append(e - s)
    span = (evs[-1][1] - evs[0][0]) / 20
    busy = sum(e - s for s, e, _ in evs) / 20
    med = lambda xs: sorted(xs)[len(xs) // 2]
    res[m] = dict(
        A=ta,
        B=tb,
        ratio=med(tb) / med(ta),
        span_us=span,
        busy_us=busy,
        kernels={k_: (med(v_), len(v_) // 20) for k_, v_ in per.items()},
    )
    print(
        m,
        "A",
        [round(x, 4) for x in ta],
        "B",
        [round(x, 4) for x in tb],
        "B/A %.4f" % (med(tb) / med(ta)),
        "span %.1f us busy %.1f us" % (span, busy),
        flush=True,
    )
    for k_, (d, c) in res[m]["kernels"].items():
        print("    %9.1f us x%d  %s" % (d, c, k_), flush=True)
json.dump(res, open(sys.argv[3] if len(sys.argv) > 3 else "/tmp/prep.json", "w"), indent=1)
