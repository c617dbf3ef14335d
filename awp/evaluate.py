"""Robust accuracy of a model or checkpoint under the evaluation attacks of the AWP tables.

Wu, Xia & Wang (NeurIPS 2020), "Adversarial Weight Perturbation Helps Robust Generalization",
report natural (clean) accuracy and accuracy under FGSM, PGD-20, CW-inf and AutoAttack. Each is an
entry of :data:`awp.eval_attacks.EVAL_ATTACKS`, whose docstring fixes the conventions; each
result carries the attack's full settings in its ``attack`` description.

Every attack runs with the model in eval mode (BatchNorm on its running statistics, so a number
does not depend on how the test set is batched) and leaves the model as it found it: train/eval
flags, BN statistics, ``.grad`` fields and the global random state. Random starts come from a
generator seeded with ``seed`` afresh for each attack, so a number does not depend on which other
attacks ran before it and two calls give identical results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from torch import Tensor, nn

from awp.attacks import NORMS, model_mode
from awp.threat import check_threat
from awp.checks import check_int, check_seed
from awp.errors import UsageError
from awp.eval_attacks import ATTACKS, EVAL_ATTACKS, EvalAttack, EvalSettings, norm_label, pixels
from awp.runtime import CPU, Runtime, resolve_runtime

__all__ = ["ATTACKS", "EVAL_ATTACKS", "EvalAttack", "EvalSettings", "evaluate", "evaluate_checkpoint", "format_table",
           "pixels"]

# --------------------------------------------------------------------------------------------
# Argument checks (one line each, before any work is done)


def _check_attacks(attacks: Iterable[str] | str) -> tuple[str, ...]:
    names = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    if not names:
        raise UsageError(f"no attack asked for; pass one or more of: {', '.join(EVAL_ATTACKS.names())}")
    names = tuple(EVAL_ATTACKS.resolve(name) for name in names)
    return tuple(dict.fromkeys(names))  # drop repeats, keep the caller's order


def _check_inputs(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, step_size: float | None,
                  runtime: Runtime, names: tuple[str, ...]) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise UsageError("x must be a float tensor N x C x H x W in [0, 1]")
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x):
        raise UsageError(f"y must be a 1-D tensor of {len(x)} labels, got shape {tuple(getattr(y, 'shape', ()))}")
    if len(x) == 0:
        raise UsageError("nothing to evaluate: x holds no images")
    # The attacks clamp to [0, 1]; normalized inputs would be silently destroyed by that clamp.
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise UsageError("x must lie in [0, 1] (models normalize inside; pass raw pixels)")
    check_threat(eps=eps, step_size=step_size, norm=norm)
    for name in names:
        norms = EVAL_ATTACKS.get(name).norms
        if norm not in norms:
            takes = EVAL_ATTACKS.where(lambda attack: norm in attack.norms)
            raise UsageError(f"{name} ({EVAL_ATTACKS.description(name)}) takes norm {', '.join(norms)} only; "
                             f"with norm={norm!r} use {', '.join(takes)}")
    device = next((p.device for p in model.parameters()), runtime.device)
    if device.type != runtime.device.type:
        raise UsageError(f"the model is on {device} but the runtime on {runtime.device}; "
                         f"pass runtime=resolve_runtime('{device.type}')")


def _check_available(names: tuple[str, ...]) -> None:
    """Fail before spending time on the other attacks when one needs a package that is missing."""
    for name in names:
        if EVAL_ATTACKS.get(name).requires is not None:
            EVAL_ATTACKS.get(name).requires()


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
    _check_inputs(model, x, y, eps, norm, step_size, runtime, names)
    settings = EvalSettings(eps=float(eps), step=float(eps) / 4 if step_size is None else float(step_size),
                            norm=norm, seed=check_seed(seed), batch_size=check_int(batch_size, "batch_size", 1),
                            runtime=runtime)
    _check_available(names)
    y = y.long()
    results: dict[str, dict[str, Any]] = {}
    with model_mode(model, "eval"):
        for name in names:
            attack = EVAL_ATTACKS.get(name)
            results[name] = {"accuracy": attack.measure(model, x, y, settings), "attack": attack.describe(settings)}
    return {"samples": int(len(x)), "eps": settings.eps, "norm": norm, "seed": settings.seed, "results": results}


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
    SPLITS.resolve(split)
    if samples is not None:
        samples = check_int(samples, "samples", 1)
    _check_available(names)
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
             f"norm: {norm_label(result['norm'])}" if result.get("norm") in NORMS else f"norm: {result.get('norm')}",
             f"seed: {result.get('seed')}"]
    rows = [(name, f"{100 * r['accuracy']:.2f}%", r["attack"]) for name, r in result["results"].items()]
    width = max([len("attack")] + [len(name) for name, _, _ in rows])
    lines = [" | ".join(head), f"{'attack':<{width}}  {'accuracy':>8}  description"]
    lines += [f"{name:<{width}}  {acc:>8}  {desc}" for name, acc, desc in rows]
    return "\n".join(lines)
