"""What one tile costs in fm4's forward: synthetic masks with known tile counts (H100, D=128).

    python -m bench.tile_cost                       # default masks, default kernel
    python -m bench.tile_cost --masks bd_2,bd_4,bd_8,bd_4_p,sliding_window --rounds 5
    # A/B across commits: export each build's kernels on the CPU, time them side by side
    PYTHONPATH=<old checkout> python -m bench.tile_cost --export objs/old --name old
    python -m bench.tile_cost --export objs/new --name new
    python -m bench.tile_cost --objects objs/old,objs/new --masks ...
    # the backward (preprocess + main + postprocess; lists prebuilt); --variants names
    # bench.bwd_perf's VARIANTS, timed in interleaved rounds
    FM4_CACHE_DIR=/tmp/c python -m bench.bwd_perf --warm-cache --variants default,persistent
    FM4_CACHE_DIR=/tmp/c python -m bench.tile_cost --direction bwd --variants default,persistent

Every mask runs B=16, H=32, S=8K, bf16 through the forward kernel alone (tile lists built
outside the timed call), variants timed in interleaved rounds (order rotated), median of the
rounds. Printed per mask: visited and partial tiles per head, m_blocks with work, ms, and
"us/tile" = ms / (visited tiles of all heads / SM count): what one SM spends on one 128x128
tile, so masks of different sizes compare. Synthetic masks (each built for one mask head):

* ``causal_n1_clean`` / ``causal_n2_clean`` / ``full_n2_clean``: the causal / full mask
  written as bounds that mask nothing: the same tiles as ``causal`` / ``full`` through the
  bounds kernels (their unmasked loop and list reads).
* ``causal_n1_allpartial`` / ``causal_n2_allpartial`` / ``full_n2_allpartial``: the same tiles,
  every one of them partial (one column per n_block masks a row of each m_block).
* ``bd_K``: block diagonal, documents of K tiles (non-causal, n = 2): every m_block has exactly
  K unmasked tiles; ``bd_K_p``: the same tiles, all partial. The time against K separates the
  cost of a tile from the cost of an m_block (its first block, epilogue, hand-over).

Any registry mask name works too (built with B = 16 and H = 32 heads, seed 0).

``--direction bwd`` times ``attention_bwd_sm90`` instead (64 x 128 tiles, visited per n_block:
"tiles/head" and "partial/head" then count the backward lists' tiles, "m_blocks/head" the
n_blocks with work); ``bd_K`` then has 2K tiles per n_block, and the time against K separates
the cost of a tile from the cost of an n_block (K / V loads, dK / dV epilogue, CTA start).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

S, B, H, D = 8192, 16, 32, 128
TILE = 128
DEFAULT_MASKS = (
    "causal,causal_n1_clean,causal_n1_allpartial,causal_n2_allpartial,full,full_n2_clean,"
    "full_n2_allpartial,bd_2,bd_4,bd_8,bd_4_p,sliding_window,share_question,document"
)


def synthetic(name: str, seqlen: int, device):
    """(causal, bounds ``[Sk, n]`` int32 or None) of a synthetic mask; None if not synthetic.

    Tile counts (tile 128, seqlen a multiple of 128, seqlen / 128 m_blocks <= 128): see the
    module docstring; ``tests/test_bench.py`` checks them.
    """
    import torch

    j = torch.arange(seqlen, device=device, dtype=torch.int32)
    t = j % TILE  # column within its n_block
    num_m = seqlen // TILE
    none = torch.full_like(j, seqlen)
    if name == "causal_n1_clean":
        return True, none[:, None]
    if name == "causal_n2_clean":
        return True, torch.stack([none, none], -1)
    if name == "full_n2_clean":  # masked iff i >= Sk or i < 0: nothing
        return False, torch.stack([none, torch.zeros_like(j)], -1)
    # column t of every n_block masks the rows from the last row of m_block t on
    last_row = torch.where(t < num_m, t * TILE + TILE - 1, none)
    if name == "causal_n1_allpartial":
        return True, last_row[:, None]
    if name == "causal_n2_allpartial":  # just that row: [last, last + 1)
        return True, torch.stack([last_row, torch.where(t < num_m, last_row + 1, none)], -1)
    if name == "full_n2_allpartial":
        return False, torch.stack([last_row, torch.zeros_like(j)], -1)
    if name.startswith("bd_"):
        parts = name.split("_")
        k = int(parts[1])
        start = (j // (k * TILE)) * (k * TILE)
        upper = start.clone()  # masked iff i >= start + k*128 or i < upper
        if parts[-1] == "p":  # column t < k of each n_block masks rows up to t*128 of its doc
            upper = torch.where(t < k, start + t * TILE + 1, start)
        return False, torch.stack([start + k * TILE, upper], -1)
    return None


def mask_case(name: str, device):
    """(causal, bounds ``[B, Hm, Sk, n]`` or None) for a synthetic or registry mask."""
    syn = synthetic(name, S, device)
    if syn is not None:
        causal, sri = syn
        return causal, sri[None, None].expand(B, 1, *sri.shape).contiguous()
    if name in ("causal", "full"):
        return name == "causal", None
    from fm4.masks.registry import make_mask

    m = make_mask(name, S, batch=B, num_heads=H, device=device)
    return bool(m.causal), m.startend_row_indices


def export(folder: str, name: str, knobs: dict) -> None:
    """CPU or GPU: compile every forward mode (sm_90a) of one variant into FOLDER/NAME-C-N.o."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import os

    from bench.fwd_perf import KERNEL_MODES, compile_to_file

    os.makedirs(folder, exist_ok=True)
    jobs = [(D, c, n, "sm_90a", f"{folder}/{name}-{int(c)}-{n}.o", knobs) for c, n in KERNEL_MODES]
    with cf.ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as ex:
        for path in ex.map(compile_to_file, jobs):
            print(path, flush=True)


