# ruff: noqa
"""Stall-reason totals of an ncu source CSV (ncu --page source --csv --print-source sass)."""

import csv, sys

rows = list(csv.reader(open(sys.argv[1])))
hdr = rows[1]
data = rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
tot = {}
n_tot = 0
for r in data:
    if len(r) < len(hdr):
        continue
    for h, i in ix.items():
        if h.startswith("stall_") and "Not Issued" not in h:
            try:
                tot[h] = tot.get(h, 0) + int(r[i] or 0)
            except ValueError:
                pass
    try:
        n_tot += int(r[ix["Instructions Executed"]] or 0)
    except ValueError:
        pass
s = sum(tot.values())
print("instructions executed", n_tot, "stall samples", s)
for h, v in sorted(tot.items(), key=lambda x: -x[1])[:14]:
    print(f"  {h:40s} {v:9d} {100 * v / max(s, 1):5.1f}%")
