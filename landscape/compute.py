"""The landscape of one checkpoint as one library call (Wu, Xia, Wang, NeurIPS 2020, Sec. 3, Fig. 1).

``compute_landscape(checkpoint_or_run, LandscapeConfig(...), out)`` owns everything between a
checkpoint and its result files: the fixed seeded subset of a split, the attack (the checkpoint's
threat model unless the config says otherwise), the directions (the same seeds for every
checkpoint, so curves compare), the cache key (checkpoint sha256 + every setting that can change a
number), resuming from a partial table, sharding the points across a torchrun group, the flatness
scalars, and the files of :mod:`landscape.io` with their plot. ``awp landscape`` parses its flags
into a :class:`LandscapeConfig` and calls this function, so a notebook gets byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from awp import distributed
from awp.loaded import LoadedCheckpoint, load_run
from awp.data import SPLITS
from awp.checks import check_int, check_number, check_seed
from awp.errors import UsageError, require
from awp.metrics import AttackSpec
from awp.registry import check_choice
from awp.runtime import PRECISIONS, Runtime, resolve_runtime
from awp.threat import check_threat, eval_threat
from landscape import io as lio
from landscape.curve import weight_loss_curve
from landscape.directions import IGNORES, NORMALIZATIONS, random_direction
from landscape.evaluate import LOSSES
from landscape.flatness import average_sharpness, curvature, sharpness, worst_case_sharpness
from landscape.surface import weight_loss_surface

DEFAULT_ALPHAS = tuple(round(v, 12) for v in np.linspace(-1, 1, 21).tolist())


def parse_range(text: str, what: str = "--alphas") -> list[float]:
    """'start:stop:count' (linspace) or a comma list '-1,0,1' -> floats; anything else: one-line UsageError."""
    bad = UsageError(f"bad {what} {text!r}: use start:stop:count (e.g. -1:1:21) or a comma list (e.g. -0.5,0,0.5)")
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise bad
            start, stop, count = float(parts[0]), float(parts[1]), parts[2]
            if not count.strip().isdigit() or int(count) < 1:
                raise bad
            values = np.linspace(start, stop, int(count)).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise bad from None
    if not values or not all(np.isfinite(values)):
        raise bad
    return [round(v, 12) for v in values]


def _betas(text: str) -> list[float]:
    return parse_range(text, "--betas")


@dataclass(frozen=True)
class LandscapeConfig:
    """Every setting of a landscape; checked on construction (one line per bad value).

    ``eps`` / ``step_size`` None: the data set's evaluation threat model
    (:func:`awp.threat.eval_threat`). ``surface``: a 2-D grid along the first two directions
    (``betas`` default: the alphas). ``xi`` > 0 adds worst- and average-case sharpness (Stutz et
    al. 2021) within ||nu_l|| <= xi ||w_l||, by ``xi_steps`` ascent steps and ``xi_draws`` random
    draws. ``awp landscape`` has one flag per field (``--sample-seed`` for ``sample_seed``).
    """

    directions: int = 3
    seed: int = 0                           # directions use seeds S, S+1, ...; also the attack's seed
    alphas: tuple[float, ...] = field(default=DEFAULT_ALPHAS, metadata={"parse": parse_range})
    betas: tuple[float, ...] | None = field(default=None, metadata={"parse": _betas})
    surface: bool = False
    normalization: str = "filter"
    ignore: str = "biasbn"
    split: str = "train"
    samples: int = 256                      # images of the split (a fixed seeded subset)
    sample_seed: int = 0
    loss: str = "adversarial"
    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    radius: float = 0.5                     # |alpha| of the sharpness scalar
    xi: float = 0.0
    xi_steps: int = 5
    xi_draws: int = 5                       # random perturbations of average-case sharpness
    batch_size: int = 256
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", _floats(self.alphas, "alphas"))
        if self.betas is not None:
            object.__setattr__(self, "betas", _floats(self.betas, "betas"))
        for key, low in (("directions", 1), ("samples", 1), ("steps", 0), ("batch_size", 1), ("xi_steps", 1),
                         ("xi_draws", 1)):
            check_int(getattr(self, key), key, low)
        check_seed(self.seed, "seed")
        check_seed(self.sample_seed, "sample_seed")
        require(not self.surface or self.directions >= 2, "a surface needs directions >= 2 (it uses the first two)")
        check_number(self.radius, "radius", low=0, low_open=True, unit=" (|alpha| of the sharpness scalar)")
        check_number(self.xi, "xi", low=0, high=1, unit=" (a relative weight norm; 0: off)")
        check_threat(eps=self.eps, step_size=self.step_size)
        NORMALIZATIONS.resolve(self.normalization)
        IGNORES.resolve(self.ignore)
        LOSSES.resolve(self.loss)
        check_choice("split", self.split, SPLITS)
        check_choice("precision", self.precision, PRECISIONS)

    @property
    def grid_betas(self) -> tuple[float, ...] | None:
        return (self.betas or self.alphas) if self.surface else None

    @property
    def direction_seeds(self) -> list[int]:
        return [self.seed + i for i in range(2 if self.surface else self.directions)]


def _floats(values: Any, what: str) -> tuple[float, ...]:
    out = tuple(round(float(v), 12) for v in values)
    if not out or not all(np.isfinite(out)):
        raise UsageError(f"{what} must be a non-empty list of finite numbers")
    return out


@dataclass
class LandscapeResult:
    """``table`` (direction, alpha[, beta], loss, acc), ``flatness`` (scalars), ``info`` (what
    ``landscape.json`` holds: every setting, cache key, point counts) and ``folder`` (None when
    computed in memory)."""

    table: pd.DataFrame
    flatness: dict[str, Any]
    info: dict[str, Any]
    folder: Path | None = None


def landscape_samples(run: LoadedCheckpoint, config: LandscapeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed seeded subset of ``config.split``: independent of the run seed, so every checkpoint
    of a data set sees the same images."""
    images = run.split(config.split)
    n = min(config.samples, len(images))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.sample_seed))
    return images.batch(order[:n].sort().values)