def load_objects(folders: list[str], modes: set) -> tuple[list[str], dict]:
    """Kernels exported by :func:`export`: (variant names, {(name, causal, n): function})."""
    import cutlass.cute as cute

    from bench.fwd_perf import object_files

    names, fns = [], {}
    for folder in folders:
        for name, causal, nb, path in object_files(folder):
            if (causal, nb) not in modes:
                continue
            if name not in names:
                names.append(name)
            module = cute.runtime.load_module(path, enable_tvm_ffi=True)
            fns[(name, causal, nb)] = module["func"]
    return names, fns


def median_ms(fn, reps: int) -> float:
    """CUDA-event median of ``reps`` calls of ``fn`` after two warm-up calls."""
    from bench.timing import time_cuda

    return time_cuda(fn, warmup=2, min_reps=reps, max_reps=reps).median_ms


def print_header(rows_label: str, variants: list[str]) -> None:
    """The markdown header of the per-mask table: counts, then ms and us/tile per variant."""
    cells = " | ".join(f"{name} ms | {name} us/tile" for name in variants)
    print(f"| mask | causal | n | tiles/head | partial/head | {rows_label} | {cells} |")
    print("|---|---|---|---|---|---|" + "---|---|" * len(variants))


def print_row(counts: tuple, medians: dict[str, float], tiles_per_sm: float) -> None:
    """One table row: mask, causal, n, the three per-head counts, then each variant's median ms
    and us per tile (ms over the visited tiles of all heads per SM)."""
    m, causal, nb, visited, partial, rows = counts
    line = f"| {m} | {causal} | {nb} | {visited:.0f} | {partial:.0f} | {rows:.0f} |"
    for ms in medians.values():
        line += f" {ms:.3f} | {ms * 1e3 / tiles_per_sm:.3f} |"
    print(line, flush=True)


def dense_bwd_tiles(causal: bool, seqlen: int, tile_m: int, tile_n: int) -> tuple[int, int, int]:
    """(visited, partial, n_blocks with work) per head of the backward without bounds (seqlen a
    multiple of both tiles, tile_n a multiple of tile_m): causal n_block j sees the m_blocks
    from its diagonal on, the first tile_n / tile_m of them partial."""
    nt, mt, r = seqlen // tile_n, seqlen // tile_m, tile_n // tile_m
    if not causal:
        return mt * nt, 0, nt
    return sum(mt - r * j for j in range(nt)), r * nt, nt


