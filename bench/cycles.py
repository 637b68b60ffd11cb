"""SM cycles per call of fm4 and its peers, from Nsight Compute: a clock-independent A/B.

On the lent H100 the SM clock follows power (averaged over one attention kernel under ncu:
1.3 to 1.8 GHz; 1.98 GHz at most), and wall-clock medians of one and the same kernel, timed
under two names in one interleaved run, differed by 3 to 10% (session 10, NOTES.md). Elapsed
SM cycles of a compute-bound kernel do not depend on the clock: the same kernel repeats to
about 0.3%. This tool counts them for each profiled call, summed over the call's kernels
(fm4's tile-list kernels included). It is a diagnostic next to ``python -m bench``
(wall-clock, what users see), not a replacement.

    python -m bench.cycles peers [--cases causal@32768,document@32768] --out DIR
    python -m bench.cycles variants --variants default,qk_desc_view [--cases ...] --out DIR
    python -m bench.cycles report DIR/cycles.csv

``peers`` profiles ``fm4.attention`` (tile lists built inside the call), FA4 mask_mod (block
mask built outside) and FA4 dense where they apply, over the default plan's forward cases (or
``--cases``). ``variants`` profiles ``bench.fwd_perf`` kernel variants (``--variants``, names
of ``bench.fwd_perf.VARIANTS``; tile lists prebuilt) on the given cases. Each runs itself
under ``ncu --profile-from-start off --clock-control none`` (clocks left alone): every
profiled call, after one unprofiled warm-up call, is a profiler start / stop segment opened by
a ``spin_kernel`` (``torch.cuda._sleep``), and its label is printed as a ``SEG`` line. The
ncu CSV goes to DIR/cycles.csv, the table to DIR/cycles.md (and stdout).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from bench.report import geomean

METRICS = ("sm__cycles_elapsed.max", "gpu__time_duration.sum", "sm__cycles_elapsed.avg.per_second")
SEGMENT_MARKER = "spin_kernel"


def _default_cases() -> list[str]:
    """The default plan's forward cases (``bench.cli.DEFAULT_PLAN``) as MASK@SEQLEN."""
    from bench.cli import DEFAULT_PLAN

    return [f"{m}@{s}" for s, masks in DEFAULT_PLAN for m in masks]


@dataclass
class Segment:
    """One profiled call: its case label, implementation or variant, and kernels (name,
    metric -> value)."""

    case: str
    impl: str
    kernels: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    def total(self, metric: str = "sm__cycles_elapsed.max") -> float:
        return sum(k[1].get(metric, 0.0) for k in self.kernels)


