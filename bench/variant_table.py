"""The markdown table that ``bench.fwd_perf`` and ``bench.bwd_perf`` print: one row per mask,
each fm4 variant's and each peer's median ms with its TFLOP/s, and the best fm4 variant
against FA4 (mask_mod, else dense)."""

from __future__ import annotations


def header(cols: list[str], ratio_label: str) -> list[str]:
    """The table's two header lines."""
    top = "| mask | " + " | ".join(cols) + f" | {ratio_label} |"
    return [top, "|---|" + "---|" * (len(cols) + 1)]


def row_line(r: dict, cols: list[str], variants: list[str]) -> str:
    """One mask's line; ``r`` has "mask", "gflop" and a median ms per timed column (a column
    that is missing or NaN prints "-")."""
    cells = []
    for c in cols:
        t = r.get(c)
        cells.append("-" if t is None or t != t else f"{t:.2f} ({r['gflop'] / t:.0f})")
    best = min(r[v] for v in variants)
    peer = r.get("fa4_mask_mod") or r.get("fa4_dense")
    ratio = f"{peer / best:.3f}x" if peer else "-"
    return f"| {r['mask']} | " + " | ".join(cells) + f" | {ratio} |"
