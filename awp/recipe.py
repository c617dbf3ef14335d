"""The recipe card of a preset: what a training run will do, resolved, before it spends GPU days.

``awp presets NAME [key=value ...] [--json]`` prints it. Every entry is computed by the code the
training run itself executes, so the card cannot drift from training: the epoch length and the
learning rate of every epoch by :mod:`awp.schedule`, the augmentation by
:func:`awp.data.augment.resolve`, the model's normalization by :func:`awp.build.arch_kwargs_for`, its
parameter count by :func:`awp.models.build_model` (on the meta device: nothing is allocated), the
training attack, loss and BatchNorm sequence by :func:`awp.build.build_method`, the per-epoch
metric attack by :func:`awp.metrics.metric_attack` and the ``awp eval`` default by
:func:`awp.threat.eval_threat`. Only the training-set size is planned rather than measured: the
data set's size minus the validation hold-out (or ``train_subset``), as :func:`awp.data.build_dataset`
splits it, so no data file is needed.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch

from awp.data import augment
from awp.config import TrainConfig, preset_notes, resolve_preset
from awp.data import dataset_spec
from awp.evaluate import pixels
from awp.models import build_model
from awp.schedule import iterations_per_epoch, lr_by_epoch
from awp.threat import eval_threat
from awp.build import arch_kwargs_for, build_method
from awp.metrics import metric_attack

NO_UNLABELED = "<not set: pass unlabeled=PATH>"


def planned_sizes(config: TrainConfig) -> tuple[int, int]:
    """(training images, validation images) that :func:`awp.data.build_dataset` will produce."""
    spec = dataset_spec(config.dataset)
    val = spec.default_val_size if config.val_size is None else config.val_size
    return (config.train_subset if config.train_subset is not None else spec.train_images - val), val


def recipe_card(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved recipe of preset ``name`` with ``overrides``, as one JSON-ready dict."""
    config = resolve_preset(name, overrides)
    method = build_method(dataclasses.replace(config, unlabeled=config.unlabeled or NO_UNLABELED).validate())
    spec = dataset_spec(config.dataset)
    train_size, val_size = planned_sizes(config)
    iterations = iterations_per_epoch(config, train_size)
    augmentation = augment.resolve(config.augment, config.padding_mode, spec.augment)
    kwargs = arch_kwargs_for(config, spec)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_model(config.model, **kwargs).parameters())
    channels = spec.image_shape[0]
    metric = metric_attack(config)
    evaluation = eval_threat(config.dataset, config.norm, config.eps)
    forwards = method.train_mode_forwards()
    return {
        "preset": name, **preset_notes(name), "overrides": dict(overrides or {}),
        # data
        "dataset": config.dataset, "train_size": train_size, "val_size": val_size,
        "unlabeled": (config.unlabeled or NO_UNLABELED) if method.uses_unlabeled else None,
        "unsup_fraction": config.unsup_fraction if method.uses_unlabeled else None,
        "augmentation": augmentation.names,
        "padding_mode": augmentation.padding_mode if augmentation.crop else None,
        "normalization": {"mean": list(kwargs.get("mean", [0.0] * channels)),
                          "std": list(kwargs.get("std", [1.0] * channels))},
        # model
        "model": config.model, "parameters": parameters,
        # method and its training attack
        "method": config.method, "train_attack": method.attack_name, "train_norm": config.norm,
        "train_eps": config.eps, "train_step_size": config.step_size, "train_attack_steps": config.attack_steps,
        "attack_bn_mode": method.attack_mode, "beta": config.beta if config.method != "at" else None,
        "loss": method.loss_name, "bn_sequence": config.bn_sequence,
        "train_mode_forwards_per_step": len(forwards), "train_mode_forwards": _runs(forwards),
        # AWP
        "awp_gamma": config.awp_gamma, "awp_kind": config.awp_kind if config.awp_gamma > 0 else None,
        "awp_warmup": config.awp_warmup if config.awp_gamma > 0 else None,
        "awp_first_epoch": config.awp_warmup + 1 if config.awp_gamma > 0 else None,
        "awp_ascent_loss": method.loss_name if config.awp_gamma > 0 else None,
        "awp_steps": config.awp_steps if config.awp_gamma > 0 else None,
        # optimization
        "epochs": config.epochs, "batch_size": config.batch_size, "iterations_per_epoch": iterations,
        "total_iterations": iterations * config.epochs, "lr": config.lr, "schedule": config.schedule,
        "lr_update": config.lr_update,
        "lr_milestones": config.lr_milestones if config.schedule == "piecewise" else None,
        "lr_decay": config.lr_decay if config.schedule == "piecewise" else None,
        "lr_by_epoch": lr_by_epoch(config, iterations), "momentum": config.momentum,
        "nesterov": config.nesterov, "weight_decay": config.weight_decay,
        # evaluation
        "metric_attack": metric.name, "eval_eps": evaluation.eps, "eval_step_size": evaluation.step_size,
        "eval_attack": f"PGD-20 {config.norm} eps={pixels(evaluation.eps)} step={pixels(evaluation.step_size)} "
                       f"({evaluation.source})",
        "select_on": config.select_on,
    }


