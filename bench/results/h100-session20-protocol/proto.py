# ruff: noqa
"""Session 20: per-iteration times of the bench protocol (time_direction fwd, grad mode) with and
without warm-up by time, plus the host enqueue rate per call (grad / no_grad)."""

import json, subprocess, sys, time
import torch
from bench.suite import Case
from bench.peers import make_inputs, make_impls
from bench.runner import time_direction

dev = torch.device("cuda")
masks = sys.argv[1].split(",")
impls = {i.name: i for i in make_impls(["fm4", "fa4_mask_mod"], dev)}
smi = subprocess.Popen(
    [
        "nvidia-smi",
        "--query-gpu=timestamp,power.draw,clocks.sm,temperature.gpu",
        "--format=csv,noheader,nounits",
        "-lms",
        "50",
    ],
    stdout=subprocess.PIPE,
    text=True,
)
log = []
for mask in masks:
    inp = make_inputs(Case(mask, 8192, 16, 32, 32, 128), dev)
    fns = {n: impls[n].prepare(inp) for n in ["fm4", "fa4_mask_mod"]}
    for n, fn in fns.items():
        fn()
        fn()
        torch.cuda.synchronize()
        # host enqueue time per call, queue kept busy by a long first call
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                torch.cuda._sleep(int(2e9))  # ~1 s of GPU spin so the CPU runs ahead
                t0 = time.perf_counter()
                for _ in range(30):
                    fn()
                t1 = time.perf_counter()
                torch.cuda.synchronize()
            print(
                f"{mask} {n} grad={grad} host enqueue {1e3 * (t1 - t0) / 30:.3f} ms/call",
                flush=True,
            )
    for wms in (100.0, 0.0):
        for rnd in range(3):
            order = ["fm4", "fa4_mask_mod"] if rnd % 2 == 0 else ["fa4_mask_mod", "fm4"]
            for n in order:
                t = time_direction(fns[n], inp, "fwd", target_ms=100.0, warmup_ms=wms)
                ts = t.times_ms
                print(
                    f"{mask} {n:13s} warmup_ms={wms:5.0f} r{rnd} med {t.median_ms:.3f} "
                    + " ".join(f"{x:.2f}" for x in ts),
                    flush=True,
                )
                log.append(dict(mask=mask, impl=n, warmup_ms=wms, rnd=rnd, times=ts, t=time.time()))
smi.terminate()
lines = smi.communicate()[0].strip().splitlines()
json.dump(dict(log=log, smi=lines), open(sys.argv[2], "w"))
