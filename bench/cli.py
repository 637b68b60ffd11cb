"""``python -m bench``: flags, plans (default, --quick, --full) and the run with a progress bar."""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.suite import parse_len

ALL_MASKS = [
    "full",
    "causal",
    "sliding_window",
    "causal_document",
    "document",
    "share_question",
    "prefix_lm_causal",
    "prefix_lm_document",
    "causal_blockwise",
    "global_sliding_window",
    "qk_sparse",
    "random_eviction",
]
#: The masks the anchors measured at 32K and 128K.
LONG_MASKS = ["full", "causal", "sliding_window", "causal_document", "document", "share_question"]
K = 1024
#: Default plan: every mask at 8K; the anchors' long-sequence subset, forward only, at 32K/128K.
DEFAULT_PLAN = [(8 * K, ALL_MASKS), (32 * K, LONG_MASKS), (128 * K, LONG_MASKS)]
DEFAULT_DIRECTIONS = {8 * K: ["fwd", "fwd+bwd"], 32 * K: ["fwd"], 128 * K: ["fwd"]}
QUICK_PLAN = [(8 * K, ["causal", "sliding_window", "document"])]
FULL_PLAN = [(s, ALL_MASKS) for s in (8 * K, 32 * K, 128 * K)]
DEFAULT_IMPLS = ["fm4", "fa4_mask_mod", "flex", "fa4_dense", "sdpa"]
ALL_IMPLS = ["fm4", "fa4_mask_mod", "flex", "flex_flash", "fa4_dense", "sdpa"]
#: Timed calls per round at most: high enough that --target-ms decides (2 ms calls, 1 s).
MAX_REPS = 5000

