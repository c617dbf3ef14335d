"""2-D weight loss surfaces rho(w + alpha d1 + beta d2) (Li et al. 2018, Sec. 5; Wu et al. 2020, Sec. 3).

Every row stores its own alpha and beta, so a non-square grid can never be scrambled by a reshape
(a known fault of Li et al.'s tool). Points are evaluated as in :mod:`landscape.evaluate`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import pandas as pd
from torch import nn

from awp.metrics import AttackSpec
from awp.runtime import Runtime
from landscape.directions import Direction
from landscape.evaluate import PointEvaluator, active_names, as_floats, point_key, run_points

COLUMNS = ["alpha", "beta", "loss", "acc"]


def weight_loss_surface(model: nn.Module, d1: Direction, d2: Direction, alphas: Iterable[float],
                        betas: Iterable[float], data: Any, loss: str = "adversarial",
                        attack: AttackSpec | None = None, *, batch_size: int = 256,
                        runtime: Runtime | None = None,
                        points: Iterable[tuple[float, float]] | None = None,
                        on_point: Callable[[dict[str, Any]], None] | None = None,
                        progress: bool = False, sharded: bool = False) -> pd.DataFrame:
    """rho(w + alpha d1 + beta d2) on the grid alphas x betas (any shapes); columns alpha, beta, loss, acc.

    Rows run over alphas (outer) then betas (inner). ``points``: compute only these (alpha, beta)
    pairs; ``on_point(row)`` after each point; ``sharded``: split the points across the
    processes of a torchrun group (every rank returns the whole table). Other arguments as in
    :func:`landscape.curve.weight_loss_curve`; the model is left bit-identical.
    """
    alphas = as_floats(alphas, "alphas")
    betas = as_floats(betas, "betas")
    evaluator = PointEvaluator(model, data, loss=loss, attack=attack, batch_size=batch_size, runtime=runtime)
    wanted = None if points is None else {point_key(a, b) for a, b in points}
    names = sorted(set(active_names(d1)) | set(active_names(d2)))
    todo = [({"alpha": a, "beta": b}, [(a, d1), (b, d2)])
            for a in alphas for b in betas if wanted is None or point_key(a, b) in wanted]
    rows = run_points(evaluator, todo, names, on_point=on_point, progress=progress, desc="surface",
                      sharded=sharded)
    return pd.DataFrame(rows, columns=COLUMNS)


def surface_grid(df: pd.DataFrame, value: str = "loss") -> pd.DataFrame:
    """The surface as a table indexed by beta (rows) and alpha (columns), built by label, not by reshape."""
    return df.pivot(index="beta", columns="alpha", values=value).sort_index().sort_index(axis=1)
