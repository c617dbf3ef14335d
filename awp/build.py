"""What a training config builds besides data and optimizer: the model's constructor arguments,
the training method and the weight perturbation.

The training loop (:mod:`awp.train`) and the recipe card (:mod:`awp.recipe`) both call these, so
the card shows exactly what training will run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from awp.config import TrainConfig
from awp.methods import Method, get_method
from awp.perturbation import PERTURBATIONS, WeightPerturber

if TYPE_CHECKING:
    from awp.data import DataSplits
    from awp.runtime import Runtime


def arch_kwargs_for(config: TrainConfig, data: "DataSplits") -> dict[str, Any]:
    """The model's constructor arguments: classes, channels, normalization (the data set's
    mean/std inside the model when ``normalize``), then ``model_kwargs``. ``data``: the splits, or
    a data set's spec (anything with ``num_classes``, ``image_shape``, ``mean`` and ``std``)."""
    kwargs = {"num_classes": data.num_classes, "in_channels": data.image_shape[0]}
    if config.normalize:
        kwargs.update(mean=list(data.mean), std=list(data.std))
    return {**kwargs, **config.model_kwargs}


def build_method(config: TrainConfig) -> Method:
    """The training method with the config's attack, loss and BN-sequence settings."""
    hparams = dict(eps=config.eps, step_size=config.step_size, steps=config.attack_steps,
                   norm=config.norm, beta=config.beta, bn_sequence=config.bn_sequence)
    if config.attack_mode is not None:
        hparams["attack_mode"] = config.attack_mode
    return get_method(config.method, **hparams)


def build_perturbation(config: TrainConfig, model: nn.Module, runtime: "Runtime") -> WeightPerturber | None:
    """The config's weight perturbation (``awp_kind``: a :data:`awp.perturbation.PERTURBATIONS`
    name; AWP itself or the random baseline), or None when ``awp_gamma`` is 0."""
    if config.awp_gamma <= 0:
        return None
    return PERTURBATIONS.get(config.awp_kind).from_config(config, model, runtime)