EPILOG = f"""
plans:
  default   every mask at 8K (fwd, fwd+bwd); at 32K and 128K (fwd):
            {", ".join(LONG_MASKS)}.
            Implementations {", ".join(DEFAULT_IMPLS)}; one document split (seed 0).
            Each measurement: 1 s of untimed calls, then 0.5 s timed, in each of two
            interleaved rounds (the H100 is power-limited: see bench.timing).
            About 15-18 minutes on one H100, compiles included (897 s measured
            in three parts, fm4's kernels compiled beforehand).
  --quick   {", ".join(QUICK_PLAN[0][1])} at 8K, fwd only (a minute or two).
  --full    every mask at 8K, 32K, 128K; fwd, bwd, fwd+bwd; 5 document splits; all
            implementations (FlashMask V4's whole suite: about an hour).
  --masks/--seqlens/--directions/--impls/--splits override the plan's choice.

implementations: fm4 (skipped with the reason until its kernels land; its time includes
  building the tile lists from startend_row_indices), fa4_mask_mod (FA4 + CuTe mask_mod reading
  the bounds from aux_tensors + block-sparse tensors from create_block_mask), flex
  (torch.compile(flex_attention), Triton), flex_flash (FlexAttention BACKEND="FLASH"), fa4_dense
  and sdpa (full and causal only).

Configuration (FlashMask V4): bf16, D = 128, H = 32, B = 128K / S, w = S/16, P = S/2,
r0 = S/2, G = 16, 5 random documents (seed = split index). Without a CUDA GPU the command says
so and runs a small CPU demo of the reference path.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="fm4 vs FA4 mask_mod, FlexAttention and FA4 dense on the FlashMask suite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a short run (see plans)")
    g.add_argument("--full", action="store_true", help="FlashMask V4's whole suite (long)")
    p.add_argument("--masks", type=_csv, help=f"comma list or 'all' ({', '.join(ALL_MASKS)})")
    p.add_argument("--seqlens", type=_csv, help="comma list, e.g. 8K,32K,128K")
    p.add_argument(
        "--directions", type=_csv, help="comma list of fwd, bwd, fwd+bwd (default: per plan)"
    )
    p.add_argument("--impls", type=_csv, help=f"comma list or 'all' ({', '.join(ALL_IMPLS)})")
    p.add_argument("--head-dims", type=_csv, default=["128"], help="e.g. 64,128,256 (default 128)")
    p.add_argument("--gqa", action="store_true", help="32 query heads, 8 key/value heads")
    p.add_argument("--splits", type=int, help="document splits per seeded mask (default 1)")
    p.add_argument("--out", help="results folder (default bench-results/<time>)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness check")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")
    p.add_argument(
        "--blockmask",
        choices=["create_block_mask", "fm4"],
        default="create_block_mask",
        help="how the peers' BlockMask is built (default torch.compile(create_block_mask))",
    )
    p.add_argument(
        "--target-ms",
        type=float,
        default=1000.0,
        help="timed GPU time per measurement, split over the rounds (at least 3 calls a round)",
    )
    p.add_argument(
        "--warmup-ms",
        type=float,
        default=1000.0,
        help="untimed GPU time of each call right before each of its timed rounds, so that the"
        " timed calls run in that call's own sustained clock / power state (bench.timing)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved timing rounds per case (every implementation once per round, the"
        " order rotated; --target-ms is split over them)",
    )
    p.add_argument("--cpu-demo", action="store_true", help="run the CPU demo even with a GPU")
    p.add_argument(
        "--anchors", help="anchors JSON to compare the peers with (default ../shared/anchors/...)"
    )
    return p


def make_plan(args) -> tuple[list[tuple[int, list[str]]], dict[int, list[str]], list[str], int]:
    """(plan of (seqlen, masks), directions per seqlen, implementations, splits) from the flags."""
    if args.quick:
        plan, dirs, impls, splits = QUICK_PLAN, {8 * K: ["fwd"]}, DEFAULT_IMPLS, 1
    elif args.full:
        all_dirs = ["fwd", "bwd", "fwd+bwd"]
        plan, dirs, impls, splits = FULL_PLAN, {s: all_dirs for s, _ in FULL_PLAN}, ALL_IMPLS, 5
    else:
        plan, dirs, impls, splits = DEFAULT_PLAN, DEFAULT_DIRECTIONS, DEFAULT_IMPLS, 1
    if args.seqlens:
        lens = [parse_len(s) for s in args.seqlens]
        masks_for = dict(plan)
        plan = [(s, masks_for.get(s, ALL_MASKS)) for s in lens]
    if args.masks:
        masks = ALL_MASKS if args.masks == ["all"] else args.masks
        plan = [(s, masks) for s, _ in plan]
    if args.directions:
        dirs = {s: args.directions for s, _ in plan}
    else:
        dirs = {s: dirs.get(s, ["fwd"]) for s, _ in plan}
    if args.impls:
        impls = ALL_IMPLS if args.impls == ["all"] else args.impls
    if args.splits:
        splits = args.splits
    return plan, dirs, impls, splits


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="bench", unit="run", dynamic_ncols=True, file=sys.stderr)
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    out_dir = args.out or os.path.join("bench-results", time.strftime("%Y%m%d-%H%M%S"))
    if args.cpu_demo or not torch.cuda.is_available():
        if not args.cpu_demo:
            print(
                "No CUDA GPU here: the benchmark needs one (H100 / sm_90 for FA4 and fm4's "
                "kernels). Running a small CPU demo of the reference path instead.\n"
            )
        from bench.cpu_demo import run_cpu_demo

        return run_cpu_demo(out_dir)

    from bench import anchors as anchors_mod
    from bench.peers import make_impls
    from bench.plots import write_plots
    from bench.report import run_metadata, skipped_lines, table_lines, write_all
    from bench.runner import Collector, run_case
    from bench.suite import build_cases

    plan, dirs, impl_names, splits = make_plan(args)
    device = torch.device("cuda")
    try:
        head_dims = [int(d) for d in args.head_dims]
        impls = make_impls(impl_names, device, block_mask_source=args.blockmask)
        cases = []
        for s, masks in plan:
            cases += build_cases([(s, masks)], head_dims=head_dims, gqa=args.gqa, splits=splits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = {
        "plan": [[s, m] for s, m in plan],
        "directions": {str(s): d for s, d in dirs.items()},
        "impls": impl_names,
        "head_dims": head_dims,
        "heads": 32,
        "kv_heads": 8 if args.gqa else 32,
        "batch": "128K / S",
        "dtype": "bfloat16",
        "splits": splits,
        "blockmask": args.blockmask,
        "check": not args.no_check,
        "target_ms": args.target_ms,
        "warmup_ms": args.warmup_ms,
        "max_reps": MAX_REPS,
        "rounds": args.rounds,
    }
    meta = run_metadata(config)
    print(f"device: {meta['device']['name']}  versions: {meta['versions']}")
    print(f"{len(cases)} cases x {len(impls)} implementations -> {out_dir}")
    for impl in impls:
        ok, why = impl.available()
        if not ok:
            print(f"  {impl.name}: will be skipped ({why})")
    torch.backends.cuda.matmul.allow_tf32 = False
    collector = Collector()
    bar = _progress(len(cases) * len(impls))
    log = bar.write if bar is not None else print
    t0 = time.time()
    for case in cases:
        run_case(
            case,
            impls,
            dirs[case.seqlen],
            collector,
            device=device,
            check=not args.no_check,
            log=log,
            on_impl_done=(bar.update if bar is not None else lambda n=1: None),
            set_status=(bar.set_postfix_str if bar is not None else lambda s: None),
            timing_kw={
                "target_ms": args.target_ms,
                "warmup_ms": args.warmup_ms,
                "max_reps": MAX_REPS,
            },
            rounds=args.rounds,
        )
        meta["elapsed_s"] = round(time.time() - t0, 1)
        write_all(out_dir, collector.rows(), meta)  # after every case: a cut run keeps its rows
    if bar is not None:
        bar.close()
    rows = collector.rows()
    meta["elapsed_s"] = round(time.time() - t0, 1)
    paths = write_all(out_dir, rows, meta)
    pngs = [] if args.no_plots else write_plots(rows, out_dir)
    print()
    for line in skipped_lines(rows):
        print(line)
    cmp_lines = anchors_mod.compare_lines(rows, args.anchors or anchors_mod.DEFAULT_ANCHORS)
    if cmp_lines:
        print()
        print("\n".join(cmp_lines))
    print(f"\nwrote {', '.join(list(paths.values()) + pngs)}  ({meta['elapsed_s']} s)")
    print("fm4's time includes building its tile lists; peers' block masks: blockmask column")
    print()
    print("\n".join(table_lines(rows)))
    return 0
