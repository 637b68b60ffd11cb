# ruff: noqa
import torch
from fm4.masks.registry import make_mask, mask_names
from fm4.masks.tiles import build_tile_lists

S = 8192
for m in mask_names():
    mk = make_mask(m, S, batch=2, num_heads=4, seed=0)
    sri, causal = mk.startend_row_indices, mk.causal
    if sri is None:
        if m == "causal":
            p, f = 1.0, 31.5
        else:
            p, f = 0, 64
        print(f"{m:24s} none causal={causal} partial {p:.2f} full {f:.2f}")
        continue
    tl = build_tile_lists(sri, causal, S, S, 128, 128, backward=False, impl="torch")
    p = tl.fwd_partial_cnt.float().mean().item()
    f = tl.fwd_full_cnt.float().mean().item()
    print(
        f"{m:24s} n={sri.shape[-1]} causal={causal} Hm={sri.shape[1]} partial {p:.2f} full {f:.2f}"
    )
