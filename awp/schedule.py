"""Learning-rate schedules, evaluated at every iteration (Rice et al. 2020; RST's cosine).

``progress`` is training progress in epochs, a float: epoch + (iteration + 1) / iterations.
"""
from __future__ import annotations

import math


def learning_rate(base_lr: float, progress: float, epochs: int, schedule: str,
                  milestones: list[float] = (0.5, 0.75), decay: float = 0.1) -> float:
    """lr at ``progress`` epochs: piecewise (x decay at each milestone fraction), cosine or constant."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(progress / epochs, 1.0)))
    if schedule == "piecewise":
        passed = sum(progress >= m * epochs - 1e-9 for m in milestones)
        return base_lr * decay ** passed
    raise ValueError(f"unknown schedule {schedule!r}")
