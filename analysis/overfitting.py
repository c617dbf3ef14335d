"""Robust overfitting of one run, read from its per-epoch metrics (Rice, Wong, Kolter, ICML 2020).

Rice et al. see test robust accuracy peak just after the first learning-rate decay and then fall,
while the robust test loss rises, over the long phase that follows; Wu, Xia, Wang (NeurIPS 2020,
Fig. 1 and Sec. 5) show AWP keeping the last checkpoint's test robust accuracy up.
:func:`overfitting_stats` gives the numbers of that story for one run:

- ``best_epoch`` / ``test_best``: the early-stopping epoch (best validation robust accuracy, the
  epoch of ``best.pt``) and the test robust accuracy there. Selecting on the test set itself would
  bias the best value upwards by the test set's noise; the validation split does not.
- ``test_last``: test robust accuracy at the last epoch.
- ``loss_after_decay`` / ``loss_end``: mean robust test loss over the ``window`` epochs just after
  the first decay and over the last ``window`` epochs (means over fixed windows, not a minimum,
  which would be biased downwards by the epoch-to-epoch noise).
"""
from __future__ import annotations

from typing import Any

import pandas as pd


def decay_epochs(config: dict[str, Any]) -> list[float]:
    """Epochs at which a piecewise schedule decays the learning rate (milestone fraction x epochs);
    none for the cosine and constant schedules, nor for a config that records no epochs or milestones."""
    if config.get("schedule", "piecewise") != "piecewise" or config.get("epochs") is None:
        return []
    return sorted(m * config["epochs"] for m in config.get("lr_milestones") or [])


def window(epochs: int, decay: float) -> int:
    """Epochs averaged at each end of the phase after the first decay: 5, fewer when that phase is
    short (a third of it, at least 1)."""
    return max(1, min(5, int(epochs - decay) // 3))


def overfitting_stats(metrics: pd.DataFrame, config: dict[str, Any]) -> dict[str, Any]:
    """The run's robust-overfitting numbers (see the module docstring) from its metrics.csv table
    (:func:`analysis.readers.read_metrics`) and config.json."""
    m = metrics.sort_values("epoch").reset_index(drop=True)
    decays = decay_epochs(config)
    decay = decays[0] if decays else 0.0
    w = window(int(m["epoch"].iloc[-1]), decay)
    after = m[m["epoch"] > decay]
    best = m.loc[m["val_robust_acc"].idxmax()] if m["val_robust_acc"].notna().any() else m.iloc[-1]
    return {"decay_epochs": decays, "window": w, "best_epoch": int(best["epoch"]),
            "test_best": float(best["test_robust_acc"]), "test_last": float(m["test_robust_acc"].iloc[-1]),
            "train_last": float(m["train_robust_acc"].iloc[-1]),
            "loss_after_decay": float(after["test_robust_loss"].iloc[:w].mean()),
            "loss_end": float(m["test_robust_loss"].iloc[-w:].mean())}