def _runs(names: list[str]) -> list[str]:
    """['a', 'a', 'b'] -> ['2 x a', 'b']: the order of the forwards, compactly."""
    runs: list[list[Any]] = []
    for name in names:
        if runs and runs[-1][1] == name:
            runs[-1][0] += 1
        else:
            runs.append([1, name])
    return [f"{n} x {name}" if n > 1 else name for n, name in runs]


def _lr_lines(values: list[float]) -> list[str]:
    """The lr of every epoch: runs of equal values as 'epochs a-b: lr', else ten per line."""
    runs: list[list[Any]] = []
    for epoch, lr in enumerate(values, start=1):
        if runs and runs[-1][2] == lr:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch, lr])
    if len(runs) <= 8:
        return [f"epochs {a}-{b}: {lr:.6g}" if a != b else f"epoch {a}: {lr:.6g}" for a, b, lr in runs]
    return [", ".join(f"{e}: {lr:.4g}" for e, lr in enumerate(values[i:i + 10], start=i + 1))
            for i in range(0, len(values), 10)]


def format_card(card: dict[str, Any]) -> str:
    """The card as text, in sections: data, model, method, AWP, optimization, evaluation."""
    norm = card["normalization"]
    aug = "+".join(card["augmentation"]) or "none"
    sections = {
        "data": [f"data set {card['dataset']}: {card['train_size']} training images, "
                 f"{card['val_size']} held out for validation",
                 f"augmentation {aug}" + (f" (padding {card['padding_mode']})" if card["padding_mode"] else ""),
                 f"normalization mean {norm['mean']} std {norm['std']} (inside the model)"]
                + ([f"unlabeled {card['unlabeled']}, unsup_fraction {card['unsup_fraction']}"]
                   if card["unlabeled"] else []),
        "model": [f"{card['model']}: {card['parameters']:,} parameters"],
        "method": [f"{card['method']}: loss {card['loss']}" + (f", beta {card['beta']:g}" if card["beta"] else ""),
                   f"training attack {card['train_attack']}, {card['train_norm']} eps={pixels(card['train_eps'])} "
                   f"step={pixels(card['train_step_size'])}, {card['train_attack_steps']} steps, "
                   f"BN in {card['attack_bn_mode']} mode",
                   f"bn_sequence {card['bn_sequence']}: {card['train_mode_forwards_per_step']} train-mode forwards "
                   f"per step ({', '.join(card['train_mode_forwards'])})"],
        "AWP": ([f"gamma {card['awp_gamma']:g} ({card['awp_kind']}), warm-up {card['awp_warmup']} epochs "
                 f"(AWP from epoch {card['awp_first_epoch']}), {card['awp_steps']} ascent step(s) on the "
                 f"{card['awp_ascent_loss']}"] if card["awp_gamma"] > 0 else ["off"]),
        "optimization": [f"{card['epochs']} epochs x {card['iterations_per_epoch']} iterations of batch "
                         f"{card['batch_size']} = {card['total_iterations']} iterations",
                         f"SGD lr {card['lr']:g}, momentum {card['momentum']:g}, nesterov "
                         f"{str(card['nesterov']).lower()}, weight decay {card['weight_decay']:g}",
                         f"{card['schedule']} schedule, updated per {card['lr_update']}"
                         + (" (step i of epoch e, both from 0, uses the lr at e + (i + 1) / iterations epochs)"
                            if card["lr_update"] == "iteration" else " (the lr at the epoch's start)")
                         + "; lr at the start of each epoch:"]
                        + ["  " + line for line in _lr_lines(card["lr_by_epoch"])],
        "evaluation": [f"per-epoch metrics: {card['metric_attack']}",
                       f"`awp eval` default: {card['eval_attack']}",
                       f"best.pt selected on: {_selection(card)}"],
    }
    head = [f"preset {card['preset']}" + (f" with {_pairs(card['overrides'])}" if card["overrides"] else "")]
    head += [f"{key}: {card[key]}" for key in ("source", "note") if card.get(key)]
    body = [f"{title}:\n" + "\n".join(f"  {line}" for line in lines) for title, lines in sections.items()]
    return "\n".join(head + body)


def _selection(card: dict[str, Any]) -> str:
    if card["select_on"] == "test":
        return "test robust accuracy (the official scripts' choice; inflates the number)"
    if not card["val_size"]:
        return "val, but val_size=0 holds out nothing: no best.pt (use last.pt or select_on=test)"
    return f"robust accuracy on the {card['val_size']} validation images (Rice et al.)"


def _pairs(overrides: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items())


def card_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2)
