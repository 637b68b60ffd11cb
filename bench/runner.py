"""The run loop: for each case, same inputs for every implementation; check them all, then time
them in interleaved rounds.

Each implementation is isolated: a missing or failing peer (import, compile, out of memory, a
wrong output) becomes a skipped row with its reason, never a crash of the whole run. Results are
written after every case, so a run cut short still leaves its CSV/JSON behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.check import check_output
from bench.flops import MaskWork, mask_work
from bench.peers import BASELINE, DENSE_BASELINE, Impl, Inputs, first_line, make_inputs
from bench.report import Row, fill_speedups
from bench.suite import Case
from bench.timing import Timing, first_call_s, rotation, time_cuda


@dataclass
class _Acc:
    """Per-split results of one (case key, impl, direction), merged into one Row."""

    case: Case
    impl: str
    direction: str
    times: list[Timing] = field(default_factory=list)
    works: list[MaskWork] = field(default_factory=list)
    bm_ms: list[float] = field(default_factory=list)
    bm_first: list[float] = field(default_factory=list)
    compile_s: list[float] = field(default_factory=list)
    errs: list[tuple[float, float]] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    density: list[float] = field(default_factory=list)
    visible: list[float] = field(default_factory=list)

    def row(self) -> Row:
        c = self.case
        base = dict(
            mask=c.mask,
            seqlen=c.seqlen,
            batch=c.batch,
            heads=c.heads,
            kv_heads=c.kv_heads,
            head_dim=c.head_dim,
            impl=self.impl,
            direction=self.direction,
        )

        def mean(xs):
            xs = [x for x in xs if not math.isnan(x)]
            return sum(xs) / len(xs) if xs else float("nan")

        dens, vis = mean(self.density), mean(self.visible)
        if not self.times:
            return Row(
                **base,
                status="skipped",
                reason="; ".join(dict.fromkeys(self.skips)),
                density=dens,
                visible_fraction=vis,
            )
        ms = mean([t.median_ms for t in self.times])
        # TFLOP/s from the mean time and the mean work of the splits.
        fb = mean([w.flops_block(self.direction) for w in self.works])
        fe = mean([w.flops_exact(self.direction) for w in self.works])
        return Row(
            **base,
            status="ok",
            ms=ms,
            tflops_block=fb / (ms * 1e-3) / 1e12,
            tflops_exact=fe / (ms * 1e-3) / 1e12,
            density=dens,
            visible_fraction=vis,
            blockmask_ms=mean(self.bm_ms),
            blockmask_first_s=mean(self.bm_first),
            compile_s=mean(self.compile_s),
            check_err=max((e for e, _ in self.errs), default=float("nan")),
            check_tol=min((t for _, t in self.errs), default=float("nan")),
            splits=len(self.times),
            spread=max(t.spread for t in self.times),
            reason="; ".join(dict.fromkeys(self.skips)),
        )


class Collector:
    """Accumulates results over cases and splits; `rows()` gives the merged rows."""

    def __init__(self) -> None:
        self._acc: dict[tuple, _Acc] = {}

    def _get(self, case: Case, impl: str, direction: str) -> _Acc:
        key = (case.key, impl, direction)
        if key not in self._acc:
            self._acc[key] = _Acc(case, impl, direction)
        return self._acc[key]

    def skip(self, case: Case, impl: str, directions, reason: str, work=None) -> None:
        for d in directions:
            a = self._get(case, impl, d)
            a.skips.append(reason)
            if work is not None:
                a.density.append(work.density)
                a.visible.append(work.visible_fraction)

    def add(
        self, case, impl, direction, timing, work, *, bm=None, compile_s=float("nan"), check=None
    ) -> None:
        a = self._get(case, impl, direction)
        a.times.append(timing)
        a.works.append(work)
        a.density.append(work.density)
        a.visible.append(work.visible_fraction)
        a.compile_s.append(compile_s)
        if bm is not None:
            a.bm_ms.append(bm.ms)
            a.bm_first.append(bm.first_s)
        if check is not None:
            a.errs.append((check.err, check.tol))

    def rows(self) -> list[Row]:
        rows = [a.row() for a in self._acc.values()]
        fill_speedups(rows, BASELINE, DENSE_BASELINE)
        return rows


def time_direction(fn: Callable[[], torch.Tensor], inp: Inputs, direction: str, **kw) -> Timing:
    """Time the forward, the backward (after an untimed forward) or both."""
    if direction == "fwd":
        return time_cuda(fn, **kw)
    if direction == "fwd+bwd":
        return time_cuda(lambda: fn().backward(inp.dout), setup=inp.zero_grad, **kw)
    if direction == "bwd":
        held = {}

        def setup():
            inp.zero_grad()
            held["out"] = fn()

        return time_cuda(lambda: held["out"].backward(inp.dout), setup=setup, **kw)
    raise ValueError(f"direction {direction!r}: choose fwd, bwd or fwd+bwd")


def run_case(
    case: Case,
    impls: list[Impl],
    directions: list[str],
    collector: Collector,
    *,
    device: torch.device,
    check: bool = True,
    log: Callable[[str], None] = print,
    on_impl_done: Callable[[], None] = lambda: None,
    set_status: Callable[[str], None] = lambda s: None,
    timing_kw: dict | None = None,
    rounds: int = 1,
) -> None:
    """Run every implementation on one case (same inputs), recording rows or skips.

    First every implementation is prepared, compiled and checked; then all of them are timed
    in ``rounds`` interleaved rounds (the order rotated from round to round, ``target_ms`` split
    over the rounds; ``warmup_ms``, if given, is each round's own untimed lead-in, not split), so
    that a slow phase of the GPU (clocks, power, temperature) falls on all of them alike instead
    of on whichever ran then. A row's time is the median over the iterations of all its rounds.
    """
    timing_kw = dict(timing_kw or {})
    rounds = max(1, rounds)
    if "target_ms" in timing_kw:
        timing_kw["target_ms"] = timing_kw["target_ms"] / rounds
    inp = make_inputs(case, device)
    work = mask_work(inp.mask, case.batch, case.heads, case.head_dim)
    ready = []  # (impl, fn, directions, block mask, compile seconds, check)
    for impl in impls:
        set_status(f"{case.label()} | {impl.name}")
        run_dirs: list[str] = []
        try:
            ok, why = impl.available()
            if ok:
                ok, why = impl.applies(case)
            if not ok:
                collector.skip(case, impl.name, directions, why, work)
                continue
            run_dirs = []
            for d in directions:
                ok_d, why_d = impl.supports_direction(d)
                if ok_d:
                    run_dirs.append(d)
                else:
                    collector.skip(case, impl.name, [d], why_d, work)
            if not run_dirs:
                continue
            needs_bwd = any(d != "fwd" for d in run_dirs)
            fn = impl.prepare(inp)
            compile_s = first_call_s(fn)
            with torch.no_grad():
                out = fn()
            res = check_output(out, inp.q, inp.k, inp.v, inp.mask) if check else None
            del out
            if res is not None and not res.ok:
                reason = f"wrong output: {res.describe()}"
                log(f"  {case.label()} {impl.name}: {reason}; not timed")
                collector.skip(case, impl.name, run_dirs, reason, work)
                continue
            if needs_bwd:
                inp.zero_grad()
                compile_s += first_call_s(lambda f=fn: f().backward(inp.dout))
            bm = inp.shared.get("block_mask") if impl.uses_block_mask else None
            bm_note = f", block mask first {bm.first_s:.1f} s / {bm.ms:.2f} ms" if bm else ""
            chk = res.describe() if res is not None else "not checked"
            log(f"  {case.label()} {impl.name}: first calls {compile_s:.1f} s{bm_note}; {chk}")
            ready.append((impl, fn, run_dirs, bm, compile_s, res))
        except Exception as e:  # a failing peer is skipped with its reason
            reason = f"{type(e).__name__}: {first_line(e)}"
            log(f"  {case.label()} {impl.name}: failed ({reason})")
            collector.skip(case, impl.name, run_dirs or directions, reason, work)
        finally:
            inp.zero_grad()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    times: dict[tuple[str, str], list[float]] = {}
    failed: set[str] = set()
    for rnd in range(rounds):
        for impl, fn, run_dirs, _, _, _ in rotation(ready, rnd):
            if impl.name in failed:
                continue
            set_status(f"{case.label()} | {impl.name} | round {rnd + 1}/{rounds}")
            try:
                for d in run_dirs:
                    t = time_direction(fn, inp, d, **timing_kw)
                    times.setdefault((impl.name, d), []).extend(t.times_ms)
            except Exception as e:  # a peer failing while timed is skipped with its reason
                reason = f"{type(e).__name__}: {first_line(e)}"
                log(f"  {case.label()} {impl.name}: failed while timed ({reason})")
                collector.skip(case, impl.name, run_dirs, reason, work)
                failed.add(impl.name)
            finally:
                inp.zero_grad()
    for impl, _, run_dirs, bm, compile_s, res in ready:
        if impl.name not in failed:
            for d in run_dirs:
                t = Timing(times[(impl.name, d)])
                collector.add(case, impl.name, d, t, work, bm=bm, compile_s=compile_s, check=res)
    for _ in impls:
        on_impl_done()
