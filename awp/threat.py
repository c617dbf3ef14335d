"""The evaluation threat model of the AWP paper (Wu, Xia & Wang 2020) for each data set.

The paper evaluates every Linf row at eps 8/255, whatever radius the method trained at (TRADES,
MART and RST train at 0.031, which is not 8/255): its AutoAttack script defaults to
``--epsilon 8./255.`` (csdongxian/AWP ``auto_attacks/eval.py:56``) and its PGD-20 test step is
the training step of the AT scripts: 2/255 on CIFAR-10/100 (``AT_AWP/train_cifar10.py:142-146``,
``train_cifar100.py``), 1/255 on SVHN (``train_svhn.py`` ``--pgd-alpha 1``). The offline digits
keep their own setting (the training eps, step eps/4); L2 runs keep their training radius.

:func:`eval_threat` is the one place that decides this: ``awp eval``, the per-epoch metrics of
``awp train`` and the recipe card use it. An explicit ``eps`` (``--eps``) overrides the radius and
keeps the data set's step-to-radius ratio (1/4; SVHN 1/8).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from awp.checks import check_int, check_number
from awp.registry import Registry

NORMS = Registry("norm", {"linf": "L-infinity ball: every pixel moves by at most eps",
                          "l2": "L2 ball: the perturbation's Euclidean norm is at most eps"})
PAPER_LINF_EPS = 8 / 255
_STEP_RATIO = {"cifar10": 1 / 4, "cifar100": 1 / 4, "svhn": 1 / 8}  # step / eps of the paper's PGD-20


@dataclass(frozen=True)
class Threat:
    """A radius and PGD step (pixel units in [0, 1]) and where they come from."""

    eps: float
    step_size: float
    norm: str
    source: str


def eval_threat(dataset: str, norm: str, train_eps: float, eps: float | None = None) -> Threat:
    """The default evaluation attack of ``dataset`` for a run trained at ``train_eps`` in ``norm``.

    Linf on CIFAR-10/100 and SVHN: the paper's (8/255, step 2/255; SVHN 1/255); anything else
    (digits, L2): the training radius with step eps/4. ``eps`` overrides the radius.
    """
    paper = norm == "linf" and dataset in _STEP_RATIO
    ratio = _STEP_RATIO[dataset] if paper else 1 / 4
    if eps is not None:
        return Threat(float(eps), float(eps) * ratio, norm, "eps given explicitly")
    if paper:
        return Threat(PAPER_LINF_EPS, PAPER_LINF_EPS * ratio, norm, f"the AWP paper's {dataset} evaluation")
    return Threat(float(train_eps), float(train_eps) / 4, norm, "the training eps (no paper convention)")


def check_threat(*, eps: float | None = None, step_size: float | None = None, steps: int | None = None,
                 norm: str | None = None, what: str = "") -> None:
    """The one check of an attack's settings, where they enter the code (configs, attacks,
    methods, evaluation): eps a finite radius >= 0 (at most 1 in Linf, where pixels lie in
    [0, 1]), step_size finite and >= 0, steps a whole number >= 0, norm a registered
    :data:`NORMS` name. ``None`` skips a setting;
    ``what`` prefixes the names (``eval_`` -> ``eval_eps``)."""
    if eps is not None:  # an Linf radius is at most 1 (pixels in [0, 1]); an L2 radius can exceed it
        linf = norm is None or NORMS.resolve(norm) == "linf"
        check_number(eps, f"{what}eps", low=0, high=1 if linf else None,
                     unit=" (pixel units in [0, 1]; 8/255 = 0.0314)" if linf else " (an L2 radius, pixel units)")
    if step_size is not None:
        check_number(step_size, f"{what}step_size", low=0)
    if steps is not None:
        check_int(steps, f"{what}steps", 0)
    if norm is not None:
        NORMS.resolve(norm)


# The threat models RobustBench ranks, as attack settings (pixel units; PGD step eps/4 as `awp eval`).
STANDARD_THREATS = Registry("threat model", {"Linf": "Linf ball of radius 8/255", "L2": "L2 ball of radius 0.5"})
_STANDARD_RADIUS = {"Linf": ("linf", 8 / 255), "L2": ("l2", 0.5)}


def threat_config(dataset: str, threat: str = "Linf") -> dict[str, Any]:
    """The training-config fields a foreign model needs for ``awp eval`` / ``awp landscape``: its
    data set and the standard threat model (Linf 8/255 or L2 0.5, PGD step eps/4); ``threat`` is
    matched without regard to case."""
    names = {name.lower(): name for name in STANDARD_THREATS.names()}
    norm, eps = _STANDARD_RADIUS[STANDARD_THREATS.resolve(names.get(str(threat).lower(), threat))]
    return {"dataset": dataset, "eps": eps, "step_size": eps / 4, "norm": norm}
