# ruff: noqa
"""Run one fm4 forward variant N times on MASK at S (for ncu): python scratch/one_variant.py MASK S VARIANT [N]"""

import math
import sys

import torch

from bench.fwd_perf import VARIANTS, compile_variant, kernel_mask_args
from bench.peers import make_inputs
from bench.suite import Case
from fm4.cute_kernels.fwd_launch import persistent_args

mask_name, S, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 3
D, H = 128, 32
B = max(1, 16 * 8192 // S)
dev = torch.device("cuda")
inp = make_inputs(Case(mask_name, S, B, H, H, D), dev)
q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
m = inp.mask
sri = m.startend_row_indices
causal = bool(m.causal)
nb = 0 if sri is None else sri.shape[-1]
args = kernel_mask_args(m, D)
knobs = VARIANTS[variant]
fn = compile_variant(D, causal, nb, None, **knobs)
out = torch.empty_like(q)
lse = torch.empty(B, H, S, dtype=torch.float32, device=dev)
for _ in range(n):
    fn(
        q,
        k,
        v,
        out,
        lse,
        1.0 / math.sqrt(D),
        *args,
        *persistent_args(D, causal, nb, dev, knobs.get("persistent")),
    )
torch.cuda.synchronize()
print("done", mask_name, S, variant, float(out.float().abs().mean()))
