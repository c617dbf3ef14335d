"""The run folder of a training run (the README's "Files"), written by rank 0.

``config.json`` (the resolved config) and ``meta.json`` (versions, device, seed, argv, start time)
at the start; after every epoch ``metrics.csv`` (one row per epoch, :data:`awp.epoch_metrics.COLUMNS`),
``best.pt`` when the selection split's robust accuracy improved, ``epoch_NNN.pt`` every
``save_every`` epochs and ``last.pt`` with everything :func:`awp.train.resume_training` needs.
Every file is written atomically (:mod:`awp.io`). While a run trains, the folder is locked
(:func:`run_lock`); ``--resume`` continues only a folder whose ``config.json`` and ``last.pt``
both hold the same config (:func:`check_run_folder`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from awp import distributed
from awp.checkpoint_file import read_checkpoint, save_checkpoint
from awp.config import TrainConfig, config_from_dict
from awp.epoch_metrics import COLUMNS
from awp.errors import UsageError, UserError, one_line
from awp.io import atomic_write_json, check_output_folder, write_csv
from awp.rng import rng_state
from awp.runtime import Runtime
from awp.version import __version__

if TYPE_CHECKING:
    from awp.train import Training


def run_meta(config: TrainConfig, runtime: Runtime) -> dict[str, Any]:
    """What ``meta.json`` records: versions, platform, device, precision, seed, argv, start time."""
    world = {"world_size": distributed.world()} if distributed.world() > 1 else {}
    return {**world, "awp_toolkit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": str(runtime.device),
            "device_name": (torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda"
                            else platform.processor() or "cpu"),
            "precision": runtime.precision, "seed": config.seed, "argv": sys.argv,
            "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


class RunFolder:
    """The run folder's writer (rank 0): config.json and meta.json at the start; after every
    epoch metrics.csv, best.pt when the selection improved, epoch_NNN.pt every ``save_every``
    epochs and last.pt with everything :func:`awp.train.resume_training` needs."""

    def __init__(self, path: Path, training: "Training"):
        self.path, self.training = path, training
        self.last = path / "last.pt"

    def start(self) -> None:
        t = self.training
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {self.path}: {exc.strerror or exc}") from exc
        atomic_write_json(self.path / "config.json", t.config.to_dict())
        atomic_write_json(self.path / "meta.json", run_meta(t.config, t.runtime))

    def _save(self, path: Path, epoch: int, metrics: dict[str, Any], **extra: Any) -> None:
        t = self.training
        save_checkpoint(path, t.model, arch=t.config.model, arch_kwargs=t.arch_kwargs, dataset=t.config.dataset,
                        method=t.config.method, awp_gamma=t.config.awp_gamma, epoch=epoch, metrics=metrics,
                        config=t.config.to_dict(), **extra)

    def write_epoch(self, row: dict[str, Any], improved: bool) -> None:
        t, epoch = self.training, row["epoch"]
        world = distributed.world()
        rng_ranks = distributed.all_gather_objects(rng_state()) if world > 1 else None  # every rank joins
        if not distributed.is_main():
            return
        write_csv(self.path / "metrics.csv", t.rows, COLUMNS)
        metrics = {k: v for k, v in row.items() if k != "time"}
        if improved:
            self._save(self.path / "best.pt", epoch, {**metrics, "selected_on": t.config.select_on})
        if epoch % t.config.save_every == 0 or epoch == t.config.epochs:
            self._save(self.path / f"epoch_{epoch:03d}.pt", epoch, metrics)
        self._save(self.last, epoch, metrics, optimizer=t.optimizer.state_dict(),
                   scaler=t.scaler.state_dict() if t.scaler.is_enabled() else {}, rng=rng_state(),
                   perturbation=t.perturbation.state_dict() if t.perturbation is not None else {},
                   best_robust_acc=t.state.best_robust_acc, best_epoch=t.state.best_epoch,
                   **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}))


RESUME_HINT = "resume cannot continue from it: start the run again in a new --out"
_RESUMABLE = {"optimizer": dict, "epoch": int, "best_robust_acc": (int, float), "best_epoch": int, "rng": dict,
              "config": dict}


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder while the block trains into it, so that two
    ``awp train`` never write one folder. The lock is the kernel's ``flock`` on the folder itself
    (no lock file): released on any exit, a kill included, so a killed run leaves no stale lock.
    A folder this call had to create is removed again when the block fails before writing into it."""
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"cannot create run folder {run}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run} is being written by another `awp train` (it holds the folder's lock); wait "
                            f"for it to finish or choose another --out") from None
        try:
            yield
        except BaseException:
            if created and not any(run.iterdir()):  # a bad input leaves no empty folder behind
                run.rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock


def _stored_config(path: Path, values: Any) -> dict[str, Any]:
    """The config stored in ``path`` as a dict of a valid config, or one line naming the file."""
    if not isinstance(values, dict):
        raise UserError(f"cannot resume: {path} holds no config (found a {type(values).__name__})")
    try:
        return config_from_dict(values).to_dict()
    except UsageError as exc:
        raise UserError(f"cannot resume: the config in {path} is not valid ({exc})") from None


def _read_config_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot resume: {path} is not readable JSON ({one_line(exc, 120)}); restore it or start "
                        f"the run again in a new --out") from None
    return _stored_config(path, values)


def _same_config(config: TrainConfig, stored: dict[str, Any], source: Path) -> None:
    if stored != config.to_dict():
        differing = sorted(k for k, v in config.to_dict().items() if stored.get(k) != v)
        raise UsageError(f"--resume with a different config than {source} (differs in: {', '.join(differing[:5])})")


def check_resumable(payload: dict[str, Any], path: Path) -> None:
    """One line unless ``payload`` (a read ``last.pt``) holds what resuming needs, typed as written."""
    for key, kind in _RESUMABLE.items():
        if key not in payload:
            raise UserError(f"cannot resume from {path}: it has no {key!r} (only a last.pt written by awp train "
                            f"holds the optimizer, RNG and best-so-far state); {RESUME_HINT}")
        value = payload[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"cannot resume from {path}: its {key!r} is {value!r:.40}, not "
                            f"{'a number' if key == 'best_robust_acc' else 'a ' + kind.__name__}; {RESUME_HINT}")
    if payload["epoch"] < 0 or payload["best_epoch"] < 0:
        raise UserError(f"cannot resume from {path}: its epoch {payload['epoch']} is negative; {RESUME_HINT}")


def check_run_target(run: Path) -> None:
    """One line unless ``run`` can be a run folder: no file in its place, writable or creatable."""
    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run} is a file, not a folder")
    check_output_folder(run, "--out")


def check_run_folder(run: Path, config: TrainConfig, resume: bool,
                     map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """One line, before any training, unless ``run`` can take this run: a writable folder that
    holds no run, or, with ``resume``, one whose ``config.json`` and ``last.pt`` both hold this
    config. Returns ``last.pt`` read and checked (:func:`check_resumable`) when resuming from it."""
    check_run_target(run)
    last = run / "last.pt"
    has_run = (run / "metrics.csv").exists() or last.exists()
    if has_run and not resume:
        raise UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    if not resume:
        return None
    stored = _read_config_json(run / "config.json")
    if stored is not None:
        _same_config(config, stored, run / "config.json")
    if not last.exists():
        return None
    payload = read_checkpoint(last, map_location=map_location, hint=RESUME_HINT)
    check_resumable(payload, last)
    _same_config(config, _stored_config(last, payload["config"]), last)
    return payload
