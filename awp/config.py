"""Training configuration: one dataclass of hyperparameters with units, presets, ``key=value`` overrides.

A preset is a small TOML file in ``awp/presets/`` holding only what differs from the defaults
below (or from the preset it ``inherit``s), each value with its reason in a comment; the presets
are the entries of :data:`PRESETS`. Overrides on the command line are typed ``key=value`` pairs
checked against the dataclass (:mod:`awp.settings`, the one coercion of every settings
dataclass): unknown keys and wrong types are refused with one line. Fractions such as
``eps=8/255`` are accepted for floats. :meth:`TrainConfig.validate` checks every value where a
config enters the code (a preset, overrides, a stored config on ``--resume``): numbers finite
and in range, names registered.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional

from awp.checks import check_int, check_number, check_seed
from awp.errors import UsageError, require
from awp.registry import Registry, check_choice
from awp.settings import apply_overrides as _apply, parse_number, parse_overrides
from awp.threat import check_threat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PRESETS", "TrainConfig", "apply_overrides", "config_from_dict", "list_presets", "load_preset",
           "parse_number", "parse_overrides", "preset_notes", "resolve_preset"]

SELECTIONS = Registry("select_on", {"val": "best.pt by robust accuracy on the held-out validation split (Rice et al.)",
                                    "test": "best.pt by test robust accuracy (the official scripts; inflated)"})


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run. Pixel-valued quantities are in [0, 1] units."""

    # data
    dataset: str = "cifar10"
    data_dir: Optional[str] = None          # folder with the torchvision files (CIFAR/SVHN)
    download: bool = False                  # download the data set when missing
    val_size: Optional[int] = None          # images held out for early stopping (None: the data set's default)
    train_subset: Optional[int] = None      # train on this many images only (None: all)
    split_seed: int = 0                     # seed of the train/val/subset split (fixed across runs)
    unlabeled: Optional[str] = None         # RST: pseudo-labeled .npz or Carmon et al. pickle
    unsup_fraction: float = 0.5             # RST: fraction of each batch drawn from the unlabeled data
    epoch_images: Optional[int] = None      # RST: images (labeled + unlabeled) per epoch (None: the labeled set's size)
    augment: Optional[str] = None           # None: the data set's default; 'none' or e.g. 'crop+flip+rotation'
    padding_mode: str = "zeros"             # crop padding: 'zeros' (torchvision RandomCrop) or 'reflect'
    # model
    model: str = "preactresnet18"
    model_kwargs: dict = field(default_factory=dict)
    normalize: bool = True                  # put the data set's mean/std inside the model
    # method and its training attack
    method: str = "at"
    eps: float = 8 / 255                    # Linf radius, 8/255 = 0.0314
    step_size: float = 2 / 255              # attack step
    attack_steps: int = 10
    norm: str = "linf"
    attack_mode: Optional[str] = None       # 'train' | 'eval' (None: the method's own default)
    beta: float = 6.0                       # TRADES / MART / RST trade-off
    bn_sequence: str = "minimal"            # train-mode forwards per step: 'minimal' or an official script's
    # AWP
    awp_gamma: float = 0.0                  # relative weight perturbation per layer; 0 disables AWP
    awp_warmup: int = 0                     # epochs without AWP at the start
    awp_steps: int = 1                      # ascent steps (1 = the paper's method)
    awp_kind: str = "adversarial"           # 'adversarial' (AWP) or 'random' (same-size random baseline)
    # optimization
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "piecewise"             # 'piecewise' | 'cosine' | 'constant'
    lr_update: str = "iteration"            # 'iteration' or 'epoch': how often the lr changes (awp.schedule)
    lr_milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of training completed
    lr_decay: float = 0.1                   # factor at each milestone
    # per-epoch evaluation at the unperturbed weights, eval mode
    eval_steps: int = 10                    # PGD steps of the metric attack
    eval_eps: Optional[float] = None        # its radius (None: the data set's paper evaluation, awp.threat)
    eval_train_samples: int = 1000          # fixed subset of the training set for train robust accuracy
    eval_test_samples: Optional[int] = None  # None: the whole test set
    eval_batch_size: int = 256
    select_on: str = "val"                  # early stopping split: 'val' (Rice et al.) or 'test' (inflated)
    save_every: int = 10                    # epochs between epoch_NNN.pt checkpoints
    # run
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"                 # 'fp32' | 'bf16' | 'fp16'
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False                   # torchrun: BatchNorm statistics over the global batch

    def validate(self) -> "TrainConfig":
        """Reject nonsensical values with one line each: every number finite and in its range,
        every name registered (models, methods, data sets, schedules, perturbations...)."""
        _check_names(self)
        _check_numbers(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_names(c: TrainConfig) -> None:
    # Imported here: the registries live in torch-backed modules that themselves know nothing of
    # configs; a config that is only printed (`awp presets`) needs them only when validated.
    from awp.modes import MODES
    from awp.data import list_datasets
    from awp.data.augment import Augmentation
    from awp.methods import METHODS, check_bn_sequence
    from awp.models import list_models
    from awp.perturbation import PERTURBATIONS
    from awp.runtime import PRECISIONS
    from awp.schedule import LR_UPDATES, SCHEDULES
    from awp.threat import NORMS

    tables = (("data set", c.dataset, list_datasets()), ("model", c.model, list_models()),
              ("method", c.method, METHODS), ("norm", c.norm, NORMS), ("schedule", c.schedule, SCHEDULES),
              ("lr_update", c.lr_update, LR_UPDATES), ("select_on", c.select_on, SELECTIONS),
              ("precision", c.precision, PRECISIONS), ("weight perturbation (awp_kind)", c.awp_kind, PERTURBATIONS))
    for kind, value, names in tables:
        check_choice(kind, value, names)
    if c.attack_mode is not None:
        check_choice("attack_mode", c.attack_mode, MODES)
    require(c.method != "rst" or c.unlabeled is not None,
            "method 'rst' needs unlabeled=PATH (a pseudo-labeled .npz or pickle; see `awp pseudo-label`)")
    require(isinstance(c.model_kwargs, dict), f"model_kwargs must be a dict, got {c.model_kwargs!r}")
    Augmentation.parse(c.augment or "none", c.padding_mode)
    check_bn_sequence(c.method, c.bn_sequence)


def _check_numbers(c: TrainConfig) -> None:
    require(not (isinstance(c.eps, (int, float)) and 1 < c.eps <= 255),
            f"eps is in [0, 1] pixel units, got {c.eps} (for {c.eps}/255 write eps={c.eps}/255)")
    check_threat(eps=c.eps, step_size=c.step_size, norm=c.norm)
    check_number(c.beta, "beta", low=0)
    check_number(c.awp_gamma, "awp_gamma", low=0, high=1, unit=" (relative to each layer's norm)")
    check_number(c.lr, "lr", low=0, low_open=True)
    check_number(c.momentum, "momentum", low=0, high=1, high_open=True)
    check_number(c.weight_decay, "weight_decay", low=0)
    check_number(c.lr_decay, "lr_decay", low=0, high=1, low_open=True)
    check_number(c.unsup_fraction, "unsup_fraction", low=0, high=1, high_open=True)
    if c.eval_eps is not None:
        check_number(c.eval_eps, "eval_eps", low=0, high=1, unit=" (pixel units)")
    require(isinstance(c.lr_milestones, list) and all(isinstance(m, (int, float)) and not isinstance(m, bool)
                                                      for m in c.lr_milestones),
            f"lr_milestones must be a list of fractions of training, e.g. [0.5, 0.75], got {c.lr_milestones!r}")
    for m in c.lr_milestones:
        check_number(m, "each of lr_milestones", low=0, high=1, low_open=True, unit=" (a fraction of training)")
    minimums = {"attack_steps": 0, "awp_warmup": 0, "awp_steps": 1, "epochs": 1, "batch_size": 1, "eval_steps": 0,
                "eval_train_samples": 1, "eval_batch_size": 1, "save_every": 1}
    optional = {"epoch_images": 1, "eval_test_samples": 1, "val_size": 0, "train_subset": 1}
    for key, low in minimums.items():
        check_int(getattr(c, key), key, low)
    for key, low in optional.items():
        if getattr(c, key) is not None:
            check_int(getattr(c, key), key, low)
    check_seed(c.seed, "seed")
    check_seed(c.split_seed, "split_seed")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with typed overrides (:func:`awp.settings.apply_overrides`); unknown
    keys name the closest settings, wrong types and non-finite floats are one line."""
    return _apply(config, overrides)


def _preset_registry() -> Registry[Any]:
    """Every preset file in ``awp/presets/``, described by its first comment line."""
    registry: Registry[Any] = Registry("preset", listing="`awp presets` lists them")
    folder = resources.files("awp") / "presets"
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name[:-5]):
        text = path.read_text()
        first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
        registry.register(path.name[:-5], path, description=first or path.name[:-5])
    return registry


PRESETS = _preset_registry()


def list_presets() -> list[str]:
    """The preset names, sorted (:data:`PRESETS`)."""
    return PRESETS.names()


# Keys of a preset file that describe it rather than set a hyperparameter (shown on its recipe card).
PRESET_NOTES = ("source", "note")


def _read_preset(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = PRESETS.get(name)
    if name in seen:
        raise UsageError(f"preset {name!r} inherits from itself")
    values = tomllib.loads(path.read_text())
    parent = values.pop("inherit", None)
    return {**(_read_preset(parent, seen + (name,)) if parent else {}), **values}


def preset_notes(name: str) -> dict[str, str]:
    """A preset's ``source`` (the official script it follows) and ``note`` (what was chosen and
    why, where no script exists), inherited like its values."""
    values = _read_preset(name)
    return {key: values[key] for key in PRESET_NOTES if key in values}


def resolve_preset(name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the preset (and those it inherits), then the overrides; not yet validated."""
    values = {k: v for k, v in _read_preset(name).items() if k not in PRESET_NOTES}
    return apply_overrides(apply_overrides(TrainConfig(), values), overrides or {})


def load_preset(name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the preset (and those it inherits), then the overrides; validated."""
    return resolve_preset(name, overrides).validate()


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config stored in a checkpoint or run folder (unknown keys refused)."""
    return apply_overrides(TrainConfig(), values).validate()
