# ruff: noqa
"""Session 17: kv_mcast prototype vs default, bitwise (n = 0 modes)."""

import torch
import json, sys
from fm4.cute_kernels.fwd_launch import attention_fwd_sm90

KNOBS = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"kv_mcast": True}

torch.manual_seed(0)
dev = "cuda"
bad = 0
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
    ]:
        q = torch.randn(b, sq, h, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, sk, hkv, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, sk, hkv, 128, device=dev, dtype=torch.bfloat16)
        o0, l0 = attention_fwd_sm90(q, k, v, None, causal)
        for grid in (None, 8, 2):
            o1, l1 = attention_fwd_sm90(q, k, v, None, causal, kernel_options=KNOBS, max_ctas=grid)
            torch.cuda.synchronize()
            ok = (
                torch.equal(o0, o1)
                and torch.equal(l0.nan_to_num(), l1.nan_to_num())
                and not torch.isnan(o1).any()
            )
            bad += not ok
            print(
                f"causal={causal} b={b} sq={sq} sk={sk} h={h}/{hkv} grid={grid}: {'OK' if ok else 'MISMATCH'}"
                + ("" if ok else f" maxdiff {float((o0.float() - o1.float()).abs().max())}"),
                flush=True,
            )
print("mismatches:", bad)
