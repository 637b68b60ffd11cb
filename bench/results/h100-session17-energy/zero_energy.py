# ruff: noqa
"""Session 17: does operand data change the power-limited forward's time? (zeroed q / k / v)"""

import subprocess, sys, time
import torch
from bench.suite import Case
from bench.peers import make_inputs
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

SECS = 2.0
dev = torch.device("cuda")
runs = []
for mask in sys.argv[1].split(","):
    inp = make_inputs(Case(mask, 8192, 16, 32, 32, 128), dev)
    m = inp.mask
    sri = m.startend_row_indices
    q, k, v = (t.detach().clone() for t in (inp.q, inp.k, inp.v))
    khalf = k.clone()
    kv = khalf.view(k.shape[0], -1, 128, *k.shape[2:])
    kv[:, :, 64:] = 0  # rows 64..127 of every 128-key block
    variants = {
        "rand": (q, k, v),
        "v0": (q, k, torch.zeros_like(v)),
        "k_half0": (q, khalf, v),
        "q0": (torch.zeros_like(q), k, v),
        "q_const": (torch.full_like(q, 0.5), k, v),
    }
    for name, (a, b, c) in variants.items():
        runs.append(
            (
                mask,
                name,
                lambda a=a, b=b, c=c, s=sri, cz=bool(m.causal): attention_fwd_sm90(a, b, c, s, cz),
            )
        )


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


for rnd in range(2):
    order = runs if rnd == 0 else runs[::-1]
    for mask, name, fn in order:
        ms, p, c, t = measure(fn)
        print(
            f"round {rnd} {mask:16s} {name:10s} {ms:8.3f} ms  {p:6.1f} W  {c:6.0f} MHz  {t:4.0f} C  {p * ms:8.1f} mJ  {c * ms / 1e3:8.2f} Mcyc",
            flush=True,
        )
