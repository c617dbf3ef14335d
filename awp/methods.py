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
``'logits_clean'`` where the loss uses them), in the model's current mode; ``loss(...)`` is the
same loss from the fewest forwards, the function that AWP's ascent maximizes.

BatchNorm running statistics (and so every eval-mode number) depend on which batches pass through
the model in train mode, and in what order. ``bn_sequence`` chooses that sequence per step:
``'minimal'`` runs one forward per input the loss needs; ``'official-*'`` reproduces an official
script's train-mode forwards exactly (:data:`BN_SEQUENCES` cites file and line). In train mode
BN normalizes with the batch's own statistics, so repeated forwards of one batch give the same
logits: the loss and the weights are the same under every sequence, only the running
statistics differ.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp import attacks
from awp.checks import check_number
from awp.errors import UsageError
from awp.registry import Registry
from awp.threat import check_threat


@dataclass(frozen=True)
class BNSequence:
    """The train-mode forwards of one training step besides the attack's own steps, in order.

    ``'adv'`` / ``'clean'``: the loss's forwards of x_adv and x; ``'clean-target'``: a second
    clean forward whose output is the KL target of the TRADES loss; ``'attack-final'``: one more
    forward of the final x_adv in the attack's mode (``attack_pgd``'s restart selection);
    ``'clean-after'``: a forward of the clean batch after the optimizer step (logging).
    """

    method: str | None       # the method whose script it follows (None: any method)
    forwards: tuple[str, ...]
    source: str


BN_SEQUENCES: Registry[BNSequence] = Registry("bn_sequence")
BN_SEQUENCES.register("minimal", BNSequence(None, (), "one train-mode forward per input the loss needs"),
                      description="one train-mode forward per input the loss needs (any method)")
# AT: 10 attack steps + 3 = 13 train-mode forwards per step (the AT-AWP proxy's act on the proxy).
BN_SEQUENCES.register("official-at", BNSequence(
    "at", ("attack-final", "adv", "clean-after"),
    "csdongxian/AWP AT_AWP/train_cifar10.py:122 (attack_pgd after its last step), "
    ":347 (training forward), :365 (clean forward after the step); "
    "train_cifar100.py:105,293,311; train_svhn.py:100,298,316; "
    "locuslab/robust_overfitting train_cifar.py:120,324,339"),
    description="AT as the AWP and Rice et al. scripts: the attack's final forward, x', then x after the step")
BN_SEQUENCES.register("official-trades", BNSequence(
    "trades", ("clean", "adv", "clean-target"),
    "yaodongyu/TRADES trades.py:79 (clean), :81 (adversarial), :82 (clean, KL target)"),
    description="TRADES as its official script: x, x', then x again for the KL target")
BN_SEQUENCES.register("official-trades-awp", BNSequence(
    "trades", ("adv", "clean-target", "clean"),
    "csdongxian/AWP trades_AWP/train_trades_cifar.py:187 (adversarial), :189 (clean, KL target), :192 (clean, CE)"),
    description="TRADES as the AWP repository's script: x', x for the KL target, then x for the CE")
BN_SEQUENCES.register("official-mart", BNSequence(
    "mart", ("clean", "adv"), "YisenWang/MART mart.py:38 (clean), :40 (adversarial)"),
    description="MART as its official script: x, then x'")
BN_SEQUENCES.register("official-rst", BNSequence(
    "rst", ("adv", "clean"), "yaircarmon/semisup-adv losses.py:80 (adversarial), :81 (clean)"),
    description="RST as its official script: x', then x")


def check_bn_sequence(method: str, name: str) -> BNSequence:
    """The sequence ``name``, refused (one line) when unknown or written for another method."""
    sequence = BN_SEQUENCES.get(name)
    if sequence.method not in (None, method):
        raise UsageError(f"bn_sequence {name!r} is {sequence.method}'s; method {method!r} takes: "
                         + ", ".join(BN_SEQUENCES.where(lambda s: s.method in (None, method))))
    return sequence


