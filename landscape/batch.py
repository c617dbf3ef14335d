"""Several checkpoints into one output folder: what ``awp landscape`` and ``awp measures`` do with
their list of checkpoints, as library calls a notebook can make too.

Each checkpoint's results go to a subfolder of ``out`` named after it (:func:`output_names`):
sanitized to letters, digits, ``.``, ``_`` and ``-``, never ``.`` / ``..`` or hidden, never a name
the command itself writes at the top of ``out`` (``curves.png``), distinct for distinct
checkpoints (``epoch_010.pt`` of two runs: ``RUN_epoch_010``), and checked to resolve inside
``out`` (a symlink there pointing elsewhere is refused) before any work is done.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from awp import distributed
from awp.errors import UserError
from awp.io import check_output_folder, nonfinite_paths
from awp.robustbench import ROBUSTBENCH_PREFIX
from awp.safety import nonfinite_warning
from landscape.compute import LandscapeConfig, LandscapeResult, compute_landscape
from landscape.io import nonfinite_results
from landscape.measure_run import MeasureConfig, MeasuresResult, compute_measures

CURVES = "curves.png"          # the overlay of every checkpoint's curves, at the top of out
RESERVED = frozenset({CURVES})  # names the commands write at the top of out
MAX_NAME = 120                  # bytes; leaves room for the temporary-file names inside


def _clean(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")[:MAX_NAME]
    name = name if name.strip("._-") else "checkpoint"
    return f"{name}_checkpoint" if name in RESERVED else name


def output_names(checkpoints: list[str | Path]) -> list[str]:
    """One distinct, safe subfolder name per checkpoint (module docstring): the file's stem, its
    run folder's name in front where stems collide, a running number where that is not enough."""
    paths = [Path(str(c).replace(":", "_")) if str(c).startswith(ROBUSTBENCH_PREFIX) else Path(c)
             for c in checkpoints]
    stems = [_clean(p.stem) for p in paths]
    names = [_clean(f"{p.parent.name}_{stem}") if stems.count(stem) > 1 else stem for p, stem in zip(paths, stems)]
    if len(set(names)) != len(names):
        names = [_clean(f"{i:02d}_{n}") for i, n in enumerate(names)]
    return names


def check_outputs(checkpoints: list[str | Path], out: str | Path) -> list[Path]:
    """Fail with one line before any work unless every checkpoint exists and every output folder
    can be written and lies inside ``out``; returns the output folders, in order."""
    out = Path(out)
    for c in checkpoints:
        path = Path(c)
        if str(c).startswith(ROBUSTBENCH_PREFIX):
            continue
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a checkpoint file")
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
    folders = [out / name for name in output_names(checkpoints)]
    check_output_folder(out, "--out")
    root = out.resolve()
    for folder in folders:
        check_output_folder(folder, "--out")
        if root not in folder.resolve().parents:
            raise UserError(f"output folder {folder} resolves to {folder.resolve()}, outside --out {out}")
    return folders


@dataclass
class BatchResult:
    """What a batch wrote: per checkpoint (by its output name) the result, and the non-finite
    values found, one phrase each (the command exits non-zero when there are any)."""

    results: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def compute_landscapes(checkpoints: list[str | Path], config: LandscapeConfig, out: str | Path, *,
                       log: Callable[[str], None] | None = None, **load: Any) -> BatchResult:
    """:func:`landscape.compute_landscape` of every checkpoint into ``out/<name>/``, then the overlay
    ``out/curves.png`` of the curves (not for surfaces); ``load`` goes to the loader (device,
    data_dir, dataset, threat, model_dir, allow_nonfinite, progress)."""
    from landscape.plot import plot_curves

    folders = check_outputs(checkpoints, out)
    batch = BatchResult()
    for checkpoint, folder in zip(checkpoints, folders):
        result: LandscapeResult = compute_landscape(checkpoint, config, folder, **load)
        batch.results[folder.name] = result
        batch.problems += [f"{checkpoint}: {p}" for p in nonfinite_results(result.table.to_dict("records"),
                                                                           result.info)]
        _tell(log, checkpoint, result.info, _landscape_summary(result.info))
    if distributed.is_main() and not config.surface:
        plot_curves({name: r.table for name, r in batch.results.items()}, Path(out) / CURVES,
                    normalization=config.normalization, loss=config.loss, steps=config.steps)
    return batch


def measure_checkpoints(checkpoints: list[str | Path], config: MeasureConfig, out: str | Path, *,
                        log: Callable[[str], None] | None = None, **load: Any) -> BatchResult:
    """:func:`landscape.measure_run.compute_measures` of every checkpoint into ``out/<name>/``."""
    folders = check_outputs(checkpoints, out)
    batch = BatchResult()
    for checkpoint, folder in zip(checkpoints, folders):
        result: MeasuresResult = compute_measures(checkpoint, config, folder, log=log, **load)
        batch.results[folder.name] = result
        batch.problems += [f"{checkpoint}: {k} is {v}" for k, v in nonfinite_paths(result.values).items()]
        _tell(log, checkpoint, result.info, f"{result.info['measures_computed']} computed, "
                                            f"{result.info['measures_reused']} reused -> {result.path}")
    return batch


def _tell(log: Callable[[str], None] | None, checkpoint: Any, info: dict[str, Any], summary: str) -> None:
    if not distributed.is_main():
        return
    if info.get("nonfinite_weights"):
        print(nonfinite_warning(str(checkpoint), info["nonfinite_weights"]), file=sys.stderr)
    if log is not None:
        log(f"{checkpoint}: {summary}")


def _landscape_summary(info: dict[str, Any]) -> str:
    flat, used = info["flatness"], info["settings"]
    extra = (f", sharpness@{flat['sharpness_radius']:g} = {flat['sharpness']:.4f}"
             if flat.get("sharpness") is not None else "")
    return (f"{info['points_computed']} points computed, {info['points_reused']} reused{extra} "
            f"({used['loss']} loss, {used['attack']['name']}, {used['samples']} {used['split']} images)")
