# ruff: noqa
"""Session 17: power / clock / energy per call of fm4 kernel variants (nvidia-smi every 20 ms).
python scratch/power_ab.py MASKS 'name=json;name=json' [secs]"""

import json, subprocess, sys, time
import torch
from bench.suite import Case
from bench.peers import make_inputs
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
variants = [(kv.split("=", 1)[0], json.loads(kv.split("=", 1)[1])) for kv in sys.argv[2].split(";")]
dev = torch.device("cuda")
runs = []
for mask in sys.argv[1].split(","):
    inp = make_inputs(Case(mask, 8192, 16, 32, 32, 128), dev)
    m = inp.mask
    sri = m.startend_row_indices
    q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
    ref = None
    for name, opts in variants:
        fn = lambda q=q, k=k, v=v, s=sri, c=bool(m.causal), o=opts: attention_fwd_sm90(
            q, k, v, s, c, kernel_options=o or None
        )
        o, lse = fn()
        if ref is None:
            ref = (o, lse)
        else:
            print(
                mask,
                name,
                "bitwise equal to",
                variants[0][0],
                bool(torch.equal(o, ref[0]) and torch.equal(lse, ref[1])),
                "max abs diff",
                float((o.float() - ref[0].float()).abs().max()),
                flush=True,
            )
        runs.append((mask, name, fn))


def measure(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
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
    time.sleep(0.3)
    t0 = time.time()
    n = 0
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    while time.time() - t0 < SECS:
        for _ in range(5):
            fn()
        n += 5
        torch.cuda.synchronize()
    e1.record()
    torch.cuda.synchronize()
    ms = e0.elapsed_time(e1) / n
    smi.terminate()
    out = smi.communicate()[0].strip().splitlines()
    vals = [[float(x) for x in l.split(",")[1:]] for l in out if l.count(",") == 3]
    vals = vals[len(vals) // 5 :]
    p = sum(v[0] for v in vals) / len(vals)
    c = sum(v[1] for v in vals) / len(vals)
    t = sum(v[2] for v in vals) / len(vals)
    return ms, p, c, t


for rnd in range(int(sys.argv[4]) if len(sys.argv) > 4 else 2):
    order = runs if rnd % 2 == 0 else runs[::-1]
    for mask, name, fn in order:
        ms, p, c, t = measure(fn)
        print(
            f"round {rnd} {mask:16s} {name:10s} {ms:8.3f} ms  {p:6.1f} W  {c:6.0f} MHz  {t:4.0f} C  {p * ms:8.1f} mJ  {c * ms / 1e3:8.2f} Mcyc",
            flush=True,
        )
