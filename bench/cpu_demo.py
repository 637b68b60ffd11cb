"""What ``python -m bench`` does on a machine without a CUDA GPU: a small demo of the reference.

Every registered mask at S = 512 is drawn (a text picture for a few, a PNG for each under the
output folder) and attention is computed through ``fm4.attention`` (the CPU runs fm4's fp32
reference) and checked against dense PyTorch attention with the same mask.
"""

from __future__ import annotations

import math
import os

import torch

from bench.timing import time_host


def _dense_attention(q, k, v, visible):
    """softmax(q k^T / sqrt(D)) v with a dense bool mask (True = attend); empty rows give 0."""
    qh, kh, vh = (t.transpose(1, 2).double() for t in (q, k, v))  # (B, H, S, D)
    s = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~visible, -math.inf)
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    d = p.sum(-1, keepdim=True)
    p = p / torch.where(d == 0, torch.ones_like(d), d)
    return (p @ vh).transpose(1, 2).to(q.dtype)


def run_cpu_demo(out_dir: str, *, seqlen: int = 512, heads: int = 2, head_dim: int = 64) -> int:
    """Draw the masks, compute attention on the CPU, print a table. Returns 0 (exit status)."""
    import fm4
    from fm4.masks.registry import MASKS, make_mask

    torch.manual_seed(0)
    pics = os.path.join(out_dir, "masks")
    os.makedirs(pics, exist_ok=True)
    q, k, v = (torch.randn(1, seqlen, heads, head_dim) for _ in range(3))
    print(f"CPU demo: every mask at S={seqlen}, H={heads}, D={head_dim}, fp32 (fm4's reference)\n")
    lines = [
        f"{'mask':24s} {'causal':>6s} {'n':>2s} {'density':>8s} {'visible':>8s} "
        f"{'ms':>8s} {'max err':>9s}"
    ]
    for name, spec in MASKS.items():
        mask = make_mask(name, seqlen, batch=1, num_heads=heads, seed=0)
        if name in ("causal_document", "global_sliding_window", "share_question"):
            print(f"{name} ({spec.description}):")
            print(mask.picture(max_size=32))
            print()
        mask.save_png(os.path.join(pics, f"{name}.png"), max_size=256)
        fm4.attention(q, k, v, mask)  # warm-up
        t = time_host(lambda m=mask: fm4.attention(q, k, v, m), reps=3)
        out = fm4.attention(q, k, v, mask)
        vis = mask.to_dense()  # (B, Hm, Sq, Sk)
        ref = _dense_attention(q, k, v, vis)
        err = (out - ref).abs().max().item()
        frac = mask.visible_pairs() / (mask.batch * mask.num_heads * seqlen * seqlen)
        dens = mask.block_density(tile_m=64, tile_n=64)
        lines.append(
            f"{name:24s} {mask.causal!s:>6s} {mask.n:2d} {dens:8.3f} "
            f"{frac:8.3f} {t.median_ms:8.2f} {err:9.2e}"
        )
    print("\n".join(lines))
    print(f"\nmask pictures: {pics}/ (white = visible); density counted at 64x64 tiles here")
    return 0
