"""Training methods: a registry of AT, TRADES, MART and RST, each an attack plus an outer loss.

- AT (Madry et al. 2018; Rice et al. 2020 code): x' = PGD-CE(x), loss CE(f(x'), y).
- TRADES (Zhang et al. 2019): x' maximizes KL(p(x) || p(x')); loss CE(f(x), y) + beta KL(p(x) || p(x')).
- MART (Wang et al. 2020): x' = PGD-CE(x) from x + 0.001 N(0, 1);
  loss CE(f(x'), y) + NLL(log(1.0001 - p(x')), y_hat) + beta mean_i KL(p(x_i) || p(x'_i)) (1.0000001 - p_y(x_i)),
  y_hat the most likely wrong class under p(x').
- RST (Carmon et al. 2019): the TRADES loss on batches that mix labeled and pseudo-labeled images
  (the mixing is the data iterator's job; see :func:`awp.data.iterate_mixed_batches`).

Every method exposes ``attack(model, x, y) -> x_adv`` and ``forward(model, x, x_adv, y) -> dict``
with the training loss under ``'loss'`` and the logits it computed (``'logits_adv'``, and
``'logits_clean'`` where the loss uses them), in the model's current mode; ``loss(...)`` is
``forward(...)['loss']``, the function that AWP's ascent maximizes. Clean and adversarial inputs
go through separate forward calls, as in the original code, so BatchNorm sees the same batches.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp import attacks
from awp.errors import UsageError


@dataclass
class Method:
    """Common hyperparameters: the threat model of the training attack (eps in [0, 1] pixel units)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    attack_mode: str = "eval"
    beta: float = 6.0
    name = "base"
    uses_unlabeled = False

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise UsageError(f"eps must be >= 0, got {self.eps}")
        if not self.step_size >= 0:
            raise UsageError(f"step_size must be >= 0, got {self.step_size}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise UsageError(f"attack steps must be a whole number >= 0, got {self.steps}")
        if self.norm not in attacks.NORMS:
            raise UsageError(f"unknown norm {self.norm!r}; choose from: {', '.join(attacks.NORMS)}")
        if self.attack_mode not in attacks.MODES:
            raise UsageError(f"unknown attack_mode {self.attack_mode!r}; choose from: {', '.join(attacks.MODES)}")
        if not self.beta >= 0:
            raise UsageError(f"beta must be >= 0, got {self.beta}")

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """The outer training loss (the quantity AWP's ascent maximizes)."""
        return self.forward(model, x, x_adv, y)["loss"]


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """CE(f(x), y) + beta * KL(p(x) || p(x')), the KL summed over classes and averaged over the batch."""
    natural = F.cross_entropy(logits_clean, y)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1),
                      reduction="batchmean")
    return natural + beta * robust


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """MART's loss exactly as in its official code (constants 1.0001, 1e-12 and 1.0000001 included)."""
    p_adv = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(p_adv, dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), wrong)
    p_clean = F.softmax(logits_clean, dim=1)
    p_true = p_clean.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(1)
    return boosted_ce + beta * (kl * (1.0000001 - p_true)).mean()


@dataclass
class AT(Method):
    """PGD adversarial training; crafts in train mode by default, as the Rice et al. / AWP code does."""

    attack_mode: str = "train"
    random_start: str = "uniform"
    name = "at"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                           norm=self.norm, random_start=self.random_start, mode=self.attack_mode)

    def forward(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits_adv = model(x_adv).float()
        return {"loss": F.cross_entropy(logits_adv, y), "logits_adv": logits_adv}


class _CleanAndAdversarial(Method):
    """Methods whose loss compares the clean and adversarial outputs (TRADES, MART)."""

    def pair_loss(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits_clean = model(x).float()  # clean first, then adversarial: the original order
        logits_adv = model(x_adv).float()
        return {"loss": self.pair_loss(logits_clean, logits_adv, y),
                "logits_adv": logits_adv, "logits_clean": logits_clean}


@dataclass
class TRADES(_CleanAndAdversarial):
    """TRADES; the attack runs in eval mode and its clean probabilities are computed once."""

    name = "trades"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.trades_kl(model, x, eps=self.eps, step_size=self.step_size, steps=self.steps,
                                 norm=self.norm, mode=self.attack_mode)

    def pair_loss(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        return trades_loss(logits_clean, logits_adv, y, self.beta)


@dataclass
class MART(_CleanAndAdversarial):
    """MART; CE-PGD from x + 0.001 N(0, 1) in eval mode."""

    name = "mart"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                           norm=self.norm, random_start="normal", mode=self.attack_mode)

    def pair_loss(self, logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        return mart_loss(logits_clean, logits_adv, y, self.beta)


@dataclass
class RST(TRADES):
    """Robust self-training: the TRADES loss on half-labeled, half-pseudo-labeled batches."""

    name = "rst"
    uses_unlabeled = True


METHODS: dict[str, type[Method]] = {"at": AT, "trades": TRADES, "mart": MART, "rst": RST}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str, **hparams: Any) -> Method:
    """Build a method by registry name; unknown names or hyperparameters give a one-line error."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose from: {', '.join(list_methods())}")
    cls = METHODS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise UsageError(f"method {name!r} has no hyperparameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(**hparams)