@dataclass
class Method:
    """Common hyperparameters: the threat model of the training attack (eps in [0, 1] pixel units)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    attack_mode: str = "eval"
    beta: float = 6.0
    bn_sequence: str = "minimal"
    name = "base"
    uses_unlabeled = False
    loss_forwards: ClassVar[tuple[str, ...]] = ()  # the minimal sequence: the loss's forwards, in order
    attack_name: ClassVar[str] = ""                 # the training attack, in words
    loss_name: ClassVar[str] = ""                   # the outer loss (also AWP's ascent loss), in words

    def __post_init__(self) -> None:
        check_threat(eps=self.eps, step_size=self.step_size, steps=self.steps, norm=self.norm)
        attacks.MODES.resolve(self.attack_mode)
        check_number(self.beta, "beta", low=0)
        check_bn_sequence(self.name, self.bn_sequence)

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def outer_loss(self, logits: dict[str, Tensor], y: Tensor) -> Tensor:
        """The loss from the logits of the forwards named as in :class:`BNSequence`."""
        raise NotImplementedError

    def forward(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *,
                sequence: str | None = None) -> dict[str, Tensor]:
        """The training loss and logits, from the loss's forwards in the order of ``sequence``
        (default: the method's ``bn_sequence``)."""
        order = BN_SEQUENCES[sequence or self.bn_sequence].forwards
        names = [f for f in order if f in ("clean", "adv", "clean-target")] or list(self.loss_forwards)
        logits = {name: model(x_adv if name == "adv" else x).float() for name in names}
        out = {"loss": self.outer_loss(logits, y), "logits_adv": logits["adv"]}
        return {**out, "logits_clean": logits["clean"]} if "clean" in logits else out

    def loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """The outer training loss (the quantity AWP's ascent maximizes), from the fewest forwards."""
        return self.forward(model, x, x_adv, y, sequence="minimal")["loss"]

    def after_attack(self, model: nn.Module, x_adv: Tensor) -> None:
        """The sequence's forward of x_adv after the attack, in the attack's mode (no gradient)."""
        if "attack-final" in BN_SEQUENCES[self.bn_sequence].forwards:
            with torch.no_grad(), attacks.model_mode(model, self.attack_mode):
                model(x_adv)

    def after_step(self, model: nn.Module, x: Tensor) -> None:
        """The sequence's forward of the clean batch after the optimizer step (no gradient)."""
        if "clean-after" in BN_SEQUENCES[self.bn_sequence].forwards:
            with torch.no_grad():
                model(x)

    def train_mode_forwards(self) -> list[str]:
        """Names of the forwards one training step runs in train mode (they move BN's running
        statistics), in order; AWP's ascent is not among them (its statistics are restored)."""
        extra = BN_SEQUENCES[self.bn_sequence].forwards
        in_train = self.attack_mode == "train"
        names = ["attack-step"] * (self.steps if in_train else 0)
        names += ["attack-final"] if "attack-final" in extra and in_train else []
        names += [f for f in extra if f in ("clean", "adv", "clean-target")] or list(self.loss_forwards)
        return names + (["clean-after"] if "clean-after" in extra else [])


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float,
                logits_target: Tensor | None = None) -> Tensor:
    """CE(f(x), y) + beta * KL(p(x) || p(x')), the KL summed over classes and averaged over the batch.

    ``logits_target``: the logits of a second clean forward that the official scripts use for
    p(x) in the KL (default: ``logits_clean``; in train mode both are the same numbers).
    """
    clean = F.cross_entropy(logits_clean, y)
    target = logits_clean if logits_target is None else logits_target
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(target, dim=1), reduction="batchmean")
    return clean + beta * robust


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


METHODS: Registry[type[Method]] = Registry("method")


@METHODS.register("at", description="PGD adversarial training (Madry et al. 2018), as the Rice et al. 2020 / AWP code")
@dataclass
class AT(Method):
    """PGD adversarial training; crafts in train mode by default, as the Rice et al. / AWP code does."""

    attack_mode: str = "train"
    random_start: str = "uniform"
    name = "at"
    loss_forwards = ("adv",)
    attack_name = "PGD on CE, uniform random start"
    loss_name = "CE(f(x'), y)"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                           norm=self.norm, random_start=self.random_start, mode=self.attack_mode)

    def outer_loss(self, logits: dict[str, Tensor], y: Tensor) -> Tensor:
        return F.cross_entropy(logits["adv"], y)


@METHODS.register("trades", description="TRADES (Zhang et al. 2019): CE(f(x), y) + beta KL(p(x) || p(x'))")
@dataclass
class TRADES(Method):
    """TRADES; the attack runs in eval mode and its clean probabilities are computed once
    (the official attack recomputes them at every step, in eval mode: the same numbers)."""

    name = "trades"
    loss_forwards = ("clean", "adv")
    attack_name = "TRADES KL attack, start x + 0.001 N(0, 1)"
    loss_name = "TRADES: CE(f(x), y) + beta KL(p(x) || p(x'))"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.trades_kl(model, x, eps=self.eps, step_size=self.step_size, steps=self.steps,
                                 norm=self.norm, mode=self.attack_mode)

    def outer_loss(self, logits: dict[str, Tensor], y: Tensor) -> Tensor:
        return trades_loss(logits["clean"], logits["adv"], y, self.beta, logits.get("clean-target"))


@METHODS.register("mart", description="MART (Wang et al. 2020): boosted CE on x' + beta KL(p(x) || p(x')) (1 - p_y(x))")
@dataclass
class MART(Method):
    """MART; CE-PGD from x + 0.001 N(0, 1) in eval mode."""

    name = "mart"
    loss_forwards = ("clean", "adv")
    attack_name = "PGD on CE, start x + 0.001 N(0, 1)"
    loss_name = "MART: BCE(f(x'), y) + beta KL(p(x) || p(x')) (1 - p_y(x))"

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return attacks.pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                           norm=self.norm, random_start="normal", mode=self.attack_mode)

    def outer_loss(self, logits: dict[str, Tensor], y: Tensor) -> Tensor:
        return mart_loss(logits["clean"], logits["adv"], y, self.beta)


@METHODS.register("rst", description="RST (Carmon et al. 2019): the TRADES loss on half pseudo-labeled batches")
@dataclass
class RST(TRADES):
    """Robust self-training: the TRADES loss on half-labeled, half-pseudo-labeled batches."""

    name = "rst"
    uses_unlabeled = True
    loss_name = "TRADES loss on the half pseudo-labeled batch"


def list_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str, **hparams: Any) -> Method:
    """Build a method by registry name; unknown names or hyperparameters give a one-line error."""
    cls = METHODS.get(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise UsageError(f"method {name!r} has no hyperparameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(**hparams)
