# ruff: noqa
"""Session 17: power / clock / energy per call of fm4 kernel variants (nvidia-smi every 20 ms).
python scratch/power_ab.py MASKS 'name=json;name=json' [secs]"""

import json, sys
import torch
from bench.suite import Case
from bench.peers import make_inputs
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90
from power_loop import measure, report

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


for rnd in range(int(sys.argv[4]) if len(sys.argv) > 4 else 2):
    order = runs if rnd % 2 == 0 else runs[::-1]
    for mask, name, fn in order:
        report(rnd, mask, name, *measure(fn, SECS))
