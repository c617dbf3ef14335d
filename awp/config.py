"""Training configuration: one dataclass of hyperparameters with units, presets, ``key=value`` overrides.

A preset is a small TOML file in ``awp/presets/`` holding only what differs from the defaults
below (or from the preset it ``inherit``s), each value with its reason in a comment. Overrides on
the command line are typed ``key=value`` pairs checked against the dataclass: unknown keys and
wrong types are refused with one line. Fractions such as ``eps=8/255`` are accepted for floats.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from awp.errors import UsageError, require_all

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
        """Reject nonsensical values with one line each."""
        checks = [
            (self.eps >= 0, f"eps must be >= 0, got {self.eps}"),
            (self.eps <= 1, f"eps is in [0, 1] pixel units, got {self.eps} (did you mean {self.eps}/255?)"),
            (self.step_size >= 0, f"step_size must be >= 0, got {self.step_size}"),
            (self.attack_steps >= 0, f"attack_steps must be >= 0, got {self.attack_steps}"),
            (0 <= self.awp_gamma <= 1,
             f"awp_gamma must be in [0, 1] (relative to each layer's norm), got {self.awp_gamma}"),
            (self.awp_warmup >= 0, f"awp_warmup must be >= 0, got {self.awp_warmup}"),
            (self.awp_kind in ("adversarial", "random"),
             f"awp_kind must be 'adversarial' or 'random', got {self.awp_kind!r}"),
            (self.awp_steps >= 1, f"awp_steps must be >= 1, got {self.awp_steps}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.schedule in ("piecewise", "cosine", "constant"),
             f"unknown schedule {self.schedule!r}; choose from: piecewise, cosine, constant"),
            (self.lr_update in ("iteration", "epoch"),
             f"lr_update must be 'iteration' or 'epoch', got {self.lr_update!r}"),
            (self.epoch_images is None or self.epoch_images >= 1,
             f"epoch_images must be >= 1, got {self.epoch_images}"),
            (self.eval_eps is None or 0 <= self.eval_eps <= 1,
             f"eval_eps is in [0, 1] pixel units, got {self.eval_eps}"),
            (all(0 < m <= 1 for m in self.lr_milestones),
             f"lr_milestones are fractions in (0, 1], got {self.lr_milestones}"),
            (0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}"),
            (0 <= self.unsup_fraction < 1, f"unsup_fraction must be in [0, 1), got {self.unsup_fraction}"),
            (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (self.eval_steps >= 0, f"eval_steps must be >= 0, got {self.eval_steps}"),
            (self.eval_train_samples >= 1, f"eval_train_samples must be >= 1, got {self.eval_train_samples}"),
            (self.eval_test_samples is None or self.eval_test_samples >= 1,
             f"eval_test_samples must be >= 1, got {self.eval_test_samples}"),
            (self.save_every >= 1, f"save_every must be >= 1, got {self.save_every}"),
            (self.select_on in ("val", "test"), f"select_on must be 'val' or 'test', got {self.select_on!r}"),
            (self.method != "rst" or self.unlabeled is not None,
             "method 'rst' needs unlabeled=PATH (a pseudo-labeled .npz or pickle; see `awp pseudo-label`)"),
        ]
        require_all(checks)
        from awp.data.augment import Augmentation  # torch-backed checks, imported only when validating
        from awp.methods import METHODS, check_bn_sequence

        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r}; choose from: {', '.join(sorted(METHODS))}")
        Augmentation.parse(self.augment or "none", self.padding_mode)
        check_bn_sequence(self.method, self.bn_sequence)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = get_type_hints(TrainConfig)


def parse_number(text: str) -> float:
    """'0.03' or a fraction such as '8/255' (never an expression); ValueError otherwise."""
    if "/" in text:
        num, _, den = text.partition("/")
        try:
            return float(num) / float(den)
        except ZeroDivisionError:
            raise ValueError(f"division by zero in {text!r}") from None
    return float(text)


def _coerce(key: str, value: Any) -> Any:
    """Check (and, for strings from the command line, parse) a value for field ``key``."""
    hint = _HINTS[key]
    optional = get_origin(hint) is Union and type(None) in get_args(hint)
    base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    base = get_origin(base) or base
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise UsageError(f"{key} cannot be none")
    try:
        if isinstance(value, str):
            if base is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            if base is int:
                return int(value)
            if base is float:
                return parse_number(value)
            if base in (list, dict):
                parsed = json.loads(value)
                if not isinstance(parsed, base):
                    raise ValueError
                return parsed
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is list and isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
        raise ValueError
    except (ValueError, json.JSONDecodeError):
        raise UsageError(f"{key}={value!r} is not a valid {base.__name__}") from None


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with typed overrides; unknown keys give a one-line error."""
    values = {}
    for key, value in overrides.items():
        if key not in FIELDS:
            close = [k for k in FIELDS if key.split("_")[0] in k][:4]
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown setting {key!r}{hint}")
        values[key] = _coerce(key, value)
    return dataclasses.replace(config, **values)


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """['epochs=5', 'eps=8/255'] -> {'epochs': '5', 'eps': '8/255'}."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def list_presets() -> list[str]:
    folder = resources.files("awp") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


# Keys of a preset file that describe it rather than set a hyperparameter (shown on its recipe card).
PRESET_NOTES = ("source", "note")


def _read_preset(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name not in list_presets():
        raise UsageError(f"unknown preset {name!r}; choose from: {', '.join(list_presets())}")
    if name in seen:
        raise UsageError(f"preset {name!r} inherits from itself")
    text = (resources.files("awp") / "presets" / f"{name}.toml").read_text()
    values = tomllib.loads(text)
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