def parse(text: str) -> list[Segment]:
    """Segments from ncu ``--csv`` output interleaved with the driver's ``SEG case impl`` lines.

    The ncu rows (one per kernel and metric, in launch order) are cut at every
    ``spin_kernel``; the n-th cut gets the n-th SEG line's label.
    """
    seg_lines = [ln.split("\t")[1:] for ln in text.splitlines() if ln.startswith("SEG\t")]
    rows = list(
        csv.DictReader(io.StringIO("\n".join(ln for ln in text.splitlines() if ln[:1] == '"')))
    )
    kernels: dict[int, tuple[str, dict[str, float]]] = {}
    for r in rows:
        kid = int(r["ID"])
        name, metrics = kernels.setdefault(kid, (r["Kernel Name"], {}))
        metrics[r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
    groups: list[list] = []
    for kid in sorted(kernels):
        name, metrics = kernels[kid]
        if SEGMENT_MARKER in name:
            groups.append([])
        elif groups:
            groups[-1].append((name, metrics))
        else:
            raise ValueError(f"kernel {name!r} (ID {kid}) before the first {SEGMENT_MARKER}")
    if len(groups) != len(seg_lines):
        raise ValueError(
            f"{len(groups)} profiled segments but {len(seg_lines)} SEG lines: the ncu output and"
            " the driver's labels do not match"
        )
    return [Segment(c, i, g) for (c, i), g in zip(seg_lines, groups, strict=True)]


def table(segments: list[Segment]) -> str:
    """Markdown: per case, each implementation's (or variant's) Mcycles per call (the median
    over its segments) and its ratio to the reference's: fm4 when fm4 is among them (peers:
    ``peer / fm4``, above 1 means fm4 takes fewer cycles), otherwise the first variant
    (``variant / first``, above 1 means the variant takes more)."""
    by: dict[str, dict[str, list[Segment]]] = {}
    for s in segments:
        by.setdefault(s.case, {}).setdefault(s.impl, []).append(s)
    impls: list[str] = []
    for s in segments:
        if s.impl not in impls:
            impls.append(s.impl)
    peers_mode = "fm4" in impls
    ref = "fm4" if peers_mode else impls[0]
    others = [i for i in impls if i != ref]
    head = "peer Mcyc / fm4 Mcyc" if peers_mode else f"Mcyc / {ref}'s Mcyc"
    lines = [
        f"SM cycles per call (sm__cycles_elapsed.max summed over the call's kernels), Mcycles; "
        f"ratio: {head}.",
        "",
        "| " + " | ".join(["case", ref, *others, *(f"{o} ratio" for o in others)]) + " |",
        "|---|" + "---|" * (1 + 2 * len(others)),
    ]
    ratios: dict[str, list[tuple[str, float]]] = {o: [] for o in others}
    for case, d in by.items():
        med = {i: statistics.median([s.total() for s in d[i]]) for i in d}
        cells = [f"{med[i] / 1e6:.2f}" if i in med else "-" for i in [ref, *others]]
        rcells = []
        for o in others:
            if o in med and ref in med and med[ref] > 0:
                r = med[o] / med[ref]
                ratios[o].append((case.partition("@")[2], r))
                rcells.append(f"{r:.3f}")
            else:
                rcells.append("-")
        lines.append(f"| {case} | " + " | ".join(cells + rcells) + " |")
    lines.append("")
    for o, rs in ratios.items():
        groups = {"all": [r for _, r in rs]}
        for seqlen in dict.fromkeys(sl for sl, _ in rs):
            groups[f"@{seqlen}"] = [r for sl, r in rs if sl == seqlen]
        if len(groups) == 2:  # one sequence length: "all" says it
            groups = {"all": groups["all"]}
        for g, vals in groups.items():
            if vals:
                gm = geomean(vals)
                lines.append(f"- {o}, {g}: geometric mean of the ratio over {len(vals)}: {gm:.3f}")
    return "\n".join(lines) + "\n"


def parse_cases(spec: str | None, flag: str = "--cases") -> list:
    """``MASK@SEQLEN,...`` (None: the default plan's forward cases) as benchmark Cases (bf16
    shapes of the benchmark: its batch for the length, its head count, D = 128)."""
    from bench.suite import NUM_HEADS, Case, batch_for
    from fm4.masks.registry import MASKS

    out = []
    for item in spec.split(",") if spec else _default_cases():
        mask, _, s = item.partition("@")
        if mask not in MASKS or not s.isdigit():
            raise SystemExit(f"{flag}: {item!r} is not MASK@SEQLEN with a registered mask")
        seqlen = int(s)
        out.append(Case(mask, seqlen, batch_for(seqlen), NUM_HEADS, NUM_HEADS, 128))
    return out


def _profiled(fn, case_label: str, impl: str) -> None:
    import torch

    with torch.no_grad():
        fn()  # warm-up, not profiled
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    torch.cuda._sleep(1000)
    with torch.no_grad():
        fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"SEG\t{case_label}\t{impl}", flush=True)


def _child_peers(args) -> None:
    import torch

    from bench.peers import Fa4Dense, Fa4MaskMod, Fm4, make_inputs

    dev = torch.device("cuda")
    for case in parse_cases(args.cases):
        inp = make_inputs(case, dev)
        for cls in (Fm4, Fa4MaskMod, Fa4Dense):
            impl = cls(dev)
            if impl.available()[0] and impl.applies(case)[0]:
                _profiled(impl.prepare(inp), f"{case.mask}@{case.seqlen}", impl.name)
        del inp
        torch.cuda.empty_cache()


def _child_variants(args) -> None:
    profile_variants(args.cases, args.variants.split(","), args.reps, args.jobs)


