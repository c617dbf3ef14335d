"""Robust accuracy of a model or checkpoint under the evaluation attacks of the AWP tables.

Wu, Xia & Wang (NeurIPS 2020), "Adversarial Weight Perturbation Helps Robust Generalization",
report natural (clean) accuracy and accuracy under FGSM, PGD-20, CW-inf and AutoAttack. The conventions
are fixed here and written next to every number, in each result's
``attack`` description:

- clean: accuracy on the unattacked images (the tables' "natural"; ``natural`` is accepted as
  another name for it).
- FGSM (Goodfellow et al. 2015): one step of size eps from x, no random start, CE loss.
- PGD-20 / PGD-100 (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
  Attacks"): radius eps, step eps/4 (2/255 at 8/255) unless ``step_size`` is given, a uniform
  random start in the eps-ball, 1 restart, cross-entropy loss; the last iterate is classified,
  as in the Rice et al. / AWP evaluation code.
- CW-inf: the same PGD on the Carlini-Wagner margin loss -clamp(z_y - max_{k != y} z_k + kappa,
  min=0) (Carlini & Wagner 2017), kappa 50, 30 steps of eps/4, in the lineage of the MART and
  AWP tables.
- AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
  of diverse parameter-free attacks"), version "standard": APGD-CE, APGD-T, FAB-T and Square,
  each on the points still robust, through the authors' reference implementation (the
  ``pyautoattack`` package), always with a seed.

Every attack runs with the model in eval mode (BatchNorm on its running statistics, so a number
does not depend on how the test set is batched) and leaves the model as it found it: train/eval
flags, BN statistics, ``.grad`` fields and the global random state. Random starts come from a
generator seeded with ``seed`` afresh for each attack, so a number does not depend on which other
attacks ran before it and two calls give identical results.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from awp.attacks import NORMS, cw_inf, fgsm, model_mode, pgd
from awp.errors import UsageError, UserError
from awp.metrics import Craft, device_batches, loss_and_correct
from awp.runtime import CPU, Runtime, resolve_runtime

__all__ = ["ATTACKS", "evaluate", "evaluate_checkpoint", "format_table"]

ATTACKS = ("clean", "fgsm", "pgd20", "pgd100", "cw", "autoattack")
ALIASES = {"natural": "clean"}  # the AWP tables' word

CW_KAPPA = 50.0  # MART / AWP tables (Bag of Tricks uses 0)
CW_STEPS = 30
AUTOATTACK_MISSING = "AutoAttack needs the reference implementation: pip install 'awp-landscape[autoattack]'"
# AutoAttack projects in float32; allow rounding at that precision when checking its output.
_BALL_TOLERANCE = 1e-5



# --------------------------------------------------------------------------------------------
# Descriptions: the conventions written next to every number


def pixels(value: float) -> str:
    """0.2 -> '0.2 (51/255)'; 0.05 -> '0.05': the /255 form only where it is exact."""
    k = value * 255
    if value > 0 and abs(k - round(k)) < 1e-6:
        return f"{value:.4g} ({round(k)}/255)"
    return f"{value:.4g}"


def _norm_label(norm: str) -> str:
    return {"linf": "Linf", "l2": "L2"}[norm]


def _autoattack_version() -> str:
    try:
        return importlib.metadata.version("pyautoattack")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree
        import pyautoattack

        return str(getattr(pyautoattack, "__version__", "unknown"))


def _describe(name: str, *, eps: float, step: float, norm: str, seed: int) -> str:
    ball = f"{_norm_label(norm)} eps={pixels(eps)}"
    if name == "clean":
        return "clean (natural) accuracy, eval mode"
    if name == "fgsm":
        return f"FGSM {ball}, one step of eps, no random start, CE loss, eval mode"
    if name in ("pgd20", "pgd100"):
        steps = int(name[3:])
        return (f"PGD-{steps} {ball}, step={pixels(step)}, {steps} steps, uniform random start, "
                f"1 restart, CE loss, eval mode, seed {seed}")
    if name == "cw":
        return (f"CW-inf {ball}, step={pixels(step)}, {CW_STEPS} steps, kappa={CW_KAPPA:g} margin loss, "
                f"uniform random start, 1 restart, eval mode, seed {seed}")
    return (f"AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), {ball}, "
            f"pyautoattack {_autoattack_version()}, seed {seed}, eval mode")


# --------------------------------------------------------------------------------------------
# Argument checks (one line each, before any work is done)


def _check_attacks(attacks: Iterable[str] | str) -> tuple[str, ...]:
    names = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    names = tuple(ALIASES.get(a, a) for a in names)
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise UsageError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(ATTACKS)}")
    if not names:
        raise UsageError(f"no attack asked for; choose from: {', '.join(ATTACKS)}")
    return tuple(dict.fromkeys(names))  # drop repeats, keep the caller's order


def _check_inputs(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, step_size: float | None,
                  batch_size: int, runtime: Runtime, names: tuple[str, ...]) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise UsageError("x must be a float tensor N x C x H x W in [0, 1]")
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x):
        raise UsageError(f"y must be a 1-D tensor of {len(x)} labels, got shape {tuple(getattr(y, 'shape', ()))}")
    if len(x) == 0:
        raise UsageError("nothing to evaluate: x holds no images")
    # The attacks clamp to [0, 1]; normalized inputs would be silently destroyed by that clamp.
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise UsageError("x must lie in [0, 1] (models normalize inside; pass raw pixels)")
    if norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise UsageError(f"eps must be a number >= 0, got {eps!r}")
    if step_size is not None and not step_size >= 0:
        raise UsageError(f"step_size must be >= 0, got {step_size}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise UsageError(f"batch_size must be a whole number >= 1, got {batch_size}")
    if norm != "linf" and "cw" in names:
        raise UsageError("cw is the Linf CW attack (CW-inf); with norm='l2' use pgd20/pgd100/autoattack")
    device = next((p.device for p in model.parameters()), runtime.device)
    if device.type != runtime.device.type:
        raise UsageError(f"the model is on {device} but the runtime on {runtime.device}; "
                         f"pass runtime=resolve_runtime('{device.type}')")


def _import_autoattack():
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError(AUTOATTACK_MISSING) from None
    return AutoAttack


# --------------------------------------------------------------------------------------------
# The evaluation loop


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, craft: Craft | None, *, batch_size: int,
              runtime: Runtime, generator: torch.Generator) -> float:
    """Fraction of ``x`` classified correctly after ``craft`` (None: as is): the shared loop of
    :func:`awp.metrics.loss_and_correct`, read once at the end; NaN when some logit is not finite."""
    sums = loss_and_correct(model, device_batches(x, y, batch_size, runtime), craft, runtime=runtime,
                            generator=generator)
    return float(sums[1]) / len(x)


def _crafter(name: str, model: nn.Module, *, eps: float, step: float, norm: str) -> Craft | None:
    if name == "clean":
        return None
    if name == "fgsm":
        return lambda xb, yb, g: fgsm(model, xb, yb, eps=eps, norm=norm, mode="eval")
    if name in ("pgd20", "pgd100"):
        steps = int(name[3:])
        return lambda xb, yb, g: pgd(model, xb, yb, eps=eps, step_size=step, steps=steps, norm=norm,
                                     random_start=True, restarts=1, loss="ce", mode="eval", generator=g)
    if name == "cw":
        return lambda xb, yb, g: cw_inf(model, xb, yb, eps=eps, step_size=step, steps=CW_STEPS,
                                        kappa=CW_KAPPA, random_start=True, mode="eval", generator=g)
    raise AssertionError(name)  # autoattack is handled by _autoattack_accuracy


class _AutocastLogits(nn.Module):
    """``model`` with its forward under the runtime's autocast and float32 logits.

    AutoAttack calls the model directly; this keeps the precision decision in the Runtime and
    hands AutoAttack's losses the float32 logits they were written for.
    """

    def __init__(self, model: nn.Module, runtime: Runtime):
        super().__init__()
        self.model = model
        self.runtime = runtime

    def forward(self, x: Tensor) -> Tensor:
        with self.runtime.autocast():
            return self.model(x).float()


@contextlib.contextmanager
def _weights_frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on the weights for the block, restoring each flag.

    FAB calls ``.backward()``, which would otherwise fill the weights' ``.grad`` fields behind the
    caller's back (and spend time computing them); input gradients do not need weight gradients.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, seed: int,
                         batch_size: int, runtime: Runtime) -> float:
    AutoAttack = _import_autoattack()
    x_dev, y_dev = runtime.batch(x), y.to(runtime.device)
    forward = model if runtime.precision == "fp32" else _AutocastLogits(model, runtime)
    # pyautoattack reseeds the global generators (torch.manual_seed) for each attack; fork them
    # so the caller's random stream is the same after evaluation as before.
    cuda = [runtime.device.index if runtime.device.index is not None else torch.cuda.current_device()] \
        if runtime.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _weights_frozen(model):
        attack = AutoAttack(forward, norm=_norm_label(norm), eps=float(eps), version="standard",
                            seed=int(seed), device=runtime.device)
        x_adv, _ = attack.run_standard_evaluation(x_dev, y_dev, batch_size=batch_size)
    x_adv = x_adv.detach().to(runtime.device)
    # Trust but verify: a point outside the threat model would inflate the attack's success.
    delta = (x_adv - x_dev).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    if x_adv.shape != x_dev.shape or bool((size > eps * (1 + _BALL_TOLERANCE) + _BALL_TOLERANCE).any()) \
            or float(x_adv.min()) < -_BALL_TOLERANCE or float(x_adv.max()) > 1 + _BALL_TOLERANCE:
        raise RuntimeError(f"AutoAttack returned points outside the {_norm_label(norm)} ball of radius {eps} "
                           f"or outside [0, 1] (largest perturbation {float(size.max()):.6g})")
    # Classify what AutoAttack returned ourselves rather than trusting its own flags.
    return _accuracy(model, x_adv, y_dev, None, batch_size=batch_size, runtime=runtime,
                     generator=runtime.generator(seed))


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *,
             attacks: Iterable[str] = ("clean", "fgsm", "pgd20", "cw"), eps: float,
             norm: str = "linf", step_size: float | None = None, batch_size: int = 256, seed: int = 0,
             runtime: Runtime | None = None) -> dict[str, Any]:
    """Accuracy of ``model`` on (x, y) under each of ``attacks`` (names from :data:`ATTACKS`).

    ``x``: N x C x H x W in [0, 1] (any device; batches are moved with ``runtime.batch``); ``y``:
    N labels. ``eps`` is the radius in [0, 1] pixel units; ``step_size`` overrides the PGD/CW step
    (default eps/4). ``runtime`` (default CPU, fp32) decides the device and autocast precision and
    must match where the model lives. The model is in eval mode throughout and left as it was.

    Returns ``{"samples", "eps", "norm", "seed", "results": {name: {"accuracy", "attack"}}}``,
    ``attack`` describing the attack's full settings. Where the model's logits are not finite for
    some image, that accuracy is NaN (:func:`awp.metrics.loss_and_correct`), never a count of argmaxes of NaN.
    Raises :class:`UsageError` for an unknown attack or bad arguments, :class:`UserError` when
    AutoAttack is asked for and pyautoattack is not installed.
    """
    runtime = CPU if runtime is None else runtime
    names = _check_attacks(attacks)
    _check_inputs(model, x, y, eps, norm, step_size, batch_size, runtime, names)
    if "autoattack" in names:
        _import_autoattack()  # fail before spending time on the other attacks
    eps = float(eps)
    step = eps / 4 if step_size is None else float(step_size)
    y = y.long()
    results: dict[str, dict[str, Any]] = {}
    with model_mode(model, "eval"):
        for name in names:
            if name == "autoattack":
                accuracy = _autoattack_accuracy(model, x, y, eps=eps, norm=norm, seed=seed,
                                                batch_size=batch_size, runtime=runtime)
            else:
                # A fresh generator per attack: each number depends on its own seed only.
                accuracy = _accuracy(model, x, y, _crafter(name, model, eps=eps, step=step, norm=norm),
                                     batch_size=batch_size, runtime=runtime, generator=runtime.generator(seed))
            results[name] = {"accuracy": accuracy,
                             "attack": _describe(name, eps=eps, step=step, norm=norm, seed=seed)}
    return {"samples": int(len(x)), "eps": eps, "norm": norm, "seed": int(seed), "results": results}


# --------------------------------------------------------------------------------------------
# Checkpoints


def evaluate_checkpoint(path: str | Path, *, attacks: Iterable[str], split: str = "test",
                        samples: int | None = None, eps: float | None = None, batch_size: int = 256,
                        seed: int = 0, device: str = "auto", data_dir: str | None = None,
                        download: bool = False, dataset: str = "cifar10", threat: str = "Linf",
                        model_dir: str | None = None, allow_nonfinite: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on the first ``samples`` images (all when None) of a split of its data set.

    The data set and its split are rebuilt from the training config stored in the checkpoint (same
    ``val_size``, ``train_subset`` and ``split_seed``), so 'val' and 'train' are the images the run
    held out and trained on. ``eps`` and the PGD/CW step default to the data set's evaluation
    threat model (:func:`awp.threat.eval_threat`: the AWP paper's 8/255 with step 2/255 on CIFAR,
    1/255 on SVHN, also for runs that trained at 0.031; the training eps with step eps/4 on digits
    and for L2); an explicit ``eps`` keeps the data set's step ratio. The norm is the run's. The
    result's ``threat`` says which rule chose the radius. Evaluation is in fp32 whatever precision
    the run trained in. Returns :func:`evaluate`'s
    dict plus ``checkpoint``, ``sha256``, ``arch``, ``dataset``, ``method``, ``awp_gamma``,
    ``epoch`` and ``split``. ``path`` may also be ``robustbench:NAME`` (``dataset``, ``threat`` and
    ``model_dir`` then say which RobustBench entry; see :func:`awp.checkpoint.load_run`).
    Non-finite weights are refused unless ``allow_nonfinite``; the result then lists them under
    ``nonfinite_weights``.
    """
    from awp.checkpoint import load_run
    from awp.data import SPLITS
    from awp.threat import eval_threat

    names = _check_attacks(attacks)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    if samples is not None and (int(samples) != samples or samples <= 0):
        raise UsageError(f"samples must be a whole number >= 1, got {samples}")
    if "autoattack" in names:
        _import_autoattack()
    runtime = resolve_runtime(device)
    run = load_run(path, runtime.device, data_dir=data_dir, download=download, dataset=dataset, threat=threat,
                   model_dir=model_dir, allow_nonfinite=allow_nonfinite)
    model, meta, config = run.model, run.meta, run.config
    x, y = run.split(split).tensors(limit=samples)  # the first images: a fixed subset, the same every time
    threat = eval_threat(config.dataset, config.norm, config.eps, eps)
    result = evaluate(model, x, y, attacks=names, eps=threat.eps, norm=config.norm, step_size=threat.step_size,
                      batch_size=batch_size, seed=seed, runtime=runtime)
    header = {"checkpoint": str(path), "sha256": meta["sha256"], "arch": meta.get("arch"),
              "dataset": meta.get("dataset", config.dataset), "method": meta.get("method", config.method),
              "awp_gamma": meta.get("awp_gamma", config.awp_gamma), "epoch": meta.get("epoch"), "split": split,
              "threat": threat.source,
              **({"nonfinite_weights": meta["nonfinite_weights"]} if meta.get("nonfinite_weights") else {})}
    return {**header, **result}


# --------------------------------------------------------------------------------------------
# Table


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate` / :func:`evaluate_checkpoint` result.

    A header line (checkpoint, split, samples, eps, norm, seed), then one row per attack: name,
    accuracy in percent, and the full description of the attack.
    """
    head = [f"checkpoint: {result['checkpoint']}"] if "checkpoint" in result else []
    if "split" in result:
        head.append(f"split: {result['split']}")
    head += [f"samples: {result['samples']}", f"eps: {pixels(float(result['eps']))}"
             + (f" ({result['threat']})" if "threat" in result else ""),
             f"norm: {_norm_label(result['norm'])}" if result.get("norm") in NORMS else f"norm: {result.get('norm')}",
             f"seed: {result.get('seed')}"]
    rows = [(name, f"{100 * r['accuracy']:.2f}%", r["attack"]) for name, r in result["results"].items()]
    width = max([len("attack")] + [len(name) for name, _, _ in rows])
    lines = [" | ".join(head), f"{'attack':<{width}}  {'accuracy':>8}  description"]
    lines += [f"{name:<{width}}  {acc:>8}  {desc}" for name, acc, desc in rows]
    return "\n".join(lines)
