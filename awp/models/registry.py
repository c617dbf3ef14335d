"""The model registry: each architecture of "Adversarial Weight Perturbation Helps Robust
Generalization" (Wu, Xia & Wang, NeurIPS 2020) registered with its own constructor arguments,
their defaults and their checks, and :func:`build_model`, which checks them and records them.

An entry is a :class:`ModelSpec`: the constructor and, beyond the arguments every model takes
(``num_classes``, ``in_channels``, ``mean``, ``std``), a :class:`Kwarg` per argument of its own.
Adding a model is one module with the class and one ``MODELS.register`` call; no table here
changes. Every check returns the value as plain JSON types (numpy scalars and tuples become int,
float, list), so that ``arch_kwargs`` survives ``json.dumps`` and ``torch.load(weights_only=True)``
and ``build_model(model.arch, **model.arch_kwargs)`` rebuilds the model.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from awp.checks import check_int, check_number
from awp.errors import UsageError, require
from awp.registry import Registry

Check = Callable[[str, Any], Any]  # (what, value) -> the value as JSON types; a bad one is one UsageError line


@dataclass(frozen=True)
class Kwarg:
    """One constructor argument: its default and its check."""

    default: Any
    check: Check
    # Recorded in arch_kwargs only when it differs from the default, so that models and
    # checkpoints made before the option existed keep their arch_kwargs.
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: the constructor and the arguments it takes beyond the common ones."""

    build: Callable[..., nn.Module]
    kwargs: Mapping[str, Kwarg] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def whole(minimum: int) -> Check:
    """A check of an int (a Python or numpy integer; not a bool, not 2.0) >= ``minimum``."""
    def check(what: str, value: Any) -> int:
        # Stricter than check_int on purpose: a float in arch_kwargs would be a sign of a bad file.
        require(isinstance(value, numbers.Integral) and not isinstance(value, bool),
                f"{what} must be an int, got {value!r}")
        return check_int(value, what, minimum)
    return check


def number(what: str, value: Any) -> float:
    """A finite real number."""
    return check_number(value, what)


def boolean(what: str, value: Any) -> bool:
    require(isinstance(value, bool), f"{what} must be true or false, got {value!r}")
    return value


def listed(what: str, value: Any) -> list:
    require(isinstance(value, (list, tuple)), f"{what} must be a list, got {value!r}")
    return list(value)


def channel_values(what: str, value: Any) -> list[float] | None:
    """None, or a non-empty list of finite numbers (a per-channel mean or std)."""
    if value is None:
        return None
    values = [number(what, v) for v in listed(what, value)]
    require(len(values) > 0, f"{what} must not be empty")
    return values


COMMON: Mapping[str, Kwarg] = {
    "num_classes": Kwarg(10, whole(1)),
    "in_channels": Kwarg(3, whole(1)),
    "mean": Kwarg(None, channel_values),
    "std": Kwarg(None, channel_values),
}


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered model in train mode, on the CPU (or the default device in force: checkpoint
    loading builds a skeleton on the ``meta`` device first).

    ``kwargs`` are the common ``in_channels`` (3), ``mean`` and ``std`` (per-channel lists, or
    None for identity) plus the model's own: ``channels`` (smallcnn), ``depth``,
    ``widen_factor``, ``dropout`` (the WRNs; the name only presets depth and width). The result
    carries ``model.arch`` (the name) and ``model.arch_kwargs`` (every kwarg, defaults included,
    as JSON values), so ``build_model(model.arch, **model.arch_kwargs)`` rebuilds it.

    Raises :class:`UsageError` for an unknown name, an unknown kwarg, a wrong type or a bad value.
    """
    spec = MODELS.get(name)
    accepted = {**COMMON, **spec.kwargs}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r} for model {name!r}; "
                         f"accepted: {', '.join(sorted(accepted))}")
    given = {**kwargs, "num_classes": num_classes}
    resolved = {key: arg.check(f"{name}: {key}", given.get(key, arg.default)) for key, arg in accepted.items()}
    _check_channels(name, resolved)
    model = spec.build(**resolved)
    model.arch = name
    model.arch_kwargs = {key: value for key, value in resolved.items()
                         if not (accepted[key].optional and value == accepted[key].default)}
    return model


def _check_channels(name: str, kw: Mapping[str, Any]) -> None:
    """The common arguments together: one mean and std per input channel, std > 0."""
    for key in ("mean", "std"):
        if kw[key] is not None:
            require(len(kw[key]) == kw["in_channels"],
                    f"{name}: {key} has {len(kw[key])} values for in_channels={kw['in_channels']}")
    if kw["std"] is not None:
        require(all(s > 0 for s in kw["std"]), f"{name}: std must be > 0, got {kw['std']}")
