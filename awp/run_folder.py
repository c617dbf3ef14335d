"""The run folder of a training run (the README's "Files"), written by rank 0.

``config.json`` (the resolved config) and ``meta.json`` (versions, device, seed, argv, start time)
at the start; after every epoch ``metrics.csv`` (one row per epoch, :data:`awp.epoch_metrics.COLUMNS`),
``best.pt`` when the selection split's robust accuracy improved, ``epoch_NNN.pt`` every
``save_every`` epochs and ``last.pt`` with everything :func:`awp.train.resume_training` needs.
Every file is written atomically (:mod:`awp.io`).
"""
from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from awp import distributed
from awp.checkpoint_file import save_checkpoint
from awp.config import TrainConfig, config_from_dict
from awp.epoch_metrics import COLUMNS
from awp.errors import UsageError, UserError
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


def check_run_folder(run: Path, config: TrainConfig, resume: bool) -> None:
    """One line, before any work, unless ``run`` can take this run: a writable folder that holds
    no run (or, with ``resume``, one of the same config)."""
    if run.exists() and not run.is_dir():
        raise UsageError(f"--out {run} is a file, not a folder")
    check_output_folder(run, "--out")
    has_run = (run / "metrics.csv").exists() or (run / "last.pt").exists()
    if has_run and not resume:
        raise UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    if resume and (run / "config.json").exists():
        saved = json.loads((run / "config.json").read_text())
        if config_from_dict(saved).to_dict() != config.to_dict():
            differing = sorted(k for k, v in config.to_dict().items() if saved.get(k) != v)
            raise UsageError(f"--resume with a different config than {run}/config.json (differs in: "
                             f"{', '.join(differing[:5])})")
