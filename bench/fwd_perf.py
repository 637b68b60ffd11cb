"""Focused forward timing: fm4 kernel variants vs FA4 dense and FA4 mask_mod (H100, D=128).

    python -m bench.fwd_perf [--seqlen 8192] [--masks full,causal,...] [--variants base,asm]
    python -m bench.fwd_perf --compile-only   # CPU: compile every variant for sm_90a, no GPU
    python -m bench.fwd_perf --masks causal,document --variants default,v2 --jobs 16 --rounds 3 \
        --peers none --check   # compile in 16 processes first; interleaved rounds; fm4 only
    FM4_CACHE_DIR=/tmp/c python -m bench.fwd_perf --warm-cache --jobs 16   # before GPU tests

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

from fm4.cute_kernels.fwd_launch import FWD_TEST_KNOBS

# name -> FlashMaskFwdSm90 keyword arguments
_V2_SPLIT = {"mask_impl": "v2", "mask_at": "split", "mask_guard": True}
_V2_LATE = {"mask_impl": "v2", "mask_at": "late", "mask_guard": True}
VARIANTS: dict[str, dict] = {
    "default": {},  # the tuning table's choices
    # one CTA per tile instead of a persistent CTA per SM (the default up to session 2)
    "single_tile": {"persistent": False},
    # persistent, next tile claimed after the current tile's loads / a static stride
    "claim_late": {"claim": "late"},
    "claim_static": {"claim": "static"},
    # persistent, heads grouped to fit L2, the last m_blocks of the group's heads first
    "lpt": {"order": "lpt"},
    # a tile's first block: mask bits before its Q K^T is issued (the default until session 6)
    "first_early": {"first_bits": "early"},
    "base": {"p_cvt_asm": False, "rescale_o_before_pv": False, "mask_impl": "v1"},
    "asm": {"p_cvt_asm": True, "rescale_o_before_pv": False, "mask_impl": "v1"},
    "asm_early_rescale": {"p_cvt_asm": True, "rescale_o_before_pv": True, "mask_impl": "v1"},
    # asm P conversion only in the loop over unmasked blocks (first / partial blocks: .to)
    "asm_unmasked": {"p_cvt_asm": "unmasked", "mask_impl": "v1"},
    # leaner mask bits (vector bound loads, threshold bits, next block index read ahead)
    "v2": {"p_cvt_asm": False, "mask_impl": "v2"},
    "v2_asm": {"p_cvt_asm": True, "mask_impl": "v2"},
    # ... bounds loaded early, bits made after the GEMMs are issued (guarded branch)
    "v2_split": {"p_cvt_asm": False, **_V2_SPLIT},
    "v2_split_asm": {"p_cvt_asm": True, **_V2_SPLIT},
    "v2_split_asm_unmasked": {"p_cvt_asm": "unmasked", **_V2_SPLIT},
    # ... bounds loaded and bits made after the GEMMs are issued
    "v2_late": {"p_cvt_asm": False, **_V2_LATE},
    "v2_late_asm": {"p_cvt_asm": True, **_V2_LATE},
    # the P V wait after the exp2 of N columns per row (Note [P V wait] in fwd_sm90; default 12)
    **{f"pvw{n}": {"pv_wait_after": n} for n in (4, 8, 16)},
    # bound words one block ahead, bits made after the GEMMs are issued (guarded branch)
    "prefetch_late": {"bound_prefetch": True, "mask_at": "late", "mask_guard": True},
}


# The experimental knob sets the GPU tests run (fm4.cute_kernels.fwd_launch.FWD_TEST_KNOBS):
# per-warpgroup O store, next tile's first Q K^T with this tile's last P V, first mask bits
# only with a partial block.
VARIANTS.update({k: v for k, v in FWD_TEST_KNOBS.items() if k != "single_tile"})
#: (causal, n_bounds) of every forward / backward kernel configuration.
KERNEL_MODES = ((False, 0), (True, 0), (True, 1), (True, 2), (False, 2), (False, 4))


def kernel_mask_args(mask, head_dim: int) -> list:
    """The forward kernel's six mask arguments for a registry mask (its bounds, forward tile
    lists and bound codes, built here; six Nones without bounds)."""
    from fm4.cute_kernels.fwd_launch import fwd_mask_args, tile_shape
    from fm4.masks.tiles import build_tile_lists

    sri = mask.startend_row_indices
    if sri is None:
        return [None] * 6
    sq, sk = mask.seqlen_q, mask.seqlen_k
    tl = build_tile_lists(sri, bool(mask.causal), sq, sk, *tile_shape(head_dim), backward=False)
    return fwd_mask_args(sri, tl)


def compile_variant(head_dim: int, causal: bool, n_bounds: int, arch: str | None, **kw):
    """Compile one fm4 forward variant (bf16) for ``arch`` (None: the visible GPU)."""
    from fm4.cute_kernels.fwd_launch import _compile_fwd

    return _compile_fwd("BFloat16", head_dim, causal, n_bounds, arch=arch, **kw)


def compile_to_file(job: tuple) -> str:
    """Worker: compile one ``(head_dim, causal, n_bounds, arch, path, knobs)`` forward kernel
    and export it as an object file (``arch`` given: compiles without a GPU)."""
    import os

    head_dim, causal, nb, arch, path, knobs = job
    if arch:
        os.environ.setdefault("CUTE_DSL_ARCH", arch)
    fn = compile_variant(head_dim, causal, nb, arch, **knobs)
    fn.export_to_c(object_file_path=path, function_name="func")
    return path


def object_files(folder: str) -> list[tuple[str, bool, int, str]]:
    """``(name, causal, n_bounds, path)`` of the ``NAME-CAUSAL-NB.o`` kernels in ``folder``."""
    import glob
    import os

    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.o"))):
        name, causal, nb = os.path.basename(path)[:-2].rsplit("-", 2)
        out.append((name, causal == "1", int(nb), path))
    return out


def compile_all(keys: list, head_dim: int, arch: str, jobs: int) -> dict:
    """Compile (variant, causal, n_bounds) keys in ``jobs`` processes; load them here."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import tempfile

    import cutlass.cute as cute

    folder = tempfile.mkdtemp(prefix="fwd_perf_")
    work = [
        (head_dim, causal, nb, arch, f"{folder}/{name}-{int(causal)}-{nb}.o", VARIANTS[name])
        for name, causal, nb in keys
    ]
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        paths = list(ex.map(compile_to_file, work))
    return {
        key: cute.runtime.load_module(path, enable_tvm_ffi=True)["func"]
        for key, path in zip(keys, paths, strict=True)
    }


