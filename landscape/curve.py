"""1-D weight loss curves g(alpha) = rho(w + alpha d) (Wu, Xia, Wang, NeurIPS 2020, Sec. 3, Fig. 1).

rho is the adversarial loss with the examples regenerated at every perturbed weight (PGD against
f_{w + alpha d}); see :mod:`landscape.evaluate` for how a point is evaluated and the 'clean' and
'fixed' alternatives. Several random directions give a spread (:func:`curve_spread`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from torch import nn

from awp.errors import UsageError
from awp.metrics import AttackSpec
from awp.runtime import Runtime
from landscape.directions import Direction
from landscape.evaluate import PointEvaluator, active_names, as_floats, point_key, run_points

COLUMNS = ["direction", "alpha", "loss", "acc"]


def weight_loss_curve(model: nn.Module, directions: Sequence[Direction], alphas: Iterable[float], data: Any,
                      loss: str = "adversarial", attack: AttackSpec | None = None, *,
                      batch_size: int = 256, runtime: Runtime | None = None,
                      direction_ids: Sequence[Any] | None = None,
                      points: Iterable[tuple[Any, float]] | None = None,
                      on_point: Callable[[dict[str, Any]], None] | None = None,
                      progress: bool = False, sharded: bool = False) -> pd.DataFrame:
    """g(alpha) = rho(w + alpha d) for each direction d and each alpha; a tidy DataFrame.

    ``data``: an (x, y) pair of tensors (split into ``batch_size`` batches) or an iterable of
    (x, y) batches. ``loss``: 'adversarial' (PGD ``attack`` re-run at every point, default),
    'clean' or 'fixed' (examples crafted at w only; biased, for comparison). ``direction_ids``:
    the labels of the ``direction`` column (default 0, 1, ...). ``points``: compute only these
    (direction id, alpha) pairs (resume, sharding). ``on_point(row)``: called after each point.
    ``sharded``: under torchrun, split the points across the processes of the group
    (:func:`landscape.evaluate.run_points`); every rank returns the whole table.
    Columns: direction, alpha, loss (mean CE), acc. The model is left bit-identical, its
    train/eval flags restored; no weight gradient is filled.
    """
    directions = list(directions)
    if not directions:
        raise UsageError("a landscape curve needs at least one direction")
    alphas = as_floats(alphas, "alphas")
    ids = list(range(len(directions))) if direction_ids is None else list(direction_ids)
    if len(ids) != len(directions) or len(set(ids)) != len(ids):
        raise UsageError("direction_ids must be distinct, one per direction")
    evaluator = PointEvaluator(model, data, loss=loss, attack=attack, batch_size=batch_size, runtime=runtime)
    wanted = None if points is None else {(i, point_key(a)) for i, a in points}
    names = sorted({n for d in directions for n in active_names(d)})
    todo = [({"direction": i, "alpha": a}, [(a, d)])
            for i, d in zip(ids, directions) for a in alphas
            if wanted is None or (i, point_key(a)) in wanted]
    rows = run_points(evaluator, todo, names, on_point=on_point, progress=progress, desc="curve",
                      sharded=sharded)
    return pd.DataFrame(rows, columns=COLUMNS)


def curve_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over directions per alpha: alpha, loss_mean, loss_std, acc_mean, acc_std, n.

    std is the sample standard deviation (ddof=1; 0 with a single direction). A NaN/inf value
    makes its alpha's mean and std NaN/inf rather than being skipped; ``n`` counts every direction.
    """
    grouped = df.groupby("alpha", sort=True)

    def mean(s: pd.Series) -> float:
        return float(np.mean(s.to_numpy(float)))

    def std(s: pd.Series) -> float:
        return float(np.std(s.to_numpy(float), ddof=1)) if len(s) > 1 else 0.0

    out = pd.DataFrame({
        "loss_mean": grouped["loss"].agg(mean), "loss_std": grouped["loss"].agg(std),
        "acc_mean": grouped["acc"].agg(mean), "acc_std": grouped["acc"].agg(std),
        "n": grouped["loss"].size()})
    return out.reset_index()
