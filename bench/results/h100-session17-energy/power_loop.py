# ruff: noqa
"""Session 17: the power / clock / energy loop shared by ``power_ab.py`` and ``zero_energy.py``
(nvidia-smi sampled every 20 ms while ``fn`` runs for ``secs``; the first fifth of the
samples, the ramp, dropped)."""

import subprocess, time
import torch


def measure(fn, secs):
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
    while time.time() - t0 < secs:
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


def report(rnd, mask, name, ms, p, c, t):
    print(
        f"round {rnd} {mask:16s} {name:10s} {ms:8.3f} ms  {p:6.1f} W  {c:6.0f} MHz  {t:4.0f} C  {p * ms:8.1f} mJ  {c * ms / 1e3:8.2f} Mcyc",
        flush=True,
    )
