# ruff: noqa  (a session-16 experiment script, kept as it ran)
"""Session 16: fm4 vs FA4 mask_mod forward, bench's time_cuda vs a loop between two events."""

import statistics, sys, torch
from bench.suite import Case, batch_for
from bench.peers import make_inputs, make_impls
from bench.timing import time_cuda

dev = torch.device("cuda")
for name in sys.argv[1].split(","):
    case = Case(name, 8192, batch_for(8192), 32, 32, 128, 0)
    inp = make_inputs(case, dev)
    fns = {}
    for impl in make_impls(["fm4", "fa4_mask_mod"], dev):
        fn = impl.prepare(inp)
        fn()
        torch.cuda.synchronize()
        fns[impl.name] = fn
    res = {n: {"tc": [], "loop": [], "tc_ng": []} for n in fns}
    for rnd in range(4):
        for n in list(fns) if rnd % 2 == 0 else list(fns)[::-1]:
            f = fns[n]
            res[n]["tc"].append(
                time_cuda(f, warmup=1, min_reps=3, max_reps=20, target_ms=100).median_ms
            )
            with torch.no_grad():
                res[n]["tc_ng"].append(
                    time_cuda(f, warmup=1, min_reps=3, max_reps=20, target_ms=100).median_ms
                )
            for _ in range(3):
                f()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(20):
                f()
            e.record()
            torch.cuda.synchronize()
            res[n]["loop"].append(s.elapsed_time(e) / 20)
    for n in fns:
        print(name, n, {k: round(statistics.median(v), 3) for k, v in res[n].items()}, flush=True)
