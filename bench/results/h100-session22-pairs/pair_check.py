# ruff: noqa
"""Session 22: kv_pair variants vs the default kernel, bitwise."""

import sys, torch
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90
from fm4.masks import registry

torch.manual_seed(0)
dev = "cuda"
bad = 0
n = 0
from bench.fwd_perf import VARIANTS

for pair in sys.argv[1].split(","):
    knobs = VARIANTS[pair]
    cases = []
    for causal in (False, True):
        for b, sq, sk, h, hkv in [
            (2, 1000, 1000, 4, 4),
            (1, 1100, 1100, 3, 1),
            (2, 300, 1000, 2, 2),
            (1, 1000, 333, 2, 2),
            (1, 129, 129, 1, 1),
            (1, 1, 1, 1, 1),
            (3, 4096, 4096, 4, 2),
            (1, 8192, 8192, 8, 8),
            (1, 640, 2000, 2, 1),
            (1, 1280, 1280, 2, 2),
        ]:
            cases.append((None, causal, b, sq, sk, h, hkv))
    if knobs.get("kv_pair") == "local":
        for name in (
            "sliding_window",
            "document",
            "causal_document",
            "random_eviction",
            "global_sliding_window",
            "share_question",
        ):
            for b, s, h in [(2, 1000, 4), (1, 4096, 4), (1, 1280, 2)]:
                cases.append((name, None, b, s, s, h, h))
    for name, causal, b, sq, sk, h, hkv in cases:
        q = torch.randn(b, sq, h, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, sk, hkv, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, sk, hkv, 128, device=dev, dtype=torch.bfloat16)
        sri = None
        if name is not None:
            m = registry.make_mask(name, sk, batch=b, num_heads=h, device=dev)
            sri, causal = m.startend_row_indices, m.causal
        o0, l0 = attention_fwd_sm90(q, k, v, sri, causal)
        for grid in (None, 8, 2):
            print(
                f"run {pair} {name} causal={causal} {b} {sq} {sk} {h}/{hkv} grid={grid}", flush=True
            )
            o1, l1 = attention_fwd_sm90(q, k, v, sri, causal, kernel_options=knobs, max_ctas=grid)
            torch.cuda.synchronize()
            ok = (
                torch.equal(o0, o1)
                and torch.equal(l0.nan_to_num(), l1.nan_to_num())
                and not torch.isnan(o1).any()
            )
            bad += not ok
            n += 1
            if not ok:
                print(
                    f"{pair} {name} causal={causal} b={b} sq={sq} sk={sk} h={h}/{hkv} grid={grid}: MISMATCH "
                    f"maxdiff {float((o0.float() - o1.float()).abs().max())}",
                    flush=True,
                )
    print(pair, "cases done", flush=True)
print(f"checked {n}, mismatches: {bad}")
