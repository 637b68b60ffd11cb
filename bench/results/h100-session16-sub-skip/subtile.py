# ruff: noqa  (a session-16 experiment script, kept as it ran; see README.md)
"""How much Q K^T / P V work 64x64 sub-tile skipping would save (CPU, 8K, seed 0)."""

import torch

from fm4.masks.registry import make_mask, mask_names

S = 8192
for name in mask_names():
    m = make_mask(name, S, batch=1, num_heads=32 if name == "random_eviction" else 1)
    d = m.to_dense()  # True = masked?
    d = d.reshape(-1, S, S)[0]
    vis = d
    # sub-blocks 64x64 visible counts
    sb = vis.reshape(S // 64, 64, S // 64, 64).any(3).any(1)  # (128, 128) any visible
    tiles = sb.reshape(S // 128, 2, S // 128, 2).any(3).any(1)
    full_t = vis.reshape(S // 128, 128, S // 128, 128).all(3).all(1)
    visited = int(tiles.sum())
    partial = visited - int(full_t.sum())
    # per visited tile, per WG (row half), per col half: masked?
    sbt = sb.reshape(S // 128, 2, S // 128, 2).permute(0, 2, 1, 3)  # (mt, nt, wg, ch)
    masked_halves = (~sbt)[tiles].sum().item()
    wg_empty = (~sbt.any(3))[tiles].sum().item()
    print(
        f"{name:22s} visited {visited:5d} partial {partial:5d} "
        f"masked 64x64 halves {masked_halves:5d} ({masked_halves / (4 * visited):.3f} of work)"
        f" wg-empty {wg_empty}"
    )

print("--- single-interval coverage (what a kernel-side per-column test finds)")
from fm4.masks.bounds import _masked_intervals

for name in mask_names():
    m = make_mask(name, S, batch=1, num_heads=32 if name == "random_eviction" else 1)
    sri = m.startend_row_indices
    if sri is not None:
        sri = sri[0, 0]
    iv = _masked_intervals(sri, m.causal, S, S, torch.device("cpu"))
    vis = m.to_dense().reshape(-1, S, S)[0]
    tiles = vis.reshape(S // 128, 128, S // 128, 128).any(3).any(1)
    R0 = torch.arange(S // 64) * 64
    R1 = R0 + 63
    # cov[rb, j]: column j fully masked over row block rb by one interval
    cov = torch.zeros(S // 64, S, dtype=torch.bool)
    for s, e in iv:
        s = s.reshape(-1)[-S:] if s.dim() else s
        cov |= (s[None, :] <= R0[:, None]) & (e[None, :] > R1[:, None])
    hb = cov.reshape(S // 64, S // 64, 64).all(2)  # (row 64-block, col 64-block)
    sbt = hb.reshape(S // 128, 2, S // 128, 2).permute(0, 2, 1, 3)
    found = sbt[tiles].sum().item()
    diag = 0
    print(f"{name:22s} halves found {found:5d} ({found / (4 * int(tiles.sum())):.3f})")
