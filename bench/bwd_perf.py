"""Focused backward timing: fm4 backward kernel variants vs FA4 dense and FA4 mask_mod (bwd).

    python -m bench.bwd_perf [--seqlen 8192] [--masks causal,...] [--variants default,pds2]
        [--rounds 3]
    FM4_CACHE_DIR=/tmp/c python -m bench.bwd_perf --warm-cache --jobs 16   # bf16 D=128 kernels

Each fm4 variant is ``attention_bwd_sm90`` with some ``FlashMaskBwdSm90`` knobs changed
(``kernel_options``); its time is the preprocess, main kernel and postprocess, with the backward
tile lists built once outside the timed region. The peers' time is their backward alone after an
untimed forward (``bench.runner.time_direction(..., "bwd")``). Random bf16 inputs (B=16, H=32 at
8K, D=128), CUDA-event medians after warm-up; with ``--rounds`` the fm4 variants are timed in
interleaved rounds (order rotated) and the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import sys

# name -> FlashMaskBwdSm90 keyword arguments
VARIANTS: dict[str, dict] = {
    "default": {},
    "pds1": {"pds_stages": 1},
    "pds2": {"pds_stages": 2},
    "early_dv": {"early_dv": True},
    "early_dv_pds2": {"early_dv": True, "pds_stages": 2},
    "swapab": {"sdp_swapab": True},  # S^T / dP^T, RS dV / dK (Note [SdP swapAB] in bwd_sm90)
    "plain": {"sdp_swapab": False},  # S / dP, P and dS through smem
    "persistent": {"persistent": True},  # Note [Persistent backward] in bwd_sm90
    "direct": {"dkv_store": "direct"},  # dK / dV stored from registers
    "persistent_direct": {"persistent": True, "dkv_store": "direct"},
    # Note [dQ lazy zero] in bwd_sm90: the preprocess zeroes the dQ accumulator, or the main kernel
    "zero_fill": {"dq_lazy_zero": False},
    "lazy_zero": {"dq_lazy_zero": True},
}


def _warm_one(job: tuple) -> str:
    """Worker: compile one backward kernel (``("pre" | "main" | "post", key, knobs)``) into the
    disk cache (``FM4_CACHE_DIR``) under the key ``attention_bwd_sm90`` looks up."""
    from fm4.cute_kernels import bwd_launch as bl
    from fm4.cute_kernels.compile_utils import compile_key, get_or_compile

    kind, key, knobs = job
    build = {"pre": bl._compile_pre, "main": bl._compile_bwd, "post": bl._compile_post}[kind]
    name = {"pre": "bwd_pre_sm90", "main": "bwd_sm90", "post": "bwd_post_sm90"}[kind]
    get_or_compile({}, compile_key(key, knobs), lambda: build(*key, **knobs), name=name)
    return f"{kind} {key} {knobs}"


def warm_cache(jobs: int, variants: list[str]) -> int:
    """Compile the bf16, D = 128 backward kernels of the six mask modes (not deterministic) for
    each of ``variants`` and the preprocess / postprocess into the disk cache, in ``jobs``
    processes."""
    from bench.fwd_perf import KERNEL_MODES, warm_in_processes
    from fm4.cute_kernels.bwd_launch import tile_shape_bwd
    from fm4.cute_kernels.bwd_sm90 import dq_lazy_zero_on

    tile_m, tile_n = tile_shape_bwd(128)
    jobs_list = [
        ("main", ("BFloat16", 128, c, n, False, tile_m, tile_n), VARIANTS[name])
        for name in variants
        for c, n in KERNEL_MODES
    ]
    for first in {dq_lazy_zero_on(False, VARIANTS[name].get("dq_lazy_zero")) for name in variants}:
        jobs_list += [
            ("pre", ("BFloat16", 128, False, tile_m, not first), {}),
            ("post", ("BFloat16", 128, first), {}),
        ]
    return warm_in_processes(_warm_one, jobs_list, jobs, "backward")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--masks", default="causal,sliding_window,document,share_question")
    ap.add_argument("--variants", default="default,pds2")
    ap.add_argument("--reps", type=int, default=10, help="timed calls per variant and round")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median of them)")
    ap.add_argument(
        "--warmup-ms",
        type=float,
        default=1000.0,
        help="untimed GPU time of each run before each timed round (power limit: bench.timing)",
    )
    ap.add_argument("--peers", default="fa4_dense,fa4_mask_mod", help="'none' for fm4 only")
    ap.add_argument("--warm-cache", action="store_true", help="compile into FM4_CACHE_DIR only")
    ap.add_argument("--jobs", type=int, default=16, help="processes for --warm-cache")
    args = ap.parse_args(argv)
    if args.warm_cache:
        return warm_cache(max(args.jobs, 1), args.variants.split(","))

    import torch

    import fm4
    from bench import variant_table
    from bench.flops import mask_work
    from bench.peers import Fa4Dense, Fa4MaskMod, make_inputs
    from bench.runner import time_direction
    from bench.suite import Case
    from bench.timing import interleaved_medians, time_cuda
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90, tile_shape_bwd
    from fm4.masks.tiles import build_tile_lists

    dev = torch.device("cuda")
    S, H, D = args.seqlen, args.heads, 128
    B = max(1, 16 * 8192 // S)
    variants = args.variants.split(",")
    peers = [] if args.peers == "none" else args.peers.split(",")
    kw = {"warmup": 2, "warmup_ms": args.warmup_ms, "min_reps": args.reps, "max_reps": args.reps}
    rows = []
    for mask in args.masks.split(","):
        case = Case(mask, S, B, H, H, D)
        inp = make_inputs(case, dev)
        q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
        m = inp.mask
        sri, causal = m.startend_row_indices, bool(m.causal)
        out, lse = fm4.attention(q, k, v, m, return_lse=True)
        lists = None
        if sri is not None:
            lists = build_tile_lists(sri, causal, S, S, *tile_shape_bwd(D), backward=True)
        row = {"mask": mask, "gflop": mask_work(m, B, H, D).flops_block("bwd") / 1e9}
        ref = None
        runs = {}
        for name in variants:
            opts = VARIANTS[name]

            call = (inp.dout, q, k, v, out, lse, sri, causal)

            def run(opts=opts, call=call, lists=lists):
                return attention_bwd_sm90(*call, tile_lists=lists, kernel_options=opts)

            grads = run()
            torch.cuda.synchronize()
            if ref is None:
                ref = [g.clone() for g in grads]
            else:
                pairs = zip(grads, ref, strict=True)
                diff = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
                row[f"{name}_maxdiff"] = diff
            runs[name] = run
        row.update(interleaved_medians(runs, args.rounds, lambda r: time_cuda(r, **kw).median_ms))
        for impl_cls, label in ((Fa4Dense, "fa4_dense"), (Fa4MaskMod, "fa4_mask_mod")):
            if label not in peers:
                continue
            impl = impl_cls(dev)
            if impl.available()[0] and impl.applies(case)[0]:
                try:
                    fn = impl.prepare(inp)
                    fn().backward(inp.dout)
                    row[label] = time_direction(fn, inp, "bwd", **kw).median_ms
                except Exception as e:  # report and go on
                    print(f"{label} {mask}: {type(e).__name__}: {e}"[:300], file=sys.stderr)
        rows.append(row)
        del inp, q, k, v, out, lse
        torch.cuda.empty_cache()

    cols = [*variants, *peers]
    print(f"\nbackward, S={S} B={B} H={H} D={D} bf16, {torch.cuda.get_device_name()}, median ms")
    print("\n".join(variant_table.header(cols, "best fm4 / FA4 mask_mod")))
    for r in rows:
        print(variant_table.row_line(r, cols, variants))
        diffs = {k: v for k, v in r.items() if k.endswith("_maxdiff")}
        if diffs:
            print("   max |grad - default|:", diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
