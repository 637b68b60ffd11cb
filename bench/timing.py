"""Timing with CUDA events: median of per-iteration times after warm-up.

Each iteration records its own pair of events, so work that must happen before the timed region
(the forward before a timed backward) can run untimed in the same loop. The number of
iterations adapts to the call's length: at least ``min_reps``, at most ``max_reps``, about
``target_ms`` of GPU time in total.

Warm-up by time (``warmup_ms``): on the H100 every attention kernel here runs at the 700 W
power limit, and the power controller moves the SM clock in steps over hundreds of
milliseconds. After a pause or a lighter kernel the first ~100 ms run near the 1980 MHz boost
clock; a kernel close to the limit (fm4's) then swings by up to +-12% between 100 ms windows,
while a sustained run of a second or more repeats to 0.1-1% (measured:
`bench/results/h100-session20-protocol/`). Counted warm-up calls leave the timed calls in
whatever clock state the previous work or pause left behind; ``warmup_ms`` runs the call itself
untimed for that long first, so the timed calls see that call's own sustained state.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Per-iteration times in milliseconds and their median."""

    times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the iterations were."""
        if len(self.times_ms) < 2:
            return 0.0
        return (max(self.times_ms) - min(self.times_ms)) / self.median_ms


def rotation(items: list, rnd: int) -> list:
    """``items`` in the order of round ``rnd`` of interleaved timing: rotated by ``rnd``, so that
    each item leads once every ``len(items)`` rounds (drift and order effects spread evenly)."""
    if not items:
        return []
    k = rnd % len(items)
    return items[k:] + items[:k]


def interleaved_medians(
    runs: dict[str, Callable[[], object]], rounds: int, time_one: Callable[[Callable], float]
) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds (order rotated, :func:`rotation`) of
    ``time_one(run)`` for every run of ``runs`` (name -> callable)."""
    names = list(runs)
    per: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(max(rounds, 1)):
        for name in rotation(names, rnd):
            per[name].append(time_one(runs[name]))
    return {name: statistics.median(per[name]) for name in names}


def reps_for(estimate_ms: float, *, min_reps: int, max_reps: int, target_ms: float) -> int:
    """Iterations to run for a call of ``estimate_ms``: about ``target_ms`` in total, clamped."""
    if not estimate_ms or estimate_ms <= 0:
        return max_reps
    return int(max(min_reps, min(max_reps, round(target_ms / estimate_ms))))


def warmup_calls(estimate_ms: float, warmup_ms: float, *, cap: int = 2000) -> int:
    """Untimed calls that fill about ``warmup_ms`` of GPU time for a call of ``estimate_ms``
    (0 when ``warmup_ms`` is 0; at most ``cap``, for calls too short to time)."""
    if warmup_ms <= 0:
        return 0
    if not estimate_ms or estimate_ms <= 0:
        return cap
    return int(min(cap, math.ceil(warmup_ms / estimate_ms)))


def time_cuda(
    run: Callable[[], object],
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 1,
    warmup_ms: float = 0.0,
    min_reps: int = 3,
    max_reps: int = 20,
    target_ms: float = 300.0,
) -> Timing:
    """Median-able CUDA-event times of ``run()`` (``setup()`` runs untimed before each call).

    ``warmup`` untimed calls; one call timed to size the rest (not among the results); untimed
    calls for about ``warmup_ms`` of GPU time (at least one); then the timed calls. The last two
    are queued without a host synchronisation in between, so the GPU is busy when each timed call
    starts and no timed interval contains the host's own time to launch the call (which the call
    right after a synchronisation would: measured 0.1-0.45 ms per call for fm4 and FA4)."""

    def call() -> None:
        if setup is not None:
            setup()
        run()

    def timed() -> tuple[torch.cuda.Event, torch.cuda.Event]:
        if setup is not None:
            setup()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        return start, end

    for _ in range(warmup):
        call()
    s, e = timed()
    torch.cuda.synchronize()
    estimate = s.elapsed_time(e)
    for _ in range(max(1, warmup_calls(estimate, warmup_ms))):
        call()
    reps = reps_for(estimate, min_reps=min_reps, max_reps=max_reps, target_ms=target_ms)
    events = [timed() for _ in range(reps)]
    torch.cuda.synchronize()
    return Timing([a.elapsed_time(b) for a, b in events])


def time_host(run: Callable[[], object], *, reps: int = 3) -> Timing:
    """Wall-clock times of ``run()`` on the host (for the CPU demo), synchronizing CUDA if used."""
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return Timing(out)


def first_call_s(run: Callable[[], object]) -> float:
    """Seconds of one call including compilation (synchronized)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0