def profile_variants(cases_spec: str | None, variants: list[str], reps: int, jobs: int) -> None:
    """Under ncu: each ``bench.fwd_perf`` variant on each case (``parse_cases``), ``reps``
    profiled calls after one unprofiled warm-up (tile lists built outside the calls), each
    opened by a spin kernel and labelled by a SEG line."""
    import torch

    from bench import fwd_perf
    from bench.peers import make_inputs
    from fm4.cute_kernels.fwd_launch import persistent_args
    from fm4.masks.registry import MASKS

    unknown = [v for v in variants if v not in fwd_perf.VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(fwd_perf.VARIANTS)}")
    cases = parse_cases(cases_spec)
    d = 128
    modes = sorted({(bool(MASKS[c.mask].causal), MASKS[c.mask].n) for c in cases})
    keys = [(v, c, nb) for v in variants for c, nb in modes]
    compiled = fwd_perf.compile_all(keys, d, "sm_90a", max(1, jobs))
    dev = torch.device("cuda")
    for case in cases:
        inp = make_inputs(case, dev)
        m = inp.mask
        causal = bool(m.causal)
        nb = 0 if m.startend_row_indices is None else m.startend_row_indices.shape[-1]
        extra = fwd_perf.kernel_mask_args(m, d)
        out = torch.empty_like(inp.q)
        lse = torch.empty(case.batch, case.heads, case.seqlen, dtype=torch.float32, device=dev)
        fixed = (inp.q, inp.k, inp.v, out, lse, 1 / math.sqrt(d), *extra)
        for v in variants:
            fn = compiled[(v, causal, nb)]
            pers = fwd_perf.VARIANTS[v].get("persistent")

            def run(fn=fn, pers=pers, mode=(causal, nb), fixed=fixed):
                # a fresh (zeroed) tile counter for every launch of a persistent kernel
                fn(*fixed, *persistent_args(d, *mode, dev, pers))

            for _ in range(reps):
                _profiled(run, f"{case.mask}@{case.seqlen}", v)
        del inp
        torch.cuda.empty_cache()


def run_under_ncu(module: str, argv: list[str], flags: list[str], csv_path: str) -> str:
    """Run ``python -m module *argv --child`` under ncu (profiling from start off, clocks left
    alone, ``flags``, CSV output), write the output to ``csv_path`` (its folder is made) and
    return it."""
    ncu = shutil.which("ncu")
    if ncu is None:
        raise SystemExit(f"ncu (Nsight Compute) is not on PATH: {module} needs it")
    os.makedirs(os.path.dirname(csv_path) or ".", exist_ok=True)
    cmd = [
        ncu,
        "--profile-from-start", "off",
        "--clock-control", "none",
        "--target-processes", "application-only",
        *flags,
        "--csv",
        sys.executable, "-m", module, *argv, "--child",
    ]  # fmt: skip
    with open(csv_path, "w") as f:
        res = subprocess.run(cmd, stdout=f, text=True)
    if res.returncode != 0:
        raise SystemExit(f"ncu exited with {res.returncode}; its output: {csv_path}")
    with open(csv_path) as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cycles", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("peers", "variants"):
        p = sub.add_parser(mode)
        p.add_argument("--cases", help="MASK@SEQLEN,... (default: the default plan's forward)")
        p.add_argument("--out", default="cycles_out", help="folder for cycles.csv / cycles.md")
        p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
        if mode == "variants":
            p.add_argument("--variants", required=True, help="bench.fwd_perf.VARIANTS names")
            p.add_argument("--reps", type=int, default=1, help="profiled calls per variant")
            p.add_argument("--jobs", type=int, default=8, help="compile processes")
    r = sub.add_parser("report")
    r.add_argument("csv", help="a cycles.csv written by peers / variants")
    args = ap.parse_args(argv)

    if args.mode == "report":
        with open(args.csv) as f:
            print(table(parse(f.read())), end="")
        return 0
    if args.child:
        (_child_peers if args.mode == "peers" else _child_variants)(args)
        return 0
    csv_path = os.path.join(args.out, "cycles.csv")
    text = run_under_ncu(
        "bench.cycles", argv or sys.argv[1:], ["--metrics", ",".join(METRICS)], csv_path
    )
    md = table(parse(text))
    with open(os.path.join(args.out, "cycles.md"), "w") as f:
        f.write(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
