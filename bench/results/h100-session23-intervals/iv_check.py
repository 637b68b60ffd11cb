# ruff: noqa
"""Session 23: rest_mask="interval" against the default (bits), bitwise, many shapes / modes."""

import sys, time, torch
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90
from fm4.testing import check_attention
from tests.helpers import random_bounds
from fm4.masks.registry import make_mask, mask_names

import os

IV = {"rest_mask": os.environ.get("IVMODE", "interval")}
t0 = time.time()
bad = 0
total = 0


def cmp(tag, q, k, v, sri, causal, ref=False):
    global bad, total
    o1, l1 = attention_fwd_sm90(q, k, v, sri, causal)
    o2, l2 = attention_fwd_sm90(q, k, v, sri, causal, kernel_options=IV)
    eq = torch.equal(o1, o2) and torch.equal(l1, l2)
    nan = bool(torch.isnan(o2).any())
    total += 1
    msg = ""
    if ref:
        e = check_attention(q, k, v, sri, causal, o2, l2)
        msg = f" ref err {e.out_err:.3e} torch {e.out_err_torch:.3e}"
    if not eq or nan:
        bad += 1
        d = (o1.float() - o2.float()).abs().max().item()
        print(f"MISMATCH {tag}: maxdiff {d} nan {nan}{msg}", flush=True)
    elif ref:
        print(f"ok {tag}{msg}", flush=True)


dt_list = [torch.bfloat16]
for D in [int(x) for x in os.environ.get("IVD", "128,64,256").split(",")]:
    for causal, nb in [(True, 1), (True, 2), (False, 2)]:
        for sq, sk in [
            (113, 203),
            (1023, 1024),
            (1500, 1500),
            (2048, 1000),
            (1000, 2048),
            (2900, 3100),
        ]:
            for seed in range(3):
                gen = torch.Generator().manual_seed(1000 * D + 100 * nb + 10 * seed + int(causal))
                B, H, Hkv = 2, 4, 2
                hm = (1, Hkv, H)[seed % 3]
                dtype = torch.float16 if seed == 2 and D == 64 else torch.bfloat16
                sri = random_bounds(B, hm, sq, sk, nb, gen, causal).cuda()
                q = torch.randn(B, sq, H, D, device="cuda", dtype=dtype)
                k = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
                v = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
                try:
                    cmp(
                        f"D{D} c{causal} n{nb} {sq}x{sk} s{seed} hm{hm} {dtype}",
                        q,
                        k,
                        v,
                        sri,
                        causal,
                        ref=(seed == 0),
                    )
                except Exception as e:
                    bad += 1
                    print(
                        f"ERROR D{D} c{causal} n{nb} {sq}x{sk}: {type(e).__name__}: {str(e)[:300]}",
                        flush=True,
                    )
    print(f"D={D} done, {total} cases, {bad} bad, {time.time() - t0:.0f}s", flush=True)
# fuzz: many random masks, D = 128, several shapes
for it in range(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
    gen = torch.Generator().manual_seed(777 + it)
    causal, nb = [(True, 1), (True, 2), (False, 2)][it % 3]
    sq = int(torch.randint(1, 2600, (1,), generator=gen))
    sk = int(torch.randint(1, 2600, (1,), generator=gen))
    sri = random_bounds(1, 2, sq, sk, nb, gen, causal).cuda()
    q = torch.randn(1, sq, 2, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, sk, 2, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, sk, 2, 128, device="cuda", dtype=torch.bfloat16)
    cmp(f"fuzz{it} c{causal} n{nb} {sq}x{sk}", q, k, v, sri, causal, ref=(it % 25 == 0))
print(f"fuzz done, {total} cases, {bad} bad, {time.time() - t0:.0f}s", flush=True)
for name in mask_names():
    for sq in (8192, 4000):
        mk = make_mask(name, sq, batch=2, num_heads=4, device="cuda", seed=1)
        sri, causal = mk.startend_row_indices, mk.causal
        if sri is None or sri.shape[-1] not in (1, 2):
            continue
        q = torch.randn(2, sq, 4, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, sq, 4, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(2, sq, 4, 128, device="cuda", dtype=torch.bfloat16)
        cmp(f"{name} {sq}", q, k, v, sri, causal, ref=(sq == 4000))
print(f"ALL done, {total} cases, {bad} bad, {time.time() - t0:.0f}s", flush=True)
