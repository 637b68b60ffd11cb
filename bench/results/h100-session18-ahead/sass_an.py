# ruff: noqa
"""Summarise an ncu source page (SASS) CSV: python scratch/sass_an.py FILE.csv [top]"""

import csv
import sys

f = open(sys.argv[1])
first = f.readline()
if not first.startswith('"Kernel Name'):
    f.seek(0)
rows = list(csv.DictReader(f))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
if not rows:
    print("no rows")
    sys.exit()
cols = [c for c in rows[0].keys() if c]


def col(*names):
    for nm in names:
        for c in cols:
            if c and c.lower().startswith(nm.lower()):
                return c
    return None


c_src = col("Source")
c_samp = col("Warp Stall Sampling (All", "Sampling Data (All")
c_exec = col("Instructions Executed")
c_addr = col("Address")


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return 0.0


tot_s = sum(num(r[c_samp]) for r in rows) if c_samp else 0
tot_e = sum(num(r[c_exec]) for r in rows) if c_exec else 0
print(f"instructions {len(rows)} samples {tot_s:.0f} executed(warp-level) {tot_e:.0f}")
stall_cols = [c for c in cols if c.startswith("stall_") or "Stall" in c and c != c_samp]
print("by samples:")
for i, r in sorted(enumerate(rows), key=lambda t: -num(t[1][c_samp]))[:top]:
    reasons = sorted(((num(r[c]), c) for c in stall_cols if num(r[c]) > 0), reverse=True)[:2]
    print(f"{i:5d} {num(r[c_samp]):8.0f} n={num(r[c_exec]):10.0f}  {r[c_src][:60]:60s} {reasons}")
print("by executed:")
for i, r in sorted(enumerate(rows), key=lambda t: -num(t[1][c_exec]))[:top]:
    print(f"{i:5d} {num(r[c_samp]):8.0f} n={num(r[c_exec]):10.0f}  {r[c_src][:60]}")
