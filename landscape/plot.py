"""Figures of weight loss landscapes, in the style of Wu et al. 2020, Fig. 1 (1-D curves, several
checkpoints overlaid) and Li et al. 2018, Fig. 1 (2-D contour and 3-D surface).

Axis units are always written: alpha counts filter norms (or layer norms, or units of d), and
the loss names the attack that produced it. Figures are plain ``matplotlib.figure.Figure`` objects
(no pyplot, so no backend is chosen for the caller and a notebook keeps its inline one), written
atomically (:func:`awp.io.atomic_savefig`) and returned, so a notebook cell shows them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure

from awp.io import atomic_savefig
from landscape.curve import curve_spread
from landscape.surface import surface_grid

_UNITS = {"filter": "alpha, in filter norms", "layer": "alpha, in layer norms", "none": "alpha, in units of d"}


def axis_label(normalization: str = "filter", symbol: str = "alpha") -> str:
    """x label: the step along d in the units its normalization gives it."""
    return _UNITS.get(normalization, "alpha").replace("alpha", symbol)


def loss_label(loss: str = "adversarial", steps: int | None = 10) -> str:
    """y label naming what was measured."""
    if loss == "clean":
        return "clean loss (CE)"
    if loss == "fixed":
        return f"loss on fixed PGD-{steps} examples crafted at w (CE)"
    return f"adversarial loss (PGD-{steps} CE)"


def plot_curves(curves: Mapping[str, pd.DataFrame], path: str | Path, *, normalization: str = "filter",
                loss: str = "adversarial", steps: int | None = 10, title: str | None = None) -> Figure:
    """One line per checkpoint (mean over directions), a band of +-1 std over directions."""
    fig = Figure(figsize=(5, 3.8))
    ax = fig.subplots()
    for label, df in curves.items():
        s = curve_spread(df)
        line, = ax.plot(s["alpha"], s["loss_mean"], marker="o", ms=3, label=f"{label} ({int(s['n'].max())} dirs)")
        ax.fill_between(s["alpha"], s["loss_mean"] - s["loss_std"], s["loss_mean"] + s["loss_std"],
                        color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(axis_label(normalization))
    ax.set_ylabel(loss_label(loss, steps))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    return fig


def plot_surface(df: pd.DataFrame, path: str | Path, *, normalization: str = "filter",
                 loss: str = "adversarial", steps: int | None = 10, title: str | None = None) -> Figure:
    """Contour (left) and 3-D surface (right) of a 2-D landscape table (alpha, beta, loss)."""
    grid = surface_grid(df)
    a, b = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    z = grid.to_numpy(float)
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    if len(a) > 1 and len(b) > 1:
        cs = ax.contour(a, b, z, levels=15)
        ax.clabel(cs, fontsize=6)
    else:
        ax.plot(a if len(a) > 1 else b, z.ravel())
    ax.set_xlabel(axis_label(normalization))
    ax.set_ylabel(axis_label(normalization, "beta"))
    ax.set_title(loss_label(loss, steps), fontsize=9)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    if len(a) > 1 and len(b) > 1:
        import numpy as np

        A, B = np.meshgrid(a, b)
        ax3.plot_surface(A, B, z, cmap="viridis", linewidth=0)
    ax3.set_xlabel("alpha")
    ax3.set_ylabel("beta")
    ax3.set_zlabel("loss")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    return fig
