"""PNG plots: speedup bars per mask and length, and a radar chart per length.

The radar follows the style FlashMask publishes: one axis per mask, the radius is TFLOP/s
(counted by block density), one polygon per implementation. matplotlib is imported lazily; without
it the plots are skipped with a message.
"""

from __future__ import annotations

import math
import os

from bench.report import Row
from bench.suite import fmt_len

COLORS = {
    "fm4": "#d62728",
    "fa4_mask_mod": "#1f77b4",
    "flex": "#2ca02c",
    "flex_flash": "#9467bd",
    "fa4_dense": "#7f7f7f",
    "sdpa": "#bcbd22",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(rows: list[Row], direction: str) -> list[Row]:
    return [r for r in rows if r.status == "ok" and r.direction == direction]


def speedup_bars(rows: list[Row], path: str, *, direction: str = "fwd") -> str | None:
    """Bars of speedup over FA4 mask_mod per mask, one panel per length. Returns the path."""
    ok = [r for r in _ok(rows, direction) if r.impl != "fa4_mask_mod" and not math.isnan(r.speedup)]
    if not ok:
        return None
    plt = _plt()
    lengths = sorted({r.seqlen for r in ok})
    impls = [i for i in COLORS if any(r.impl == i for r in ok)]
    fig, axes = plt.subplots(
        len(lengths), 1, figsize=(12, 3.2 * len(lengths)), squeeze=False, constrained_layout=True
    )
    for ax, s in zip(axes[:, 0], lengths, strict=True):
        sub = [r for r in ok if r.seqlen == s]
        masks = list(dict.fromkeys(r.mask for r in sub))
        width = 0.8 / max(1, len(impls))
        for k, impl in enumerate(impls):
            vals = []
            for m in masks:
                hit = [r.speedup for r in sub if r.mask == m and r.impl == impl]
                vals.append(hit[0] if hit else 0.0)
            xs = [i + (k - (len(impls) - 1) / 2) * width for i in range(len(masks))]
            ax.bar(xs, vals, width, label=impl, color=COLORS.get(impl))
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(masks)))
        ax.set_xticklabels(masks, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("speedup vs FA4 mask_mod")
        ax.set_title(f"S = {fmt_len(s)}, {direction}")
        ax.legend(fontsize=8, ncol=len(impls))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def radar(rows: list[Row], path: str, seqlen: int, *, direction: str = "fwd") -> str | None:
    """Radar chart of TFLOP/s (block density) per mask, one polygon per implementation."""
    sub = [r for r in _ok(rows, direction) if r.seqlen == seqlen]
    # Axes: the masked cases (FA4 mask_mod's or fm4's); polygons: the impls that run them all.
    masked = {r.mask for r in sub if r.impl in ("fa4_mask_mod", "fm4")}
    masks = [m for m in dict.fromkeys(r.mask for r in sub) if m in masked]
    if len(masks) < 3:
        return None
    plt = _plt()
    impls = [i for i in COLORS if all(any(r.impl == i and r.mask == m for r in sub) for m in masks)]
    angles = [2 * math.pi * i / len(masks) for i in range(len(masks))]
    fig = plt.figure(figsize=(6.5, 6.5))
    ax = fig.add_subplot(111, polar=True)
    for impl in impls:
        vals = []
        for m in masks:
            hit = [r.tflops_block for r in sub if r.mask == m and r.impl == impl]
            vals.append(hit[0] if hit and not math.isnan(hit[0]) else 0.0)
        ax.plot(angles + angles[:1], vals + vals[:1], color=COLORS.get(impl), lw=1.5, label=impl)
        ax.fill(angles + angles[:1], vals + vals[:1], color=COLORS.get(impl), alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(masks, fontsize=7)
    ax.set_title(f"TFLOP/s by block density, S = {fmt_len(seqlen)}, {direction}", fontsize=10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(rows: list[Row], out_dir: str) -> list[str]:
    """Speedup bars per direction and a radar per length (fwd); returns the files written."""
    try:
        _plt()
    except ImportError as e:
        print(f"plots skipped: matplotlib is not installed ({e})")
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for d in dict.fromkeys(r.direction for r in rows if r.status == "ok"):
        p = speedup_bars(
            rows, os.path.join(out_dir, f"speedup_{d.replace('+', '')}.png"), direction=d
        )
        if p:
            written.append(p)
    for s in sorted({r.seqlen for r in rows if r.status == "ok"}):
        p = radar(rows, os.path.join(out_dir, f"radar_{fmt_len(s)}.png"), s)
        if p:
            written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.plots RESULTS.json [OUT_DIR]``: redraw the plots of a run."""
    import sys

    from bench.report import read_json

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(main.__doc__)
        return 2
    _, rows = read_json(argv[0])
    out = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(argv[0]))
    print("\n".join(write_plots(rows, out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
