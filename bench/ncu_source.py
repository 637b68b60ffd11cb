"""Where one fm4 forward kernel spends its warps' time, per SASS instruction and per loop, from
Nsight Compute's source counters: the diagnostic behind sessions 18, 19 and 21's kernel work.

    python -m bench.ncu_source profile --case random_eviction@8192 [--variant default] --out DIR
    python -m bench.ncu_source report DIR/source.csv [--top 40]

``profile`` compiles one ``bench.fwd_perf`` variant (bf16, D = 128, tile lists prebuilt), runs
it once unprofiled, then profiles one call under ``ncu --set full --clock-control none`` and
writes the SASS source page as CSV to DIR/source.csv and the report to DIR/source.txt.
``report`` reads such a CSV (ncu's own lines before the table are skipped) and prints:

* the instructions with the most warp stall samples, with their two main stall reasons;
* the loops: instructions grouped by how often they executed (a loop body's instructions share
  one count), with per group the instruction count, its share of the samples, the stall
  samples per 1000 executions by reason, and the most executed opcodes per execution.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


@dataclass
class Instr:
    """One SASS instruction of the source page."""

    index: int
    source: str
    samples: float
    executed: int
    stalls: dict[str, float] = field(default_factory=dict)

    @property
    def opcode(self) -> str:
        """The opcode with its modifiers, without a guard predicate (``@!P0 BRA x`` -> BRA)."""
        text = re.sub(r"^@!?U?P\w+\s+", "", self.source.strip())
        return text.split()[0] if text else ""


def _num(text: str) -> float:
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return 0.0


def parse(text: str) -> list[Instr]:
    """The instructions of an ncu ``--page source --print-source sass --csv`` output; lines
    before the table's header (ncu's notes, the program's output) are skipped."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"Address"')), None)
    if start is None:
        raise ValueError('no source table: no line starts with "Address" (was it --page source?)')
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    if not rows or SAMPLES not in rows[0] or EXECUTED not in rows[0]:
        raise ValueError(f"the source table lacks {SAMPLES!r} or {EXECUTED!r} (use --set full)")
    stall_cols = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c]
    return [
        Instr(
            i,
            r["Source"],
            _num(r[SAMPLES]),
            int(_num(r[EXECUTED])),
            {k: v for k, v in ((c[len("stall_") :], _num(r[c])) for c in stall_cols) if v > 0},
        )
        for i, r in enumerate(rows)
    ]


@dataclass
class Loop:
    """Instructions that executed equally often: one loop body (or straight-line region)."""

    executed: int
    instrs: list[Instr]

    @property
    def samples(self) -> float:
        return sum(i.samples for i in self.instrs)

    def stalls_per_1000(self) -> Counter:
        out: Counter = Counter()
        for ins in self.instrs:
            for k, v in ins.stalls.items():
                out[k] += v * 1000 / self.executed
        return out

    def opcodes(self) -> Counter:
        return Counter(ins.opcode for ins in self.instrs)


def loops(instrs: list[Instr], min_share: float = 0.02) -> list[Loop]:
    """Groups of instructions by execution count holding at least ``min_share`` of all executed
    instructions, most executed first."""
    groups: dict[int, list[Instr]] = {}
    for ins in instrs:
        if ins.executed > 0:
            groups.setdefault(ins.executed, []).append(ins)
    total = sum(ins.executed for ins in instrs) or 1
    out = [Loop(n, g) for n, g in groups.items() if n * len(g) >= min_share * total]
    return sorted(out, key=lambda lp: -lp.executed * len(lp.instrs))


def report(instrs: list[Instr], top: int = 30) -> str:
    """The text report (see the module docstring)."""
    tot_s = sum(i.samples for i in instrs) or 1.0
    tot_e = sum(i.executed for i in instrs)
    out = [f"{len(instrs)} instructions, {tot_s:.0f} warp samples, {tot_e} warp-level executions"]
    out += ["", f"Top {top} instructions by samples (index, % of samples, executions, stalls):"]
    for ins in sorted(instrs, key=lambda i: -i.samples)[:top]:
        why = ", ".join(f"{k} {v:.0f}" for k, v in Counter(ins.stalls).most_common(2))
        out.append(
            f"{ins.index:6d} {100 * ins.samples / tot_s:5.2f}% {ins.executed:11d}  "
            f"{ins.source.strip()[:58]:58s} [{why}]"
        )
    out += ["", "Loops (instructions executed equally often):"]
    for lp in loops(instrs):
        stalls = lp.stalls_per_1000()
        ops = ", ".join(f"{op} {n}" for op, n in lp.opcodes().most_common(8))
        why = ", ".join(f"{k} {v:.0f}" for k, v in stalls.most_common(6))
        out.append(
            f"- {lp.executed} executions x {len(lp.instrs)} instructions, "
            f"{100 * lp.samples / tot_s:.1f}% of samples; stall samples per 1000 executions: "
            f"{sum(stalls.values()):.0f} ({why})"
        )
        out.append(f"  opcodes per execution: {ops}")
    return "\n".join(out) + "\n"


def _child(args) -> None:
    """Under ncu: the variant on the case, one unprofiled and one profiled call (the kernel
    filter leaves out all but the forward kernel)."""
    from bench.cycles import profile_variants

    profile_variants(args.case, [args.variant], reps=1, jobs=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ncu_source", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--case", required=True, help="MASK@SEQLEN")
    p.add_argument("--variant", default="default", help="a bench.fwd_perf.VARIANTS name")
    p.add_argument("--out", default="ncu_source_out", help="folder for source.csv / source.txt")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    r = sub.add_parser("report")
    r.add_argument("csv", help="a source.csv written by profile (or any ncu source-page CSV)")
    r.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)

    if args.mode == "report":
        with open(args.csv) as f:
            print(report(parse(f.read()), args.top), end="")
        return 0
    if args.child:
        _child(args)
        return 0
    from bench import fwd_perf
    from bench.cycles import parse_cases, run_under_ncu

    if len(parse_cases(args.case, "--case")) != 1:  # parse_cases rejects unknown masks itself
        raise SystemExit(f"--case: one MASK@SEQLEN, got {args.case!r}")
    if args.variant not in fwd_perf.VARIANTS:
        raise SystemExit(f"--variant: unknown {args.variant!r}; known: {sorted(fwd_perf.VARIANTS)}")
    csv_path = os.path.join(args.out, "source.csv")
    flags = [
        "--kernel-name", "regex:FlashMaskFwd",
        "--launch-count", "1",
        "--set", "full",
        "--import-source", "no",
        "--page", "source",
        "--print-source", "sass",
    ]  # fmt: skip
    csv_text = run_under_ncu("bench.ncu_source", argv or sys.argv[1:], flags, csv_path)
    text = report(parse(csv_text), args.top)
    with open(os.path.join(args.out, "source.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
