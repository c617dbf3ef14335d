"""The training loop: one adversarial training step (optionally with AWP) and ``fit``.

A step (Wu et al. 2020, Algorithm 1, official one-step form):
1. x_adv = method.attack(model, x, y) on the current weights w;
2. with AWP: v = AWP.compute(method.loss on (x, x_adv, y)) (BN running stats untouched);
3. at w + v (or w): loss = method.loss, backward, optimizer step (momentum and weight decay act
   at w + v, as in the official code), then w <- w - v.

``fit`` runs epochs of such steps, measures train/val/test clean and robust accuracy at the
unperturbed weights in eval mode after every epoch (``awp.metrics``), and writes the run folder
described in the README: config.json, meta.json, metrics.csv, epoch_NNN.pt, best.pt (best validation robust
accuracy) and last.pt (everything needed to resume bit for bit on CPU).
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from awp import distributed
from awp.build import arch_kwargs_for, build_method, build_perturbation
from awp.checkpoint_file import read_checkpoint
from awp.config import TrainConfig
from awp.data import DataSplits, augment, build_dataset, dataset_spec, iterate_batches, iterate_mixed_batches
from awp.epoch_metrics import epoch_metrics
from awp.errors import UsageError, UserError, one_line
from awp.io import read_csv_rows
from awp.methods import Method
from awp.metrics import AttackSpec, metric_attack
from awp.models import build_model
from awp.perturbation import WeightPerturber
from awp.rng import set_rng_state
from awp.run_folder import RESUME_HINT, RunFolder, check_resumable, check_run_folder, check_run_target, run_lock
from awp.runtime import CPU, Runtime, resolve_runtime
from awp.safety import check_size, load_state_strict, meta_skeleton, nonfinite_tensors
from awp.schedule import iterations_per_epoch, lr_at

MAX_TENSORS = 100_000  # parameter tensors a model may register while it is built (a depth of 10^6 stops here)

__all__ = ["RunFolder", "Training", "build_training", "end_of_epoch", "fit", "resume_training", "train_one_epoch",
           "train_step"]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, method: Method, x: Tensor,
               y: Tensor, awp: WeightPerturber | None = None, *,
               runtime: Runtime = CPU, scaler: torch.amp.GradScaler | None = None,
               sync: bool = True, loss_scale: float = 1.0) -> dict[str, Any]:
    """One training step; returns floats (``sync=False``: 0-dim tensors, no host sync).

    Keys: ``loss`` (the training loss, at w + v with AWP), ``adv_acc`` (accuracy of the training
    forward on x_adv, train mode, at w + v: a training-time statistic, not the robust accuracy of
    the gap), ``awp`` (1.0 when a weight perturbation was applied).

    Under DDP ``model`` is the DistributedDataParallel wrapper: only the training forward and
    backward go through it (its gradient all-reduce); the attack runs on the wrapped module, and
    ``awp`` must be built on that module too (its ascent all-reduces its own gradient).
    ``loss_scale`` multiplies the losses that are differentiated (not the returned ``loss``):
    a rank holding n_r of a global batch of N uses n_r * world / N, so DDP's gradient average is
    the gradient of the global batch mean even when the shares differ in size.
    """
    model.train()
    local = model.module if isinstance(model, DistributedDataParallel) else model
    with runtime.autocast():
        x_adv = method.attack(local, x, y)
        method.after_attack(local, x_adv)  # the bn_sequence's extra forwards (official scripts)

    def scaled(loss: Tensor) -> Tensor:
        return loss if loss_scale == 1.0 else loss * loss_scale

    def objective(m: nn.Module) -> Tensor:
        with runtime.autocast():
            return scaled(method.loss(m, x, x_adv, y))

    def step() -> dict[str, Tensor]:
        with runtime.autocast():
            out = method.forward(model, x, x_adv, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            scaled(out["loss"]).backward()
            optimizer.step()
        else:
            scaler.scale(scaled(out["loss"])).backward()
            scaler.step(optimizer)
            scaler.update()
        return out

    if awp is not None:
        with awp.compute(objective).applied(exact=False):
            out = step()
    else:
        out = step()
    with runtime.autocast():
        method.after_step(local, x)
    stats = {"loss": out["loss"].detach(),
             "adv_acc": (out["logits_adv"].argmax(1) == y).float().mean().detach(),
             "awp": torch.tensor(float(awp is not None))}
    return {k: float(v) for k, v in stats.items()} if sync else stats


@dataclass
class _State:
    epoch: int = 0                     # epochs completed
    best_robust_acc: float = -1.0
    best_epoch: int = 0


def _batches(config: TrainConfig, data: DataSplits, method: Method, epoch: int, runtime: Runtime,
             rank: int = 0, world: int = 1):
    """(x, y, size of the global batch) of this rank's shares; one process: the whole batches.

    Under DDP a last global batch smaller than the number of processes is skipped (some rank
    would get no image); every other batch is the single-process batch, split across ranks.
    """
    augmentation = augment.resolve(config.augment, config.padding_mode, data.augment)
    if method.uses_unlabeled:
        if data.unlabeled is None:
            raise UsageError("method 'rst' needs unlabeled=PATH (see `awp pseudo-label`)")
        for x, y, _ in iterate_mixed_batches(data.train, data.unlabeled, config.batch_size,
                                             unsup_fraction=config.unsup_fraction, seed=config.seed,
                                             epoch=epoch, device=runtime.device, augment=augmentation,
                                             rank=rank, world_size=world,
                                             batches=iterations_per_epoch(config, len(data.train))):
            yield x, y, config.batch_size
    else:
        batches = iterate_batches(data.train, config.batch_size, shuffle=True, seed=config.seed,
                                  epoch=epoch, device=runtime.device, augment=augmentation,
                                  rank=rank, world_size=world)
        for b, (x, y) in enumerate(batches):
            size = min(config.batch_size, len(data.train) - b * config.batch_size)
            if size < world:
                break
            yield x, y, size




def fit(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
        progress: bool = True, log: Callable[[str], None] | None = None) -> tuple[nn.Module, Path | None]:
    """Train ``config``; returns (trained model in eval mode, run folder or None when not saving).

    ``out_dir`` None trains in memory only (a notebook's quick try). ``resume`` continues from
    ``out_dir/last.pt``: model, optimizer, epoch, RNG states; data order and augmentation are
    functions of (seed, epoch), so the result is bit-identical to an uninterrupted run on CPU.
    The stages: :func:`build_training`, :func:`resume_training`, :class:`RunFolder`,
    :func:`train_one_epoch`, :func:`end_of_epoch`.
    """
    config.validate()
    runtime = resolve_runtime(config.device, config.precision, config.channels_last, config.compile)
    with distributed.session(runtime.device):
        return _fit(config, Path(out_dir) if out_dir is not None else None, distributed.localize(runtime),
                    resume=resume, progress=progress, log=log)


def _fit(config: TrainConfig, out: Path | None, runtime: Runtime, *, resume: bool, progress: bool,
         log: Callable[[str], None] | None) -> tuple[nn.Module, Path | None]:
    """``fit`` in a process of a group (or alone): rank 0 prints and writes, every rank trains."""
    main = distributed.is_main()
    log = log if (log is not None and main) else (lambda message: None)
    if out is not None:
        check_run_target(out)  # before the lock creates the folder
    with run_lock(out) if out is not None and main else contextlib.nullcontext():
        saved = check_run_folder(out, config, resume, runtime.device) if out is not None else None
        return _train(config, out, runtime, saved, progress=progress, log=log)


def _train(config: TrainConfig, out: Path | None, runtime: Runtime, saved: dict[str, Any] | None, *,
           progress: bool, log: Callable[[str], None]) -> tuple[nn.Module, Path | None]:
    main = distributed.is_main()
    training = build_training(config, runtime)
    folder = RunFolder(out, training) if out is not None else None
    if folder is not None and saved is not None:
        resume_training(training, folder.last, log, saved=saved)
        log(f"resuming {out} after epoch {training.state.epoch}")
    elif folder is not None and main:
        folder.start()  # only now, once data and model are known to load: a bad input leaves nothing behind
    distributed.barrier()
    state = training.state
    bar = _progress(range(state.epoch, config.epochs), progress and main, initial=state.epoch, total=config.epochs)
    for epoch_index in bar:
        started = time.perf_counter()
        stats = train_one_epoch(training, epoch_index, folder)
        row, improved = end_of_epoch(training, epoch_index + 1, stats, started)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train_rob=f"{row['train_robust_acc']:.3f}", test_rob=f"{row['test_robust_acc']:.3f}")
        if folder is not None:
            folder.write_epoch(row, improved)
    distributed.barrier()  # the files exist on return, on every rank
    training.model.eval()
    return training.model, out


@dataclass
class Training:
    """Everything one process trains with: built by :func:`build_training`, advanced by
    :func:`train_one_epoch` and :func:`end_of_epoch`, restored by :func:`resume_training`."""

    config: TrainConfig
    runtime: Runtime
    data: DataSplits
    arch_kwargs: dict[str, Any]
    model: nn.Module                  # the weights (saved, restored)
    forward_model: nn.Module          # compiled or not, shares model's parameters: attacks, AWP, metrics
    train_model: nn.Module            # forward_model, wrapped in DDP under torchrun: the training backward
    method: Method
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    perturbation: WeightPerturber | None
    attack: AttackSpec
    state: _State = field(default_factory=_State)
    rows: list[dict[str, Any]] = field(default_factory=list)


def build_training(config: TrainConfig, runtime: Runtime) -> Training:
    """Stage 1: data, model, method, optimizer and weight perturbation, seeded by ``config.seed``."""
    rank, world = distributed.rank(), distributed.world()
    check_model_size(config)  # on the meta device, before the data set is read
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    data = build_dataset(config.dataset, data_dir=config.data_dir, download=config.download,
                         val_size=config.val_size, train_subset=config.train_subset,
                         split_seed=config.split_seed, unlabeled=config.unlabeled)
    arch_kwargs = arch_kwargs_for(config, data)
    model = build_model(config.model, **arch_kwargs)
    if config.sync_bn and world > 1:
        model = distributed.convert_sync_batchnorm(model, runtime.device)
    model = runtime.prepare_model(model)
    if world > 1:  # same initial weights everywhere (DDP also broadcasts them), then per-rank draws
        torch.manual_seed(config.seed + 1_000_003 * rank)
        random.seed(config.seed + 1_000_003 * rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    forward_model = runtime.compiled(model)
    # DDP wraps the compiled model (nanoGPT's order); attacks, the AWP ascent and the evaluation
    # use forward_model, so only the training backward triggers DDP's gradient all-reduce.
    train_model = forward_model if world == 1 else DistributedDataParallel(
        forward_model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    return Training(config=config, runtime=runtime, data=data, arch_kwargs=arch_kwargs, model=model,
                    forward_model=forward_model, train_model=train_model, method=build_method(config),
                    optimizer=optimizer, scaler=runtime.grad_scaler(),
                    perturbation=build_perturbation(config, forward_model, runtime), attack=metric_attack(config))


def check_model_size(config: TrainConfig) -> None:
    """One line, before anything is allocated or read, unless the config's model builds (on the meta
    device) within the size limit of every checkpoint (:func:`awp.safety.check_size`)."""
    source = f"model {config.model} with model_kwargs {config.model_kwargs}"
    kwargs = arch_kwargs_for(config, dataset_spec(config.dataset))
    skeleton = meta_skeleton(lambda: build_model(config.model, **kwargs), source=source, max_tensors=MAX_TENSORS)
    check_size(skeleton, source)


def resume_training(training: Training, last: Path, log: Callable[[str], None], *,
                    saved: dict[str, Any] | None = None) -> None:
    """Stage 2 (in place): weights, optimizer, scaler, epoch and best so far, RNG states and the
    perturbation's own state from ``last.pt`` (``saved``: its payload, already read and checked
    by :func:`awp.run_folder.check_run_folder`); the metrics rows of the epochs done."""
    rank, world = distributed.rank(), distributed.world()
    if saved is None:
        saved = read_checkpoint(last, map_location=training.runtime.device, hint=RESUME_HINT)
        check_resumable(saved, last)
    load_state_strict(training.model, saved["model"], str(last))
    try:
        training.optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            training.scaler.load_state_dict(saved["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"cannot resume from {last}: its optimizer state does not fit this run "
                        f"({one_line(exc, 120)}); {RESUME_HINT}") from None
    training.state = _State(epoch=saved["epoch"], best_robust_acc=saved["best_robust_acc"],
                            best_epoch=saved["best_epoch"])
    ranks = saved.get("rng_ranks")
    if world == 1 or (ranks is not None and len(ranks) == world):
        set_rng_state(saved["rng"] if world == 1 else ranks[rank])
    else:  # another number of processes: the run continues, but not bit for bit
        torch.manual_seed(training.config.seed + 1_000_003 * rank + 7 * saved["epoch"])
        log(f"note: {last} was written by {len(ranks or [0])} process(es), not {world}; "
            "random draws after the resume differ from an uninterrupted run")
    if training.perturbation is not None:
        legacy = {"generator": saved["rng"]["awp_generator"]} if "awp_generator" in saved["rng"] else {}
        training.perturbation.load_state_dict(saved.get("perturbation") or legacy)
    training.rows = [r for r in read_csv_rows(last.parent / "metrics.csv") if int(r["epoch"]) <= saved["epoch"]]


def train_one_epoch(training: Training, epoch_index: int, folder: RunFolder | None = None) -> dict[str, Any]:
    """Stage 3: one epoch of :func:`train_step` with the schedule's learning rate; returns the
    epoch's lr, whether AWP was active and the mean training-batch loss and accuracy. A
    non-finite loss (any rank) stops the run with the epoch and step, the last checkpoint kept."""
    t, config = training, training.config
    rank, world = distributed.rank(), distributed.world()
    active = t.perturbation if epoch_index >= config.awp_warmup else None
    sums = torch.zeros(2, dtype=torch.float64, device=t.runtime.device)
    finite, lr = [], config.lr
    iterations = iterations_per_epoch(config, len(t.data.train))
    for i, (x, y, size) in enumerate(_batches(config, t.data, t.method, epoch_index, t.runtime, rank, world)):
        lr = lr_at(config, epoch_index, i, iterations)
        for group in t.optimizer.param_groups:
            group["lr"] = lr
        share = len(y) * world / size  # 1.0 in one process
        stats = train_step(t.train_model, t.optimizer, t.method, t.runtime.batch(x), y, active, runtime=t.runtime,
                           scaler=t.scaler if t.scaler.is_enabled() else None, sync=False, loss_scale=share)
        step_stats = torch.stack([stats["loss"], stats["adv_acc"]]).double()
        sums += step_stats if world == 1 else step_stats * share
        finite.append(torch.isfinite(stats["loss"]))
    if world > 1:  # global-batch means; a rank's non-finite loss stops every rank
        sums = distributed.all_reduce_sum(sums) / world
        finite = list(distributed.all_reduce_sum((~torch.stack(finite)).int()) == 0)
        distributed.broadcast_buffers(t.model)  # BN running stats: rank 0's, the ones saved
    bad = (~torch.stack(finite)).nonzero()
    kept = f"; the last good checkpoint is {folder.last} (epoch {t.state.epoch})" if folder is not None and \
        t.state.epoch else "; nothing was saved"
    if len(bad):
        raise UserError(f"non-finite training loss at epoch {epoch_index + 1}, step {int(bad[0]) + 1}{kept}"
                        f" (lower lr, check the data, or use precision=fp32)")
    broken = nonfinite_tensors(t.model.state_dict())
    if broken:  # a finite loss can still leave inf weights after the last step: never save them
        raise UserError(f"non-finite weights after epoch {epoch_index + 1} ({broken[0]}): this epoch was not "
                        f"saved{kept} (lower lr, or check the data)")
    count = len(finite)
    return {"lr": lr, "awp_active": int(active is not None), "train_batch_loss": float(sums[0] / count),
            "train_batch_adv_acc": float(sums[1] / count)}


def end_of_epoch(training: Training, epoch: int, stats: dict[str, Any], started: float) -> tuple[dict[str, Any], bool]:
    """Stage 4: the metrics row of ``epoch`` (train/val/test clean and robust accuracy and loss at
    the unperturbed weights, eval mode) and whether it is the best so far on ``select_on``."""
    t = training
    t.model.eval()
    row = {"epoch": epoch, **stats, **epoch_metrics(t.forward_model, t.data, t.config, t.attack, t.runtime),
           "attack": t.attack.name, "time": time.perf_counter() - started}
    t.rows.append(row)
    selected = row["val_robust_acc" if t.config.select_on == "val" else "test_robust_acc"]
    improved = selected > t.state.best_robust_acc
    if improved:
        t.state.best_robust_acc, t.state.best_epoch = selected, epoch
    t.state.epoch = epoch
    return row, improved


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, unit="epoch", dynamic_ncols=True, leave=False, **kwargs)
