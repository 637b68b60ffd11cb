# ruff: noqa  (a session-16 experiment script, kept as it ran; see README.md)
import torch

from fm4.masks.registry import make_mask, mask_names
from fm4.masks.tiles import CODE_SUB_SHIFT, block_minmax_torch, sub_tile_bits

tot = 0
for name in mask_names():
    for sq, sk in [(1000, 1000), (777, 1100), (1100, 777), (8192, 8192)]:
        m = make_mask(name, sk, batch=2, num_heads=2, seqlen_q=sq)
        sri = m.startend_row_indices
        if sri is None:
            continue
        nt = (sk + 127) // 128
        bits = sub_tile_bits(block_minmax_torch(sri, m.causal, sq, 64), m.causal, sq, 128, nt)
        vis = m.to_dense(sq)  # (B, Hm, sq, sk)
        B, Hm = vis.shape[:2]
        mt = (sq + 127) // 128
        pad = torch.zeros(B, Hm, mt * 128, nt * 128, dtype=torch.bool)
        pad[..., :sq, :sk] = vis
        q = pad.reshape(B, Hm, mt, 2, 64, nt, 2, 64).any(-1).any(4)  # (B,Hm,mt,2,nt,2) visible?
        n_set = 0
        for w in range(2):
            for h in range(2):
                b = ((bits >> (CODE_SUB_SHIFT + 2 * w + h)) & 1).bool()
                bad = b & q[:, :, :, w, :, h]
                assert not bad.any(), (name, sq, sk, w, h)
                n_set += int(b.sum())
        tot += n_set
        print(name, sq, sk, "bits set", n_set)
print("sound; total", tot)
