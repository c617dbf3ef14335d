"""The random state of a training process, saved in ``last.pt`` and restored on ``--resume``, so a
resumed run draws exactly what an uninterrupted one would (torch's CPU and CUDA generators and
Python's ``random``; data order and augmentation are functions of (seed, epoch) already)."""
from __future__ import annotations

import random
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """torch's (and CUDA's, when present) and Python's random state, as plain tensors and lists."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`rng_state` (the CUDA part only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
