"""The time budget of a benchmark run: sections share what is left, and each has a hard stop.

:class:`Budget` gives each section, when it starts, what is left minus the predicted seconds of
the sections after it (so a section that overruns its prediction cannot starve the later ones,
and time a section leaves unused passes to them), but never less than its proportional share of
what is left (when the predictions do not fit, every section is cut alike); the limits never add
up to more than the budget.
:func:`time_limit` stops a section at its limit even inside a long call (a compilation), with
SIGALRM in the main thread; where that signal does not exist only the per-step deadline holds.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


class SectionTimeout(BaseException):
    """A section ran past its limit. Not an ``Exception``, so that a ``except Exception`` that
    records one variant's failure and goes on does not swallow the stop."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread once ``seconds`` have passed."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout(f"stopped at its time limit of {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Budget:
    """``total_s`` seconds from ``start`` (a ``time.perf_counter()`` value), for sections with
    predicted seconds, run in the order given; ``reserve_s`` is kept back for writing the results."""

    def __init__(self, total_s: float, predicted: dict[str, float], *, start: float | None = None,
                 reserve_s: float = 0.0):
        self.total_s, self.reserve_s = float(total_s), float(reserve_s)
        self.start = time.perf_counter() if start is None else start
        self.waiting = {name: max(float(s), 1e-9) for name, s in predicted.items()}

    def remaining(self) -> float:
        return self.total_s - self.reserve_s - (time.perf_counter() - self.start)

    def limit(self, section: str) -> float:
        """Seconds ``section`` may take if it starts now; it is no longer waiting afterwards."""
        own = self.waiting.pop(section)
        later, remaining = sum(self.waiting.values()), self.remaining()
        return max(remaining - later, remaining * own / (own + later), 0.0)
