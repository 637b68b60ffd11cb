"""Compare the peers' rows with the anchors measured on the H100 (``shared/anchors``).

``python -m bench.anchors RESULTS.json [ANCHORS.json]`` prints, per (mask, S, impl, direction)
found in both, the ratio of this run's time to the anchor's (1.00 = same; > 1 = slower here).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

from bench.report import Row, geomean, read_json
from bench.suite import fmt_len

#: Where the anchors live relative to the repository root (a sibling checkout's shared/ folder).
DEFAULT_ANCHORS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "anchors",
    "h100-2026-11-23.json",
)
_IMPL = {"flex_backend_flash": "flex_flash"}
_DIR = {"fwd": "fwd_ms", "fwd+bwd": "fwdbwd_ms"}


@dataclass(frozen=True)
class Anchor:
    """One anchor time and the block density of the mask it was measured on (nan if dense)."""

    ms: float
    density: float


def load_anchors(path: str) -> dict[tuple[str, int, str, str], Anchor]:
    """``{(mask, S, impl, direction): Anchor}`` from the anchors' JSON (head dim 128, H = 32)."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for a in data:
        impl = _IMPL.get(a["impl"], a["impl"])
        dens = float(a["density"]) if a.get("density") is not None else float("nan")
        for d, key in _DIR.items():
            if a.get(key) is not None:
                out[(a["mask"], int(a["S"]), impl, d)] = Anchor(float(a[key]), dens)
    return out


@dataclass(frozen=True)
class Comparison:
    """This run's row against its anchor.

    ``ratio`` = ours / anchor ms. ``same_mask``: the block densities agree within 2% (the
    anchors' random document splits are not the registry's, so seeded masks can differ); when
    they do not, ``norm_ratio`` compares time per non-skipped tile (ratio x anchor density /
    our density), which is what is comparable.
    """

    row: Row
    anchor: Anchor
    ratio: float
    norm_ratio: float
    same_mask: bool

    @property
    def judged(self) -> float:
        """The ratio that decides whether the row agrees with its anchor."""
        return self.ratio if self.same_mask else self.norm_ratio


def compare(rows: list[Row], anchors: dict) -> list[Comparison]:
    """A `Comparison` for every timed D = 128, MHA row with an anchor."""
    out = []
    for r in rows:
        if r.status != "ok" or r.head_dim != 128 or r.kv_heads != r.heads:
            continue
        a = anchors.get((r.mask, r.seqlen, r.impl, r.direction))
        if a is None or not a.ms:
            continue
        ratio = r.ms / a.ms
        if math.isnan(a.density) or math.isnan(r.density) or r.density <= 0:
            same, norm = True, ratio
        else:
            same = abs(r.density / a.density - 1) <= 0.02
            norm = ratio * a.density / r.density
        out.append(Comparison(r, a, ratio, norm, same))
    return out


def compare_lines(rows: list[Row], anchors_path: str, *, tolerance: float = 0.10) -> list[str]:
    """Lines of the comparison, flagging judged ratios outside 1 +- ``tolerance``."""
    if not os.path.exists(anchors_path):
        return []
    cmps = compare(rows, load_anchors(anchors_path))
    if not cmps:
        return []
    lines = [
        f"vs anchors ({os.path.basename(anchors_path)}): ours / anchor ms; where the mask's "
        "density differs (other document split), also per tile (x anchor / our density)"
    ]
    for c in cmps:
        r = c.row
        dens = (
            ""
            if c.same_mask
            else (
                f"  density {r.density:.3f} vs {c.anchor.density:.3f}: per tile {c.norm_ratio:5.2f}"
            )
        )
        flag = "" if abs(c.judged - 1) <= tolerance else "   <-- off by more than 10%"
        lines.append(
            f"  {r.mask:22s} {fmt_len(r.seqlen):>4s} {r.direction:8s} {r.impl:13s} "
            f"{r.ms:8.2f} / {c.anchor.ms:8.2f} = {c.ratio:5.2f}{dens}{flag}"
        )
    judged = [c.judged for c in cmps]
    gm = geomean(judged)
    outside = sum(abs(x - 1) > tolerance for x in judged)
    lines.append(
        f"  geometric mean {gm:.3f} over {len(judged)} rows; {outside} outside +-{tolerance:.0%}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    _, rows = read_json(argv[0])
    path = argv[1] if len(argv) > 1 else DEFAULT_ANCHORS
    lines = compare_lines(rows, path)
    print("\n".join(lines) if lines else f"no rows to compare with {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
