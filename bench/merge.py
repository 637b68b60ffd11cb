"""Combine the results of several ``python -m bench`` runs into one results folder.

    python -m bench.merge RUN_DIR [RUN_DIR ...] --out DIR [--no-plots]

For a plan too long for one device call: run parts of it (e.g. ``--seqlens 8K`` and
``--seqlens 32K,128K --masks full,causal,...``) on the same machine, then merge. Each case
(mask, length, head dim, heads, direction) must come whole from one run, because a row's
speedup is against its own run's baseline: a case found in two runs is an error, and so are
runs from different devices or library versions. The merged ``results.json`` keeps every run's
metadata under ``meta["merged_from"]``; the rows, CSV, table and plots are written as
``python -m bench`` writes them.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.report import Row, read_json, write_all


def merge_runs(runs: list[tuple[dict, list[Row]]]) -> tuple[dict, list[Row]]:
    """(meta, rows) of each run -> merged (meta, rows). Raises ValueError on a case present in
    two runs or on runs whose device / versions differ."""
    if not runs:
        raise ValueError("merge needs at least one run")
    first = runs[0][0]
    for i, (meta, _) in enumerate(runs[1:], start=1):
        for field in ("device", "versions"):
            if meta.get(field) != first.get(field):
                raise ValueError(
                    f"run {i}'s {field} {meta.get(field)!r} differs from run 0's "
                    f"{first.get(field)!r}: merge only runs of one machine and one install"
                )
    owner: dict[tuple, int] = {}
    rows: list[Row] = []
    for i, (_, run_rows) in enumerate(runs):
        for key in {r.key for r in run_rows}:
            if key in owner:
                raise ValueError(
                    f"case {key} is in run {owner[key]} and run {i}: each case must come from "
                    "one run (its speedups are against that run's baseline)"
                )
            owner[key] = i
        rows.extend(run_rows)
    meta = {
        "command": " + ".join(m.get("command", "?") for m, _ in runs),
        "device": first.get("device"),
        "versions": first.get("versions"),
        "git_commit": sorted({str(m.get("git_commit")) for m, _ in runs}),
        "merged_from": [m for m, _ in runs],
    }
    return meta, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.merge", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="results folders (each with results.json)")
    ap.add_argument("--out", required=True, help="folder for the merged results")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    runs = []
    for d in args.runs:
        path = os.path.join(d, "results.json")
        if not os.path.exists(path):
            print(f"{d}: no results.json (a folder written by python -m bench)", file=sys.stderr)
            return 2
        runs.append(read_json(path))
    try:
        meta, rows = merge_runs(runs)
    except ValueError as e:
        print(f"bench.merge: {e}", file=sys.stderr)
        return 2
    paths = list(write_all(args.out, rows, meta).values())
    if not args.no_plots:
        from bench.plots import write_plots

        paths += write_plots(rows, args.out)
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
