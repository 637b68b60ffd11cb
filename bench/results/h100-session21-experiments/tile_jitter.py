# ruff: noqa
# Needs probe_tile_times_rotate.patch applied: python tile_jitter.py full@8192[,causal@8192] ['{"claim": "static"}']
"""Per-tile SM cycles of the persistent forward (probe_tile_times) and what pairing adjacent
m_blocks (2j, 2j+1) of a head would cost if each pair moved at its slower tile's pace."""

import json, math, sys, statistics as st
import torch
from bench.fwd_perf import compile_variant, kernel_mask_args
from bench.peers import make_inputs
from bench.suite import Case
from fm4.cute_kernels.fwd_launch import persistent_args

D = 128
knobs = {
    "persistent": True,
    "probe_tile_times": True,
    **(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}),
}
for spec in sys.argv[1].split(","):
    mask, S = spec.split("@")
    S = int(S)
    B, H = max(1, 16 * 8192 // S), 32
    inp = make_inputs(Case(mask, S, B, H, H, D), torch.device("cuda"))
    m = inp.mask
    causal = bool(m.causal)
    nb = 0 if m.startend_row_indices is None else m.startend_row_indices.shape[-1]
    fn = compile_variant(D, causal, nb, None, **knobs)
    out = torch.empty_like(inp.q)
    lse = torch.zeros(B, H, S, dtype=torch.float32, device="cuda")
    args = (inp.q, inp.k, inp.v, out, lse, 1 / math.sqrt(D), *kernel_mask_args(m, D))
    for rep in range(3):
        lse.zero_()
        fn(*args, *persistent_args(D, causal, nb, torch.device("cuda"), True))
        torch.cuda.synchronize()
    mb = (S + 127) // 128
    ntiles = mb * H * B
    rec = lse.view(-1).view(torch.int32)[: ntiles * 8].view(ntiles, 8).cpu().to(torch.int64)
    ts = (rec[:, 0] & 0xFFFFFFFF) | (rec[:, 1] << 32)
    dur = {}
    for t in range(ntiles):
        p = int(rec[t, 2])
        if p >= 0 and int(rec[t, 3]) == int(rec[p, 3]):
            dur[p] = int(ts[t] - ts[p])
    key = {t: (int(rec[t, 6]), int(rec[t, 5]), int(rec[t, 4])) for t in range(ntiles)}
    by = {key[t]: d for t, d in dur.items()}
    ds = list(dur.values())
    mean = st.mean(ds)
    print(
        f"{spec}: {len(ds)} tile durations of {ntiles}; mean {mean / 1e3:.1f} kcyc, cv {st.pstdev(ds) / mean:.3f}"
    )
    # pairs (2j, 2j+1) of one (batch, head)
    pen, num, den, rel = [], 0.0, 0.0, []
    for (b, h, mbk), d0 in by.items():
        if mbk % 2 == 0 and (b, h, mbk + 1) in by:
            d1 = by[(b, h, mbk + 1)]
            num += max(d0, d1)
            den += (d0 + d1) / 2
            rel.append(abs(d0 - d1) / ((d0 + d1) / 2))
    print(
        f"  pairs {len(rel)}: sum max / sum mean = {num / den:.4f}; mean |d0-d1|/mean {st.mean(rel):.4f}"
    )
    # the same with randomly paired tiles of equal work (n_total), as a contrast
    import random

    random.seed(0)
    groups = {}
    for t, d in dur.items():
        groups.setdefault(int(rec[t, 7]), []).append(d)
    num = den = 0.0
    for g in groups.values():
        random.shuffle(g)
        for a, c in zip(g[0::2], g[1::2]):
            num += max(a, c)
            den += (a + c) / 2
    print(f"  random equal-work pairs: sum max / sum mean = {num / den:.4f}")
    del inp
    torch.cuda.empty_cache()
