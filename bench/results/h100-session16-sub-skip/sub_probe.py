# ruff: noqa  (a session-16 experiment script, kept as it ran; see README.md)
"""Session 16 probe: sub_skip (P V halves) vs default, bitwise + interleaved timing (H100)."""

import statistics
import sys

import torch

from fm4.cute_kernels.fwd_launch import attention_fwd_sm90
from fm4.masks.registry import make_mask
from fm4.masks.tiles import block_minmax, build_tile_lists, sub_tile_bits


def lists_pair(sri, causal, sq, sk):
    lists = build_tile_lists(sri, causal, sq, sk, 128, 128, backward=False)
    sub = build_tile_lists(sri, causal, sq, sk, 128, 128, backward=False)
    nt = (sk + 127) // 128
    mmh = block_minmax(sri, causal, sq, 64)
    bits = sub_tile_bits(mmh, causal, sq, 128, nt)
    # only the partial entries carry codes: gather each entry's tile bits
    idx = sub.fwd_partial_idx.long()
    picked = torch.gather(bits, 3, idx)
    cnt = sub.fwd_partial_cnt
    slot = torch.arange(idx.shape[-1], device=idx.device)
    sub.fwd_partial_code = sub.fwd_partial_code | torch.where(slot < cnt[..., None], picked, 0)
    return lists, sub


def run(q, k, v, sri, causal, lists, knobs):
    return attention_fwd_sm90(q, k, v, sri, causal, tile_lists=lists, kernel_options=knobs)


def check(name, B, H, sq, sk):
    torch.manual_seed(1)
    q = torch.randn(B, sq, H, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, sk, H, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, sk, H, 128, device="cuda", dtype=torch.bfloat16)
    m = make_mask(name, sk, batch=B, num_heads=H, device="cuda", seqlen_q=sq)
    sri = m.startend_row_indices
    lists, sub = lists_pair(sri, m.causal, sq, sk)
    o0, l0 = run(q, k, v, sri, m.causal, lists, None)
    o1, l1 = run(q, k, v, sri, m.causal, sub, {"sub_skip": True})
    torch.cuda.synchronize()
    same = torch.equal(o0, o1) and torch.equal(l0, l1)
    nan = torch.isnan(o1).any().item()
    return same, nan, (q, k, v, sri, m.causal, lists, sub)


masks = sys.argv[1].split(",")
ok_all = True
for name in masks:
    for sq, sk in [(113, 203), (1023, 1024), (8192, 8192)]:
        B, H = (16, 32) if sq == 8192 else (2, 4)
        try:
            same, nan, args = check(name, B, H, sq, sk)
        except Exception as e:
            print(f"{name} {sq}x{sk}: ERROR {type(e).__name__}: {e}")
            ok_all = False
            continue
        print(f"{name} {sq}x{sk}: bitwise {same} nan {nan}", flush=True)
        ok_all &= same and not nan
    q, k, v, sri, causal, lists, sub = args
    fns = {
        "base": lambda: run(q, k, v, sri, causal, lists, None),
        "sub": lambda: run(q, k, v, sri, causal, sub, {"sub_skip": True}),
    }
    per = {n: [] for n in fns}
    for rnd in range(6):
        order = list(fns) if rnd % 2 == 0 else list(fns)[::-1]
        for n in order:
            f = fns[n]
            for _ in range(2):
                f()
            ev = []
            for _ in range(15):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                f()
                e.record()
                ev.append((s, e))
            torch.cuda.synchronize()
            per[n].extend(a.elapsed_time(b) for a, b in ev)
    mb, ms = statistics.median(per["base"]), statistics.median(per["sub"])
    print(
        f"TIME {name} 8K: base {mb:.3f} ms  sub {ms:.3f} ms  ratio sub/base {ms / mb:.3f}",
        flush=True,
    )
print("ALL OK" if ok_all else "SOME FAILED")