def landscape_attack(run: LoadedCheckpoint, config: LandscapeConfig) -> AttackSpec:
    """PGD-``steps`` under the data set's evaluation threat model (:func:`awp.threat.eval_threat`:
    CIFAR Linf 8/255 step 2/255, SVHN step 1/255, digits the training eps and eps/4), which
    ``config.eps`` / ``config.step_size`` override; seeded with ``config.seed``."""
    threat = eval_threat(run.config.dataset, run.config.norm, run.config.eps, config.eps)
    step = threat.step_size if config.step_size is None else config.step_size
    return AttackSpec(eps=threat.eps, step_size=step, steps=config.steps, norm=run.config.norm, seed=config.seed)


def _settings(config: LandscapeConfig, attack: AttackSpec, samples: int, runtime: Runtime) -> dict[str, Any]:
    """The settings recorded in ``landscape.json`` and hashed into the cache key."""
    return {"kind": "surface" if config.surface else "curve", "direction_seeds": config.direction_seeds,
            "normalization": config.normalization, "ignore": config.ignore, "bn_mode": "eval",
            "alphas": list(config.alphas), "betas": None if config.grid_betas is None else list(config.grid_betas),
            "loss": config.loss, "attack": attack.describe(), "split": config.split, "samples": samples,
            "sample_seed": config.sample_seed, "batch_size": config.batch_size,
            "device_type": runtime.device.type, "precision": runtime.precision,
            # Recorded only when set, so tables computed before this option keep their key.
            **({"channels_last": True} if runtime.channels_last else {})}


