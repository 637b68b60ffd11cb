"""Focused forward timing: fm4 kernel variants vs FA4 dense and FA4 mask_mod (H100, D=128).

    python -m bench.fwd_perf [--seqlen 8192] [--masks full,causal,...] [--variants base,asm]
    python -m bench.fwd_perf --compile-only   # CPU: compile every variant for sm_90a, no GPU

Each fm4 variant is a ``FlashMaskFwdSm90`` with some constructor knobs changed, compiled in this
process (no compile cache). Inputs are random bf16 (B=16, H=32 at 8K), the same for every
implementation; times are CUDA-event medians after warm-up (``bench.timing.time_cuda``). fm4's
tile lists are built once outside the timed region (unlike ``python -m bench``, whose fm4 time
includes them); FA4 mask_mod's block mask is also built outside.
"""

from __future__ import annotations

import argparse
import math
import sys

# name -> FlashMaskFwdSm90 keyword arguments
VARIANTS: dict[str, dict] = {
    "default": {},  # the tuning table's choices
    "base": {"p_cvt_asm": False, "rescale_o_before_pv": False},
    "asm": {"p_cvt_asm": True, "rescale_o_before_pv": False},
    "asm_early_rescale": {"p_cvt_asm": True, "rescale_o_before_pv": True},
}


def compile_variant(head_dim: int, causal: bool, n_bounds: int, arch: str | None, **kw):
    """Compile one fm4 forward variant (bf16) for ``arch`` (None: the visible GPU)."""
    from fm4.cute_kernels.fwd_launch import _compile_fwd

    return _compile_fwd("BFloat16", head_dim, causal, n_bounds, arch=arch, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=0, help="0: 16 * 8192 / seqlen")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--masks", default="full,causal,prefix_lm_causal,qk_sparse")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--check", action="store_true", help="compare each variant with 'base'")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    masks = args.masks.split(",")
    D = 128

    if args.compile_only:
        for name in variants:
            for causal, nb in ((False, 0), (True, 0), (True, 2), (False, 4)):
                compile_variant(D, causal, nb, "sm_90a", **VARIANTS[name])
                print(f"compiled {name} causal={causal} n_bounds={nb}", flush=True)
        return 0

    import torch

    from bench.flops import mask_work
    from bench.peers import Fa4Dense, Fa4MaskMod, make_inputs
    from bench.suite import Case
    from bench.timing import time_cuda
    from fm4.cute_kernels.fwd_launch import tile_shape
    from fm4.masks.tiles import build_tile_lists

    dev = torch.device("cuda")
    S = args.seqlen
    B = args.batch or max(1, 16 * 8192 // S)
    H = args.heads
    compiled: dict = {}
    rows = []

    def timed(fn) -> float:
        return time_cuda(fn, warmup=2, min_reps=args.reps, max_reps=args.reps).median_ms

    for mask in masks:
        case = Case(mask, S, B, H, H, D)
        inp = make_inputs(case, dev)
        q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
        m = inp.mask
        sri = m.startend_row_indices
        causal = bool(m.causal)
        nb = 0 if sri is None else sri.shape[-1]
        mask_args: list = [None] * 5
        if sri is not None:
            tm, tn = tile_shape(D)
            tl = build_tile_lists(sri, causal, S, S, tm, tn, backward=False)
            mask_args = [
                sri.contiguous(),
                tl.fwd_partial_cnt.contiguous(),
                tl.fwd_partial_idx.contiguous(),
                tl.fwd_full_cnt.contiguous(),
                tl.fwd_full_idx.contiguous(),
            ]
        work = mask_work(m, B, H, D)
        flops = work.flops_block("fwd")
        row = {"mask": mask, "density": work.density}
        out_ref = None
        scale = 1.0 / math.sqrt(D)
        for name in variants:
            key = (name, causal, nb)
            if key not in compiled:
                compiled[key] = compile_variant(D, causal, nb, None, **VARIANTS[name])
            fn = compiled[key]
            out = torch.empty_like(q)
            lse = torch.empty(B, H, S, dtype=torch.float32, device=dev)

            def run(fn=fn, out=out, lse=lse, qkv=(q, k, v), extra=(scale, *mask_args)):
                fn(*qkv, out, lse, *extra)

            run()
            torch.cuda.synchronize()
            if out_ref is None:
                out_ref = out.clone()
            elif args.check:
                err = (out.float() - out_ref.float()).abs().max().item()
                row[f"{name}_maxdiff"] = err
            row[name] = timed(run)
        for impl_cls, label in ((Fa4Dense, "fa4_dense"), (Fa4MaskMod, "fa4_mask_mod")):
            impl = impl_cls(dev)
            ok, _ = impl.available()
            app, _ = impl.applies(case)
            if ok and app:
                try:
                    fn = impl.prepare(inp)
                    with torch.no_grad():
                        fn()
                        row[label] = timed(fn)
                except Exception as e:  # report and go on
                    row[label] = float("nan")
                    print(f"{label} {mask}: {type(e).__name__}: {e}"[:300], file=sys.stderr)
        row["gflop"] = flops / 1e9
        rows.append(row)
        del inp, q, k, v
        torch.cuda.empty_cache()

    def row_tf(r: dict, t: float) -> float:
        return r["gflop"] / t  # GFLOP / ms = TFLOP/s

    cols = [*variants, "fa4_dense", "fa4_mask_mod"]
    print(f"\nS={S} B={B} H={H} D={D} bf16, {torch.cuda.get_device_name()}, median ms")
    print("| mask | " + " | ".join(cols) + " | best fm4 / FA4 |")
    print("|---|" + "---|" * (len(cols) + 1))
    for r in rows:
        cells = []
        for c in cols:
            t = r.get(c)
            if t is None or t != t:
                cells.append("-")
            else:
                cells.append(f"{t:.2f} ({row_tf(r, t):.0f})")
        best = min(r[v] for v in variants)
        peer = r.get("fa4_mask_mod") or r.get("fa4_dense")
        ratio = f"{peer / best:.3f}x" if peer else "-"
        print(f"| {r['mask']} | " + " | ".join(cells) + f" | {ratio} |")
        diffs = {k: v for k, v in r.items() if k.endswith("_maxdiff")}
        if diffs:
            print("   max |out - base|:", diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