def _warm_one(job: tuple) -> tuple:
    """Worker: compile one launcher configuration ``(key, knobs)`` into the disk cache
    (``FM4_CACHE_DIR``), under the key ``attention_fwd_sm90`` looks up."""
    from fm4.cute_kernels.compile_utils import compile_key, get_or_compile
    from fm4.cute_kernels.fwd_launch import _compile_fwd

    key, knobs = job
    get_or_compile(
        {}, compile_key(key, knobs), lambda: _compile_fwd(*key, **knobs), name="fwd_sm90"
    )
    return job


def warm_in_processes(worker, jobs_list: list, jobs: int, what: str) -> int:
    """Run ``worker`` (a module-level compile-into-the-disk-cache function) on every item of
    ``jobs_list`` in ``jobs`` spawned processes; needs ``FM4_CACHE_DIR``. Exit code."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import os
    import time

    if not os.environ.get("FM4_CACHE_DIR"):
        print("--warm-cache needs FM4_CACHE_DIR", file=sys.stderr)
        return 1
    t0 = time.time()
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        list(ex.map(worker, jobs_list))
    print(f"warmed {len(jobs_list)} {what} kernels in {time.time() - t0:.0f} s", flush=True)
    return 0


def warm_cache(jobs: int, bf16_d128_only: bool = False) -> int:
    """Compile every default forward configuration the launcher can ask for, and the GPU
    tests' knob sets (``FWD_TEST_KNOBS``, bf16, D = 128), into the disk cache, in ``jobs``
    processes (GPU test runs then load instead of compiling serially). ``bf16_d128_only``: the
    six default bf16, D = 128 kernels alone (what the benchmarks use)."""
    from fm4.cute_kernels.compile_utils import compile_key
    from fm4.cute_kernels.fwd_launch import fwd_knobs

    keys = [
        ((dt, d, causal, nb), {})
        for dt in ("BFloat16", "Float16")
        for d in (64, 128, 256)
        for causal, nb in KERNEL_MODES
    ]
    keys += [
        (("BFloat16", 128, causal, nb), knobs)
        for knobs in FWD_TEST_KNOBS.values()
        for causal, nb in KERNEL_MODES
    ]
    # Knobs as the launcher keys them (a knob set equal to a mode's default is the default
    # kernel), each compile key once.
    keys = [(key, fwd_knobs(*key[1:], kn)) for key, kn in keys]
    keys = list({compile_key(key, kn): (key, kn) for key, kn in keys}.values())
    if bf16_d128_only:
        keys = [(key, kn) for key, kn in keys if key[:2] == ("BFloat16", 128) and not kn]
    return warm_in_processes(_warm_one, keys, jobs, "forward")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=0, help="0: 16 * 8192 / seqlen")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--masks", default="full,causal,prefix_lm_causal,qk_sparse")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument(
        "--warmup-ms",
        type=float,
        default=1000.0,
        help="untimed GPU time of each run before each timed round (the H100 is power-limited:"
        " bench.timing; 0 for a quick look)",
    )
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--check", action="store_true", help="compare each variant with the first")
    ap.add_argument("--jobs", type=int, default=0, help="compile in this many processes first")
    ap.add_argument(
        "--rounds", type=int, default=1, help="time all variants this many times, interleaved"
    )
    ap.add_argument("--peers", default="fa4_dense,fa4_mask_mod", help="'none' for fm4 only")
    ap.add_argument(
        "--show-rounds", action="store_true", help="print each round's time of each run (stderr)"
    )
    ap.add_argument(
        "--objects",
        default="",
        help="folder of kernels compiled elsewhere (e.g. from an older commit, for sm_90a):"
        " NAME-CAUSAL-NB.o files, timed as variant 'obj:NAME' with the pre-persistent"
        " argument list (no max_ctas / tile counter)",
    )
    ap.add_argument(
        "--warm-cache",
        action="store_true",
        help="only fill FM4_CACHE_DIR with every default forward kernel and the GPU tests'"
        " knob sets (--jobs processes)",
    )
    ap.add_argument(
        "--bf16-d128-only", action="store_true", help="--warm-cache: bf16 D=128 defaults only"
    )
    args = ap.parse_args(argv)
    if args.warm_cache:
        return warm_cache(max(args.jobs, 1), args.bf16_d128_only)
    variants = args.variants.split(",")
    masks = args.masks.split(",")
    peers = [] if args.peers == "none" else args.peers.split(",")
    D = 128

    if args.compile_only:
        for name in variants:
            for causal, nb in KERNEL_MODES:
                compile_variant(D, causal, nb, "sm_90a", **VARIANTS[name])
                print(f"compiled {name} causal={causal} n_bounds={nb}", flush=True)
        return 0

    import torch

    from bench import variant_table
    from bench.flops import mask_work
    from bench.peers import Fa4Dense, Fa4MaskMod, make_inputs
    from bench.suite import Case
    from bench.timing import interleaved_medians, time_cuda
    from fm4.cute_kernels.fwd_launch import persistent_args
    from fm4.masks.registry import MASKS

    dev = torch.device("cuda")
    S = args.seqlen
    B = args.batch or max(1, 16 * 8192 // S)
    H = args.heads
    compiled: dict = {}
    rows = []
    if args.jobs > 0:
        import time

        t0 = time.time()
        modes = sorted({(MASKS[m].causal, MASKS[m].n) for m in masks})
        keys = [
            (name, causal, nb)
            for name in variants
            if not name.startswith("obj:")
            for causal, nb in modes
        ]
        compiled = compile_all(keys, D, "sm_90a", args.jobs)
        print(f"compiled {len(keys)} kernels in {time.time() - t0:.0f} s", flush=True)
    if args.objects:
        import cutlass.cute as cute

        for name, causal, nb, path in object_files(args.objects):
            key = (f"obj:{name}", causal, nb)
            compiled[key] = cute.runtime.load_module(path, enable_tvm_ffi=True)["func"]

    def timed(fn) -> float:
        return time_cuda(
            fn, warmup=2, warmup_ms=args.warmup_ms, min_reps=args.reps, max_reps=args.reps
        ).median_ms

    for mask in masks:
        case = Case(mask, S, B, H, H, D)
        inp = make_inputs(case, dev)
        q, k, v = (t.detach() for t in (inp.q, inp.k, inp.v))
        m = inp.mask
        sri = m.startend_row_indices
        causal = bool(m.causal)
        nb = 0 if sri is None else sri.shape[-1]
        mask_args = kernel_mask_args(m, D)
        work = mask_work(m, B, H, D)
        flops = work.flops_block("fwd")
        row = {"mask": mask, "density": work.density}
        out_ref = None
        scale = 1.0 / math.sqrt(D)
        runs = {}
        for name in variants:
            key = (name, causal, nb)
            if key not in compiled:
                compiled[key] = compile_variant(D, causal, nb, None, **VARIANTS[name])
            fn = compiled[key]
            out = torch.empty_like(q)
            lse = torch.empty(B, H, S, dtype=torch.float32, device=dev)

            old = name.startswith("obj:")
            pers = None if old else VARIANTS[name].get("persistent")
            extra = (scale, *mask_args)
            mode = (causal, nb)

            def run(fn=fn, out=out, lse=lse, qkv=(q, k, v), extra=extra, p=pers, o=old, m=mode):
                # A persistent kernel's tile counter is zeroed for every launch (a memset).
                fn(*qkv, out, lse, *extra, *(() if o else persistent_args(D, *m, dev, p)))

            run()
            torch.cuda.synchronize()
            if out_ref is None:
                out_ref = out.clone()
            elif args.check:
                err = (out.float() - out_ref.float()).abs().max().item()
                row[f"{name}_maxdiff"] = err
            runs[name] = run
        peer_impls = [(Fa4Dense, "fa4_dense"), (Fa4MaskMod, "fa4_mask_mod")]
        for impl_cls, label in [p for p in peer_impls if p[1] in peers]:
            impl = impl_cls(dev)
            ok, _ = impl.available()
            app, _ = impl.applies(case)
            if ok and app:
                try:
                    fn = impl.prepare(inp)
                    with torch.no_grad():
                        fn()

                    def run_peer(fn=fn):
                        with torch.no_grad():
                            fn()

                    runs[label] = run_peer
                except Exception as e:  # report and go on
                    row[label] = float("nan")
                    print(f"{label} {mask}: {type(e).__name__}: {e}"[:300], file=sys.stderr)
        # Rounds: every variant and peer timed once per round, in a rotated order (drift and
        # order effects spread over them); the reported time is the median over rounds.
        if args.show_rounds:
            # Every round's time of every run, in the order timed (on stderr).
            names = {id(r): n for n, r in runs.items()}

            def timed_shown(fn, mask=mask, names=names) -> float:
                t = timed(fn)
                print(f"  {mask} {names[id(fn)]}: {t:.3f} ms", file=sys.stderr, flush=True)
                return t

            row.update(interleaved_medians(runs, args.rounds, timed_shown))
        else:
            row.update(interleaved_medians(runs, args.rounds, timed))
        row["gflop"] = flops / 1e9
        rows.append(row)
        del inp, q, k, v
        torch.cuda.empty_cache()

    cols = [*variants, *peers]
    print(
        f"\nS={S} B={B} H={H} D={D} bf16, {torch.cuda.get_device_name()}, median ms "
        f"(TFLOP/s) over {args.rounds} round(s) of {args.reps} reps"
    )
    print("\n".join(variant_table.header(cols, "best fm4 / FA4")))
    for r in rows:
        print(variant_table.row_line(r, cols, variants))
    if len(variants) > 1:
        first = variants[0]
        print(f"\ntime / time of {first} (same run):")
        print("| mask | " + " | ".join(variants[1:]) + " |")
        print("|---|" + "---|" * (len(variants) - 1))
        for r in rows:
            cells = [f"{r[v] / r[first]:.3f}" for v in variants[1:]]
            print(f"| {r['mask']} | " + " | ".join(cells) + " |")
    for r in rows:
        diffs = {k: v for k, v in r.items() if k.endswith("_maxdiff")}
        if diffs:
            print(f"{r['mask']}: max |out - {variants[0]}|:", diffs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
