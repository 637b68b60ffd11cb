"""Rows of results, the printed table, CSV and JSON (with the run's metadata)."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

from bench.suite import fmt_len


@dataclass
class Row:
    """One (mask, length, head dim, heads, implementation, direction) measurement or skip."""

    mask: str
    seqlen: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    impl: str
    direction: str
    status: str  # 'ok' or 'skipped'
    ms: float = float("nan")  # mean over splits of each split's median
    tflops_block: float = float("nan")
    tflops_exact: float = float("nan")
    speedup: float = float("nan")  # baseline ms / ms (baseline: FA4 mask_mod, FA4 dense for full)
    density: float = float("nan")
    visible_fraction: float = float("nan")
    blockmask_ms: float = float("nan")  # peers' create_block_mask per call (median)
    blockmask_first_s: float = float("nan")  # its first call, including compile
    compile_s: float = float("nan")  # the implementation's first call, including compile
    check_err: float = float("nan")
    check_tol: float = float("nan")
    splits: int = 0
    spread: float = float("nan")  # (max - min) / median of the iterations, worst split
    reason: str = ""

    @property
    def key(self) -> tuple:
        return (self.mask, self.seqlen, self.head_dim, self.heads, self.kv_heads, self.direction)


def geomean(values: Iterable[float]) -> float:
    """Geometric mean (nan for no values)."""
    vals = list(values)
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def fill_speedups(rows: list[Row], baseline: str, dense_baseline: str) -> None:
    """Set ``speedup`` = baseline ms / row ms for every timed row (baseline per key)."""
    by_key: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.status == "ok":
            by_key.setdefault(r.key, {})[r.impl] = r
    for group in by_key.values():
        base = group.get(baseline) or group.get(dense_baseline)
        for r in group.values():
            r.speedup = base.ms / r.ms if base is not None and r.ms > 0 else float("nan")


def _num(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


TABLE_COLUMNS = (
    "mask",
    "S",
    "dir",
    "impl",
    "ms",
    "TFLOP/s blk",
    "TFLOP/s exact",
    "vs FA4 mm",
    "blockmask ms",
    "density",
)


def table_lines(rows: Iterable[Row], *, markdown: bool = False) -> list[str]:
    """The table of timed rows (ms; TFLOP/s by block density and exact; speedup)."""
    body = []
    for r in rows:
        if r.status != "ok":
            continue
        gqa = f"/{r.kv_heads}kv" if r.kv_heads != r.heads else ""
        dim = f" D{r.head_dim}{gqa}" if (r.head_dim != 128 or gqa) else ""
        body.append(
            (
                r.mask,
                fmt_len(r.seqlen) + dim,
                r.direction,
                r.impl,
                _num(r.ms, ".2f"),
                _num(r.tflops_block, ".0f"),
                _num(r.tflops_exact, ".0f"),
                _num(r.speedup, ".2f"),
                _num(r.blockmask_ms, ".2f"),
                _num(r.density, ".3f"),
            )
        )
    if markdown:
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return lines
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h)
        for i, h in enumerate(TABLE_COLUMNS)
    ]
    right = {4, 5, 6, 7, 8, 9}

    def fmt(cells):
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs)

    return [fmt(TABLE_COLUMNS), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def skipped_lines(rows: Iterable[Row]) -> list[str]:
    """One line per distinct (impl, reason) among skipped rows, with the cases it covers."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.status == "ok":
            continue
        where = f"{r.mask}@{fmt_len(r.seqlen)}"
        lst = seen.setdefault((r.impl, r.reason), [])
        if where not in lst:
            lst.append(where)
    out = []
    for (impl, reason), where in seen.items():
        cases = ", ".join(where[:6]) + (f" (+{len(where) - 6} more)" if len(where) > 6 else "")
        out.append(f"{impl}: skipped ({reason}) [{cases}]")
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries that matter here ('missing' when not installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "triton", "flash-attn-4", "nvidia-cutlass-dsl", "quack-kernels", "fm4"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    if out["fm4"] == "missing":  # run from a checkout on PYTHONPATH, not installed
        try:
            import fm4

            out["fm4"] = f"{fm4.__version__} (checkout)"
        except Exception:
            pass
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = str(torch.version.cuda)
    except Exception:
        pass
    return out


def device_info() -> dict[str, object]:
    """The GPU's name, capability and UUID (or 'cpu'). The UUID tells lent machines apart:
    rows of different physical GPUs are not comparable (their power behaviour differs)."""
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return {
                "name": p.name,
                "capability": f"sm_{p.major}{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "sms": p.multi_processor_count,
                "uuid": str(getattr(p, "uuid", "")),
            }
    except Exception:
        pass
    return {"name": "cpu", "capability": None}


def git_commit() -> str:
    """The repository's HEAD commit (short), '+modified' when tracked files differ from it, or
    '' outside a checkout. ``FM4_GIT_COMMIT``, when set, is returned instead: for copies of a
    checkout whose ``.git`` is not the tree's (e.g. the GPU machine's working-tree copy)."""
    override = os.environ.get("FM4_GIT_COMMIT")
    if override:
        return override
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")
    except Exception:
        return ""


def run_metadata(config: dict, *, argv: list[str] | None = None) -> dict:
    """Metadata for the JSON: command, time, device, versions, commit, configuration."""
    argv = sys.argv if argv is None else argv
    return {
        "command": "python -m bench " + " ".join(argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device_info(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "config": config,
        "notes": [
            "ms: median of CUDA-event times after warm-up (mean over document splits)",
            "fm4's time includes building its tile lists from startend_row_indices",
            "peers' BlockMask creation (torch.compile(create_block_mask), 128x128) is not in "
            "their ms; it is the blockmask_ms column",
            "TFLOP/s blk: density of 128x128 tiles not fully masked x dense FLOPs; exact: "
            "unmasked (row, column) pairs; bwd = 2.5x fwd FLOPs, fwd+bwd = 3.5x",
            "speedup: FA4 mask_mod ms / ms (FA4 dense for the full mask)",
        ],
    }


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def write_csv(path: str, rows: list[Row]) -> None:
    """All rows (timed and skipped) as CSV; NaN as empty cells."""
    names = [f.name for f in fields(Row)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow(["" if _clean(getattr(r, n)) is None else getattr(r, n) for n in names])


def write_json(path: str, rows: list[Row], meta: dict) -> None:
    """``{"meta": ..., "rows": [...]}`` with NaN as null."""
    data = {"meta": meta, "rows": [{k: _clean(v) for k, v in asdict(r).items()} for r in rows]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def read_json(path: str) -> tuple[dict, list[Row]]:
    """Read back what `write_json` wrote (null as NaN)."""
    with open(path) as f:
        data = json.load(f)
    rows = []
    for d in data["rows"]:
        kw = {k: (float("nan") if v is None else v) for k, v in d.items()}
        rows.append(Row(**kw))
    return data.get("meta", {}), rows


def write_all(out_dir: str, rows: list[Row], meta: dict) -> dict[str, str]:
    """CSV, JSON and the markdown table under ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "csv": os.path.join(out_dir, "results.csv"),
        "json": os.path.join(out_dir, "results.json"),
        "table": os.path.join(out_dir, "table.md"),
    }
    write_csv(paths["csv"], rows)
    write_json(paths["json"], rows, meta)
    with open(paths["table"], "w") as f:
        f.write("\n".join(table_lines(rows, markdown=True)) + "\n")
        sk = skipped_lines(rows)
        if sk:
            f.write("\nSkipped:\n\n" + "\n".join(f"- {s}" for s in sk) + "\n")
    return paths
