"""The tables and numbers the README and ``bench/results/README.md`` quote, from a results.json.

    python -m bench.summary bench/results/results.json

Prints three blocks (markdown): the 8K forward and forward + backward table against FA4
mask_mod (the README's), the forward table at every length with FlexAttention and FA4 dense
(the results README's), and the headline numbers: geometric mean of fm4's speedup over FA4
mask_mod per (length, direction), full and causal against FA4 dense, and the lowest row.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from bench.report import Row, geomean, read_json
from bench.suite import fmt_len

FM4, MASK_MOD, DENSE, FLEX = "fm4", "fa4_mask_mod", "fa4_dense", "flex"


def _index(rows: Iterable[Row]) -> dict[tuple[str, int, str, str], Row]:
    """(mask, seqlen, direction, impl) -> timed row."""
    return {(r.mask, r.seqlen, r.direction, r.impl): r for r in rows if r.status == "ok"}


def _masks(rows: Iterable[Row], seqlen: int) -> list[str]:
    out: list[str] = []
    for r in rows:
        if r.seqlen == seqlen and r.mask not in out:
            out.append(r.mask)
    return out


def _cell(r: Row | None) -> str:
    return "-" if r is None else f"{r.ms:.2f} ({r.tflops_block:.0f})"


def _ratio(base: Row | None, r: Row | None) -> float | None:
    return None if base is None or r is None else base.ms / r.ms


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def speedups(rows: list[Row], seqlen: int, direction: str) -> dict[str, float]:
    """mask -> FA4 mask_mod ms / fm4 ms, for the masks where both ran."""
    ix = _index(rows)
    out = {}
    for m in _masks(rows, seqlen):
        v = _ratio(ix.get((m, seqlen, direction, MASK_MOD)), ix.get((m, seqlen, direction, FM4)))
        if v is not None:
            out[m] = v
    return out


def readme_table(rows: list[Row], seqlen: int = 8192) -> list[str]:
    """fm4 against FA4 mask_mod at one length, forward and forward + backward side by side."""
    ix = _index(rows)
    dirs = ("fwd", "fwd+bwd")
    head = ["mask", "density"]
    for d in dirs:
        head += [f"fm4 {d}", f"FA4 mask_mod {d}", f"fm4 / FA4 mm {d}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in _masks(rows, seqlen):
        fm = [ix.get((m, seqlen, d, FM4)) for d in dirs]
        if all(r is None for r in fm):
            continue
        density = next(r.density for r in fm if r is not None)
        cells = [m, f"{density:.3f}"]
        for d, r in zip(dirs, fm, strict=True):
            mm, dense = ix.get((m, seqlen, d, MASK_MOD)), ix.get((m, seqlen, d, DENSE))
            if mm is None and dense is not None:
                vs = f"{_x(_ratio(dense, r))} (vs FA4 dense {_cell(dense)})"
            else:
                vs = _x(_ratio(mm, r))
            cells += [_cell(r), _cell(mm), vs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def long_table(rows: list[Row], direction: str = "fwd") -> list[str]:
    """Every length: fm4, FA4 mask_mod, the speedup, FlexAttention and FA4 dense."""
    ix = _index(rows)
    head = ["mask", "S", "density", "fm4", "FA4 mask_mod", "fm4 / FA4 mm", "FlexAttention"]
    head.append("FA4 dense")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sorted({r.seqlen for r in rows}):
        for m in _masks(rows, s):
            r = ix.get((m, s, direction, FM4))
            if r is None:
                continue
            mm, dense = ix.get((m, s, direction, MASK_MOD)), ix.get((m, s, direction, DENSE))
            vs = _x(_ratio(mm, r)) if mm is not None else f"{_x(_ratio(dense, r))} (vs dense)"
            cells = [m, fmt_len(s), f"{r.density:.3f}", _cell(r), _cell(mm), vs]
            cells += [_cell(ix.get((m, s, direction, FLEX))), _cell(dense)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def headline(rows: list[Row]) -> list[str]:
    """Geometric means per (length, direction), fm4 vs FA4 dense, and the lowest row."""
    ix = _index(rows)
    out = []
    lowest: tuple[float, str] | None = None
    for s in sorted({r.seqlen for r in rows}):
        for d in ("fwd", "fwd+bwd"):
            sp = speedups(rows, s, d)
            if not sp:
                continue
            out.append(
                f"- {fmt_len(s)} {d}: geometric mean {geomean(list(sp.values())):.4f} over "
                f"{len(sp)} masks (range {min(sp.values()):.3f}-{max(sp.values()):.3f})"
            )
            for m, v in sp.items():
                if lowest is None or v < lowest[0]:
                    lowest = (v, f"{m} {fmt_len(s)} {d}")
            for m in ("full", "causal"):
                v = _ratio(ix.get((m, s, d, DENSE)), ix.get((m, s, d, FM4)))
                if v is not None:
                    out.append(f"  - {m}: fm4 / FA4 dense {v:.3f}")
    if lowest is not None:
        out.append(f"- lowest row against FA4 mask_mod: {lowest[1]} {lowest[0]:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    _, rows = read_json(argv[0])
    first = min((r.seqlen for r in rows), default=8192)
    blocks = [readme_table(rows, first), long_table(rows), headline(rows)]
    print("\n\n".join("\n".join(b) for b in blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
