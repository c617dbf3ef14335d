"""Checks of single values where they enter the code: whole numbers, finite numbers in a range,
and the attack threat model (eps, step, steps, norm), each failure one :class:`UsageError` line.

A float setting that is NaN or infinite is refused wherever a config, a flag or a library call
takes it (``lr=inf`` would otherwise train to NaN weights, and JSON has no way to store it), so
every check of a float here is a check that it is finite first.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from awp.errors import UsageError


def check_int(value: Any, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (an integral number, not a bool) in [minimum, maximum]; else one line."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise UsageError(f"{what} must be a whole number, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise UsageError(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{what} must be <= {maximum}, got {value}")
    return value


def check_number(value: Any, what: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, unit: str = "") -> float:
    """``value`` as a finite float within the bounds (open where said); else one line naming the
    range, e.g. ``lr must be a finite number > 0, got inf``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{what} must be a number, got {value!r}")
    number = float(value)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    needed = f"a finite number{(' ' + ' and '.join(bounds)) if bounds else ''}{unit}"
    bad = not math.isfinite(number)
    if low is not None:
        bad = bad or number < low or (low_open and number == low)
    if high is not None:
        bad = bad or number > high or (high_open and number == high)
    if bad:
        raise UsageError(f"{what} must be {needed}, got {value!r}")
    return number


MAX_SEED = 2**63 - 1  # torch.manual_seed and torch.Generator take a signed 64-bit seed


def check_seed(value: Any, what: str = "seed") -> int:
    """A random seed: a whole number in [0, 2**63 - 1] (what torch's generators accept)."""
    return check_int(value, what, 0, MAX_SEED)
