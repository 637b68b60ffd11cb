# ruff: noqa
"""Session 20: per-iteration CUDA-event times and nvidia-smi clock / power (20 ms) through a
sustained loop of one kernel, after an idle gap. fm4 vs FA4 on the same cases.
python scratch/sustain.py OUT.json [secs] [idle] [rounds]"""

import json, subprocess, sys, time
import torch
from bench.suite import Case
from bench.peers import make_inputs, make_impls

out_path = sys.argv[1]
SECS = float(sys.argv[2]) if len(sys.argv) > 2 else 2.5
IDLE = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 2
dev = torch.device("cuda")
plan = [
    ("full", ["fm4", "fa4_dense"]),
    ("causal", ["fm4", "fa4_mask_mod", "fa4_dense"]),
    ("sliding_window", ["fm4", "fa4_mask_mod"]),
    ("document", ["fm4", "fa4_mask_mod"]),
    ("share_question", ["fm4", "fa4_mask_mod"]),
]
impls = {i.name: i for i in make_impls(["fm4", "fa4_mask_mod", "fa4_dense"], dev)}
runs = []
for mask, names in plan:
    inp = make_inputs(Case(mask, 8192, 16, 32, 32, 128), dev)
    for n in names:
        fn = impls[n].prepare(inp)
        with torch.no_grad():
            fn()
            fn()
        torch.cuda.synchronize()
        runs.append((mask, n, fn, inp))
print("prepared", len(runs), flush=True)


def trace(fn):
    torch.cuda.synchronize()
    time.sleep(IDLE)
    smi = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=timestamp,power.draw,clocks.sm,temperature.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.25)
    t0 = time.time()
    evs = []
    with torch.no_grad():
        while time.time() - t0 < SECS:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            evs.append((s, e))
            if len(evs) % 4 == 0:
                evs[-4][1].synchronize()  # keep the queue short (<= ~4 calls ahead)
    torch.cuda.synchronize()
    t1 = time.time()
    time.sleep(0.1)
    smi.terminate()
    lines = smi.communicate()[0].strip().splitlines()
    times = [a.elapsed_time(b) for a, b in evs]
    gaps = [evs[i][1].elapsed_time(evs[i + 1][0]) for i in range(len(evs) - 1)]
    smp = []
    for l in lines:
        p = [x.strip() for x in l.split(",")]
        if len(p) == 4:
            try:
                smp.append([p[0], float(p[1]), float(p[2]), float(p[3])])
            except ValueError:
                pass
    return dict(times=times, gaps=gaps, smi=smp, t0=t0, t1=t1)


res = []
for rnd in range(ROUNDS):
    order = runs if rnd % 2 == 0 else runs[::-1]
    for mask, n, fn, inp in order:
        r = trace(fn)
        r.update(mask=mask, impl=n, round=rnd)
        res.append(r)
        t = r["times"]
        med = lambda x: sorted(x)[len(x) // 2] if x else float("nan")
        cl = [s[2] for s in r["smi"]]
        print(
            f"r{rnd} {mask:15s} {n:13s} n={len(t):4d} first4 {med(t[:4]):7.3f} 4-16 {med(t[4:16]):7.3f} "
            f"2nd-half {med(t[len(t) // 2 :]):7.3f} ms | clk first {med(cl[:10]):5.0f} last {med(cl[len(cl) // 2 :]):5.0f} "
            f"W {med([s[1] for s in r['smi'][len(cl) // 2 :]]):5.0f} gaps {med(r['gaps']):.3f}",
            flush=True,
        )
json.dump(res, open(out_path, "w"))