def run_bwd(masks: list[str], rounds: int, reps: int, variants: list[str]) -> int:
    """``--direction bwd``: the backward on each mask (see the module docstring), one column
    pair per ``bench.bwd_perf`` variant, variants timed in interleaved rounds."""
    import torch

    from bench.bwd_perf import VARIANTS
    from bench.timing import interleaved_medians
    from fm4.cute_kernels.bwd_launch import attention_bwd_sm90, tile_shape_bwd
    from fm4.cute_kernels.fwd_launch import attention_fwd_sm90, sm_count
    from fm4.masks.tiles import build_tile_lists

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v, dout = (
        torch.randn(B, S, H, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(4)
    )
    tile_m, tile_n = tile_shape_bwd(D)
    sms = sm_count(dev)
    print(f"\nbackward, S={S} B={B} H={H} D={D} bf16, {torch.cuda.get_device_name()}, {sms} SMs")
    print_header("n_blocks/head", variants)
    for m in masks:
        causal, sri = mask_case(m, dev)
        out, lse = attention_fwd_sm90(q, k, v, sri, causal)
        nb = 0 if sri is None else sri.shape[-1]
        tl = None
        if sri is not None:
            tl = build_tile_lists(sri, causal, S, S, tile_m, tile_n, backward=True)
            heads = B * sri.shape[1]
            visited = (tl.bwd_partial_cnt.sum() + tl.bwd_full_cnt.sum()).item() / heads
            partial = tl.bwd_partial_cnt.sum().item() / heads
            cols = ((tl.bwd_partial_cnt + tl.bwd_full_cnt) > 0).sum().item() / heads
        else:
            visited, partial, cols = dense_bwd_tiles(causal, S, tile_m, tile_n)

        runs = {}
        first = None
        for name in variants:

            def run(sri=sri, causal=causal, tl=tl, out=out, lse=lse, opts=VARIANTS[name]):
                return attention_bwd_sm90(
                    dout, q, k, v, out, lse, sri, causal, tile_lists=tl, kernel_options=opts
                )

            grads = run()
            torch.cuda.synchronize()
            if any(torch.isnan(g).any().item() for g in grads):
                print(f"{m} {name}: NaN in the gradients", file=sys.stderr)
                return 1
            if first is None:
                first = grads
            else:  # dK / dV: the same math per work item; dQ: fp32 additions reordered
                pairs = zip(grads, first, strict=True)
                err = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
                print(f"  {m} {name}: max |grad - {variants[0]}| = {err:.3g}", file=sys.stderr)
            runs[name] = run
        med = interleaved_medians(runs, rounds, functools.partial(median_ms, reps=reps))
        print_row((m, int(causal), nb, visited, partial, cols), med, visited * B * H / sms)
        del first, out, lse
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", default=DEFAULT_MASKS)
    ap.add_argument(
        "--variants", default="default", help="bench.fwd_perf (bwd: bench.bwd_perf) variants"
    )
    ap.add_argument("--objects", default="", help="folders written by --export (A/B builds)")
    ap.add_argument("--export", default="", help="only compile the kernels into this folder")
    ap.add_argument("--name", default="default", help="variant name for --export")
    ap.add_argument("--kwargs", default="{}", help="FlashMaskFwdSm90 knobs for --export (JSON)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--direction", default="fwd", choices=("fwd", "bwd"))
    args = ap.parse_args(argv)
    if args.direction == "bwd":
        variants = args.variants.split(",")
        return run_bwd(args.masks.split(","), args.rounds, args.reps, variants)
    if args.export:
        import json

        export(args.export, args.name, json.loads(args.kwargs))
        return 0

    import torch

    from bench.fwd_perf import VARIANTS, compile_all
    from bench.timing import interleaved_medians
    from fm4.cute_kernels.fwd_launch import fwd_mask_args, persistent_args, sm_count
    from fm4.masks.tiles import build_tile_lists

    dev = torch.device("cuda")
    masks = args.masks.split(",")
    cases = {m: mask_case(m, dev) for m in masks}
    modes = {(c, 0 if s is None else s.shape[-1]) for c, s in cases.values()}
    t0 = time.time()
    if args.objects:
        variants, compiled = load_objects(args.objects.split(","), modes)
    else:
        variants = args.variants.split(",")
        keys = [(v, c, n) for v in variants for c, n in sorted(modes)]
        compiled = compile_all(keys, D, "sm_90a", args.jobs)
    print(f"{len(compiled)} kernels ready in {time.time() - t0:.0f} s", flush=True)
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (
        torch.randn(B, S, H, D, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3)
    )
    scale = 1 / math.sqrt(D)
    sms = sm_count(dev)
    print(f"\nS={S} B={B} H={H} D={D} bf16, {torch.cuda.get_device_name()}, {sms} SMs")
    print_header("m_blocks/head", variants)
    for m in masks:
        causal, sri = cases[m]
        nb = 0 if sri is None else sri.shape[-1]
        if sri is not None:
            tl = build_tile_lists(sri, causal, S, S, TILE, TILE, backward=False)
            mask_args = fwd_mask_args(sri, tl)
            heads = B * sri.shape[1]
            visited = (tl.fwd_partial_cnt.sum() + tl.fwd_full_cnt.sum()).item() / heads
            partial = tl.fwd_partial_cnt.sum().item() / heads
            rows = ((tl.fwd_partial_cnt + tl.fwd_full_cnt) > 0).sum().item() / heads
        else:
            mask_args = [None] * 6
            mt = S // TILE
            visited = mt * (mt + 1) / 2 if causal else mt * mt
            partial, rows = (mt if causal else 0), mt
        runs, ref = {}, None
        for name in variants:
            fn = compiled[(name, causal, nb)]
            out = torch.empty_like(q)
            lse = torch.empty(B, H, S, device=dev)
            pers = VARIANTS.get(name, {}).get("persistent")

            def run(fn=fn, out=out, lse=lse, p=pers, extra=tuple(mask_args), c=causal, n=nb):
                fn(q, k, v, out, lse, scale, *extra, *persistent_args(D, c, n, dev, p))

            run()
            torch.cuda.synchronize()
            if torch.isnan(out).any():
                print(f"{m} {name}: NaN in the output", file=sys.stderr)
                return 1
            if ref is None:
                ref = out.clone()
            elif not torch.equal(out, ref):
                err = (out.float() - ref.float()).abs().max().item()
                print(f"  {m} {name}: max |out - {variants[0]}| = {err:.3g}", file=sys.stderr)
            runs[name] = run
        med = interleaved_medians(runs, args.rounds, functools.partial(median_ms, reps=args.reps))
        print_row((m, int(causal), nb, visited, partial, rows), med, visited * B * H / sms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