def _points(forward: torch.nn.Module, directions: list, config: LandscapeConfig, data: tuple,
            recorder: "_Recorder", common: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Compute the points the recorder does not hold yet; returns every row in the grid's order, and the columns."""
    done = list(recorder.rows)
    if config.surface:
        grid = [(a, b) for a in config.alphas for b in config.grid_betas]
        have = {(r["alpha"], r["beta"]) for r in done}
        todo = [p for p in grid if p not in have]
        if todo:
            weight_loss_surface(forward, directions[0], directions[1], config.alphas, config.grid_betas, data,
                                points=todo, **common)
        columns, keys = ["alpha", "beta", "loss", "acc"], ("alpha", "beta")
    else:
        grid = [(s, a) for s in config.direction_seeds for a in config.alphas]
        have = {(r["direction"], r["alpha"]) for r in done}
        todo = [p for p in grid if p not in have]
        if todo:
            weight_loss_curve(forward, directions, config.alphas, data, direction_ids=config.direction_seeds,
                              points=todo, **common)
        columns, keys = ["direction", "alpha", "loss", "acc"], ("direction", "alpha")
    order = {p: i for i, p in enumerate(grid)}
    rows = [r for r in recorder.rows if tuple(r[k] for k in keys) in order]
    return sorted(rows, key=lambda r: order[tuple(r[k] for k in keys)]), columns


def _flatness(df: pd.DataFrame, forward: torch.nn.Module, config: LandscapeConfig, data: tuple,
              attack: AttackSpec, runtime: Runtime) -> dict[str, Any]:
    """The curve scalars, and the model-based ones of Stutz et al. when ``xi`` > 0 (not cached: a
    few attacks, on the same samples and attack as the curve)."""
    flatness: dict[str, Any] = {}
    if not config.surface:
        radius = min(config.radius, max(config.alphas), -min(config.alphas))
        flatness = {"sharpness": sharpness(df, radius) if radius > 0 else None, "sharpness_radius": radius,
                    "curvature": curvature(df) if len(config.alphas) >= 3 else None}
    if config.xi > 0:
        scalar = dict(batch_size=config.batch_size, runtime=runtime)
        flatness.update(
            xi=config.xi, xi_steps=config.xi_steps, xi_draws=config.xi_draws,
            worst_case_sharpness=worst_case_sharpness(forward, data, attack, xi=config.xi, steps=config.xi_steps,
                                                      **scalar),
            average_sharpness=average_sharpness(forward, data, attack, xi=config.xi, draws=config.xi_draws,
                                                seed=config.seed, **scalar))
    return flatness


class _Recorder:
    """Collects rows as points finish; rank 0 saves the partial table after each (resume)."""

    def __init__(self, done: list[dict[str, Any]], folder: Path | None, key: str):
        self.rows, self.folder, self.key, self.computed = list(done), folder, key, 0

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.computed += 1
        if self.folder is not None and distributed.is_main():
            lio.save_partial(self.folder, self.key, self.rows)


def compute_landscape(checkpoint: str | Path | LoadedCheckpoint, config: LandscapeConfig | None = None,
                      out: str | Path | None = None, *, device: str | torch.device = "auto",
                      data_dir: str | None = None, progress: bool = False, title: str | None = None,
                      **load: Any) -> LandscapeResult:
    """The adversarial weight loss landscape of a checkpoint: compute, cache, resume, save, plot.

    ``checkpoint``: a path, ``'robustbench:NAME'`` (``load`` passes ``dataset``, ``threat``,
    ``model_dir`` to :func:`awp.loaded.load_run`) or a :class:`~awp.loaded.LoadedCheckpoint`.
    ``out``: the result folder (``landscape.csv``, ``landscape.json``, ``landscape.png``); points
    already computed there under the same cache key are reused, and an interrupted call resumes.
    None computes in memory. Under torchrun the points are split across the group and rank 0
    alone writes. The model is left bit-identical.
    """
    config = LandscapeConfig() if config is None else config
    runtime = distributed.localize(resolve_runtime(device, config.precision, config.channels_last, config.compile))
    run = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_run(checkpoint, runtime.device,
                                                                               data_dir=data_dir, **load)
    folder = None if out is None else Path(out)
    model = runtime.prepare_model(run.model)
    forward = runtime.compiled(model)  # shares model's parameters; directions are taken on model
    x, y = landscape_samples(run, config)
    attack = landscape_attack(run, config)
    settings = _settings(config, attack, len(x), runtime)
    key = lio.cache_key(run.sha256, settings)
    done = lio.load_done(folder, key) if folder is not None else []
    recorder = _Recorder(done, folder, key)
    directions = [random_direction(model, seed=s, normalization=config.normalization, ignore=config.ignore)
                  for s in config.direction_seeds]
    common = dict(loss=config.loss, attack=attack, batch_size=config.batch_size, runtime=runtime,
                  on_point=recorder, progress=progress and distributed.is_main(), sharded=True)
    rows, columns = _points(forward, directions, config, (x, y), recorder, common)
    df = pd.DataFrame(rows, columns=columns)
    flatness = _flatness(df, forward, config, (x, y), attack, runtime)
    info = _info(run, settings, key, len(rows), recorder.computed, flatness)
    if folder is not None and distributed.is_main():
        lio.save_result(folder, rows, columns, info)
        _plot(df, folder / lio.PNG, config, title or f"{Path(run.source).stem} (epoch {run.meta.get('epoch')})")
    return LandscapeResult(table=df, flatness=flatness, info=info, folder=folder)


def _info(run: LoadedCheckpoint, settings: dict[str, Any], key: str, total: int, computed: int,
          flatness: dict[str, Any]) -> dict[str, Any]:
    meta = run.meta
    return {"checkpoint": run.source, "checkpoint_sha256": run.sha256, "arch": meta.get("arch"),
            "dataset": meta.get("dataset"), "method": meta.get("method"), "awp_gamma": meta.get("awp_gamma"),
            "epoch": meta.get("epoch"), "metrics": meta.get("metrics"), "settings": settings,
            "cache_key": key, "points_total": total, "points_computed": computed,
            "points_reused": total - computed, "flatness": flatness,
            "direction_semantics": "direction column = the direction's seed",
            # weights that --allow-nonfinite let through: every number above is suspect
            **({"nonfinite_weights": meta["nonfinite_weights"]} if meta.get("nonfinite_weights") else {})}


def _plot(df: pd.DataFrame, path: Path, config: LandscapeConfig, title: str) -> None:
    from landscape.plot import plot_curves, plot_surface

    if config.surface:
        plot_surface(df, path, normalization=config.normalization, loss=config.loss, steps=config.steps, title=title)
    else:
        plot_curves({title: df}, path, normalization=config.normalization, loss=config.loss, steps=config.steps,
                    title=title)

