"""Shared timing helpers of the benchmarks.

``interleaved``: variants timed side by side, interleaved round by round (a shared CPU drifts, so a
ratio is only meaningful between numbers taken together). ``timed_calls``: one variant's warm-up
and timed calls, each bracketed by a device synchronization (CUDA kernels run asynchronously, so
a clock read without one measures the launch, not the work), stopping early at a deadline.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """(median, min) seconds per variant: one warm-up call each, then ``rounds`` interleaved rounds."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: min(t) for name, t in times.items()})


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits until ``device`` has finished its queued work; a no-op off CUDA."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class Timing:
    """What :func:`timed_calls` measured: the first call's result and the seconds of each call."""

    first: object
    warmup: list[float]
    timed: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.timed)

    @property
    def warmup_excess(self) -> float:
        """Seconds the warm-up calls took beyond as many timed calls (compilation, autotuning)."""
        return max(sum(self.warmup) - len(self.warmup) * self.median, 0.0)


def timed_calls(fn: Callable[[], object], *, warmup: int, steps: int,
                sync: Callable[[], None] = lambda: None, deadline: float | None = None) -> Timing:
    """``warmup`` (>= 1) untimed calls, then up to ``steps`` timed calls of ``fn``, each synchronized.

    With a ``deadline`` (a ``time.perf_counter()`` value) the timed calls stop once the next one
    would be expected to end after it; at least one call is always timed.
    """
    if warmup < 1 or steps < 1:
        raise ValueError("timed_calls needs warmup >= 1 and steps >= 1")
    first, warm, timed = None, [], []
    for i in range(warmup + steps):
        if i >= warmup + 1 and deadline is not None and time.perf_counter() + statistics.median(timed) > deadline:
            break
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        (warm if i < warmup else timed).append(time.perf_counter() - start)
        first = out if i == 0 else first
    return Timing(first, warm, timed)
