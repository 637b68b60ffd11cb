# ruff: noqa
"""Session 17: does operand data change the power-limited forward's time? (zeroed q / k / v)"""

import sys
import torch
from bench.suite import Case
from bench.peers import make_inputs
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90
from power_loop import measure, report

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


for rnd in range(2):
    order = runs if rnd == 0 else runs[::-1]
    for mask, name, fn in order:
        report(rnd, mask, name, *measure(fn, SECS))
