"""GPU time per kernel of one training step (forward + backward), fm4 against FA4, from
``torch.profiler``: where a step's time goes (forward, backward pre- / main / postprocess,
tile lists), summed per kernel name over a few steps and divided by their number.

    python -m bench.kernel_times --masks full,sliding_window --seqlen 8192 [--steps 3]

fm4 runs ``fm4.attention`` (tile lists built inside the call); the peers are FA4 mask_mod
(block mask built outside the step) for masked cases and FA4 dense for full and causal. Shapes
are the benchmark's (bf16, D = 128, H = 32, B = 128K / S). A diagnostic next to
``python -m bench`` (which times whole steps with CUDA events), not a replacement: profiling
adds its own overhead around each kernel.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable

MIN_SHOWN_MS = 0.02  # kernels below this (per step) are left out of the listing, not the total


def kernel_totals(events: Iterable[tuple[str, float]], steps: int) -> list[tuple[str, float, int]]:
    """``(name, ms per step, launches per step)`` for each kernel name, largest first.

    ``events``: ``(kernel name, device time in us)`` of every kernel launch of ``steps`` steps.
    """
    if steps <= 0:
        raise ValueError(f"steps={steps}: need at least one step")
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for name, us in events:
        total[name] += us
        count[name] += 1
    rows = [(n, total[n] / steps / 1000.0, count[n] // steps) for n in total]
    return sorted(rows, key=lambda r: -r[1])


def format_totals(title: str, rows: list[tuple[str, float, int]], *, width: int = 110) -> str:
    """A step's kernels as text: the total, then one line per kernel above ``MIN_SHOWN_MS``."""
    lines = [f"== {title}: total {sum(r[1] for r in rows):.2f} ms per step"]
    for name, ms, n in rows:
        if ms >= MIN_SHOWN_MS:
            lines.append(f"   {ms:8.3f} ms  x{n}  {name[:width]}")
    return "\n".join(lines)


def _profile_steps(step, steps: int) -> list[tuple[str, float]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):  # warm-up (compiles, caches)
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    out = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out.append((e.name, float(getattr(e, "device_time_total", 0.0))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernel_times", description=__doc__)
    ap.add_argument("--masks", default="full,causal,sliding_window,document,share_question")
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per implementation")
    args = ap.parse_args(argv)

    import torch

    from bench.peers import Fa4Dense, Fa4MaskMod, Fm4, make_inputs
    from bench.suite import NUM_HEADS, Case, batch_for

    if not torch.cuda.is_available():
        print("bench.kernel_times needs a CUDA GPU")
        return 1
    dev = torch.device("cuda")
    for mask in args.masks.split(","):
        case = Case(mask, args.seqlen, batch_for(args.seqlen), NUM_HEADS, NUM_HEADS, 128)
        inp = make_inputs(case, dev)
        for impl in (Fm4(dev), Fa4Dense(dev), Fa4MaskMod(dev)):
            ok, why = impl.available()
            if ok:
                ok, why = impl.applies(case)
            if not ok:
                print(f"== {mask} {args.seqlen} {impl.name}: skipped ({why})")
                continue
            fn = impl.prepare(inp)

            def step(fn=fn, inp=inp):
                inp.zero_grad()
                fn().backward(inp.dout)

            rows = kernel_totals(_profile_steps(step, args.steps), args.steps)
            print(format_totals(f"{mask} {args.seqlen} {impl.name}", rows), flush=True)
        del inp
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
