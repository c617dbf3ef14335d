"""Hand-written copies of the official code that the tests compare this toolkit with: the AWP step
of Wu et al. 2020 (Algorithm 1 in its official one-step proxy form), the training steps of AT-AWP,
TRADES, TRADES-AWP, MART and RST with their train-mode forwards (BatchNorm statistics), the
official learning-rate schedules and each paper row's recipe.

Each function cites the repository, file and lines it copies, at these commits:

- csdongxian/AWP             a7acf5d842fccf1bbb4b91644352ce157d370a26
- yaodongyu/TRADES           6e8e11b7c281371c2f027ffadfbaea80361f09de
- YisenWang/MART             2d83e17b381dd2ee52223695e517bf6d5ff09c2c
- yaircarmon/semisup-adv     3f05b280cfa207ec035f27542c8c8b4b2a4e71b2
- locuslab/robust_overfitting c47a25c5e00c8b2bb35488d962c04dd771b7e9af

The AWP step: csdongxian/AWP AT_AWP/utils_awp.py:8-18 (diff_in_weights), :21-26 (add_into_weights),
:37-55 (AdvWeightPerturb.calc_awp / perturb / restore), the proxy's SGD(lr=0.01) of
AT_AWP/train_cifar10.py:241; trades_AWP/utils_awp.py:37-59 (TradesAWP.calc_awp). The steps:
AT_AWP/train_cifar10.py:329-365, trades_AWP/train_trades_cifar.py:177-206, TRADES trades.py:73-84
with train_trades_cifar10.py:78-90, MART mart.py:32-58 with train_wideresnet.py:89-101,
semisup-adv losses.py:74-88 with robust_self_training.py:275-304. The schedules and recipes: see
each function and constant.

Nothing here imports the code under test; it is the independent side of the comparison. Test
modules import from here, never from one another.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# TRADES' beta, the same in every script: TRADES train_trades_cifar10.py:36, AWP train_trades_cifar.py:47,
# MART train_wideresnet.py:41, semisup-adv robust_self_training.py:123.
BETA = 6.0

Loss = Callable[[torch.nn.Module], torch.Tensor]

# ------------------------------------------------------------------ the official AWP step


def official_awp_perturb(model: torch.nn.Module, gamma: float, proxy_loss: Loss):
    """AdvWeightPerturb.calc_awp then .perturb (AT_AWP/utils_awp.py:37-52): one SGD(lr=0.01) step of
    a proxy copy on -proxy_loss, the weight difference rescaled to each layer's norm, added x gamma.
    Changes ``model`` in place; returns (diff, the model's parameters) for :func:`official_awp_restore`."""
    proxy = copy.deepcopy(model)
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
    loss = -proxy_loss(proxy)
    proxy_opt.zero_grad()
    loss.backward()
    proxy_opt.step()
    diff = {}
    for (key, old), (_, new) in zip(model.state_dict().items(), proxy.state_dict().items()):
        if old.dim() <= 1 or "weight" not in key:
            continue
        d = new - old
        diff[key] = old.norm() / (d.norm() + 1e-20) * d
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, d in diff.items():
            params[key].add_(gamma * d)
    return diff, params


def official_awp_restore(params: dict, diff: dict, gamma: float) -> None:
    """AdvWeightPerturb.restore (AT_AWP/utils_awp.py:54-55): subtract gamma x diff in place."""
    with torch.no_grad():
        for key, d in diff.items():
            params[key].sub_(gamma * d)


def official_proxy_loss(name: str, x, x_adv, y, beta: float = BETA) -> Loss:
    """The loss the proxy step ascends: AT's CE on x_adv (AT_AWP/utils_awp.py:41), TRADES' loss
    (trades_AWP/utils_awp.py:41-45, two clean forwards)."""
    if name == "at":  # AdvWeightPerturb.calc_awp / train_cifar10: CE on x_adv
        return lambda m: F.cross_entropy(m(x_adv), y)

    def trades(m):  # TradesAWP.calc_awp, written out
        natural = F.cross_entropy(m(x), y)
        robust = F.kl_div(F.log_softmax(m(x_adv), dim=1), F.softmax(m(x), dim=1), reduction="batchmean")
        return natural + beta * robust
    return trades


def official_awp_training(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: Loss, gamma: float,
                          steps: int = 2) -> torch.nn.Module:
    """``steps`` AWP steps through the official proxy path with the outer loss ``loss(model)``
    (AT_AWP/train_cifar10.py:338-363: train mode, perturb, step, restore). Trains ``model`` in place."""
    for _ in range(steps):
        model.train()
        diff, params = official_awp_perturb(model, gamma, loss)
        value = loss(model)
        opt.zero_grad()
        value.backward()
        opt.step()
        official_awp_restore(params, diff, gamma)
    return model


# ------------------------------------------------------------------ the official training steps


def fixed_iterates(x, x_adv) -> list[torch.Tensor]:
    """Ten fixed points standing for PGD-10's iterates (the attack's forwards run on these)."""
    return [x + k / 10 * (x_adv - x) for k in range(10)]


def official_at_awp(model, opt, x, x_adv, y, gamma):
    """csdongxian/AWP AT_AWP/train_cifar10.py:329-365 with attack_pgd's forwards on fixed iterates."""
    for point in fixed_iterates(x, x_adv):  # attack_pgd :92, model in train mode
        model(point)
    model(x_adv)                           # attack_pgd :122 (restart selection)
    model.train()                          # :338
    diff, params = official_awp_perturb(model, gamma, official_proxy_loss("at", x, x_adv, y))  # :343-345
    robust_loss = F.cross_entropy(model(x_adv), y)  # :347-351
    opt.zero_grad()
    robust_loss.backward()
    opt.step()                             # :358-360
    official_awp_restore(params, diff, gamma)  # :362-363
    model(x)                               # :365, for logging


def official_trades(model, opt, x, x_adv, y, beta=BETA):
    """yaodongyu/TRADES trades.py:73-84, train_trades_cifar10.py:78-90 (attack in eval mode: no BN update)."""
    model.train()
    opt.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1),
                                            reduction="sum")
    (loss_natural + beta * loss_robust).backward()
    opt.step()


def official_trades_awp(model, opt, x, x_adv, y, gamma, beta=BETA):
    """csdongxian/AWP trades_AWP/train_trades_cifar.py:177-206, utils_awp.py:37-53."""
    model.train()
    diff, params = official_awp_perturb(model, gamma, official_proxy_loss("trades", x, x_adv, y, beta))
    opt.zero_grad()
    logits_adv = model(x_adv)
    loss_robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(model(x), dim=1), reduction="batchmean")
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * loss_robust
    opt.zero_grad()
    loss.backward()
    opt.step()
    official_awp_restore(params, diff, gamma)


def official_mart(model, opt, x, x_adv, y, beta=BETA):
    """YisenWang/MART mart.py:32-58, train_wideresnet.py:89-101."""
    model.train()
    opt.zero_grad()
    logits = model(x)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none")
    loss_robust = (1.0 / len(x)) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs))
    (loss_adv + beta * loss_robust).backward()
    opt.step()


def official_rst(model, opt, x, x_adv, y, beta=BETA):
    """yaircarmon/semisup-adv losses.py:74-88, robust_self_training.py:275-304."""
    model.train()
    opt.zero_grad()
    logits_adv = F.log_softmax(model(x_adv), dim=1)
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y, ignore_index=-1)
    loss_robust = F.kl_div(logits_adv, F.softmax(logits, dim=1), reduction="sum") / len(x)
    (loss_natural + beta * loss_robust).backward()
    opt.step()


# ------------------------------------------------------------------ the official learning rates


def awp_at_lr(lr_max: float, epochs: int, iterations: int) -> list[float]:
    """csdongxian/AWP AT_AWP/train_cifar10.py:261-267 ('piecewise'; the same in train_cifar100.py:235-241
    and train_svhn.py:232-238), evaluated as :321 does, at t = epoch + (i + 1) / len(train_batches),
    here for the first step i = 0 of each 0-based epoch."""
    def lr_schedule(t):
        if t / epochs < 0.5:
            return lr_max
        elif t / epochs < 0.75:
            return lr_max / 10.
        return lr_max / 100.
    return [lr_schedule(epoch + 1 / iterations) for epoch in range(epochs)]


def trades_lr(epoch: int) -> float:
    """yaodongyu/TRADES train_trades_cifar10.py:137-145, 1-based epochs (:155), lr 0.1 (:24)."""
    lr = 0.1
    if epoch >= 75:
        lr = 0.1 * 0.1
    if epoch >= 90:
        lr = 0.1 * 0.01
    if epoch >= 100:
        lr = 0.1 * 0.001
    return lr


def trades_awp_lr(epoch: int) -> float:
    """csdongxian/AWP trades_AWP/train_trades_cifar.py:260-266, 1-based epochs (:294), lr 0.1 (:33)."""
    lr = 0.1
    if epoch >= 100:
        lr = 0.1 * 0.1
    if epoch >= 150:
        lr = 0.1 * 0.01
    return lr


def mart_lr(epoch: int) -> float:
    """YisenWang/MART train_wideresnet.py:109-117, 1-based epochs (:176), lr 0.1 (:29)."""
    lr = 0.1
    if epoch >= 100:
        lr = 0.1 * 0.001
    elif epoch >= 90:
        lr = 0.1 * 0.01
    elif epoch >= 75:
        lr = 0.1 * 0.1
    return lr


def rst_lr(epoch: int) -> float:
    """yaircarmon/semisup-adv robust_self_training.py:412-413 ('cosine', :96), 1-based epochs (:444),
    lr 0.1 (:94), 200 epochs (:76)."""
    return 0.1 * 0.5 * (1 + np.cos((epoch - 1) / 200 * np.pi))


# ------------------------------------------------------------------ the official recipes

CIFAR10_MEAN_STD = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}  # AWP AT_AWP/utils.py:17-18
CIFAR100_MEAN_STD = {"mean": [0.5070751592371323, 0.48654887331495095, 0.4409178433670343],  # train_cifar100.py:21
                     "std": [0.2673342858792401, 0.2564384629170883, 0.27615047132568404]}   # train_cifar100.py:22
SVHN_MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # AWP train_svhn.py:20-21
RAW = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # ToTensor() only, no normalization anywhere

CIFAR_TRAIN = 50000   # torchvision CIFAR10/CIFAR100(train=True), used whole (no --val: AWP logs show val=False)
SVHN_TRAIN = 73257    # torchvision SVHN(split='train'), AWP train_svhn.py:172


def awp_at(dataset: str, gamma: float, warmup: int, model: str = "preactresnet18") -> dict:
    """csdongxian/AWP AT_AWP/train_{cifar10,cifar100,svhn}.py."""
    svhn, c100 = dataset == "svhn", dataset == "cifar100"
    train = SVHN_TRAIN if svhn else CIFAR_TRAIN
    iterations = math.ceil(train / 128)         # batch 128 (train_cifar10.py:133), drop_last=False (:36)
    lr_max = 0.01 if svhn else 0.1              # train_svhn.py:115; train_cifar10.py:138
    step = (1 if svhn else 2) / 255             # --pgd-alpha: train_svhn.py:121; train_cifar10.py:146,214
    return {
        "dataset": dataset, "model": model,     # PreActResNet18 (:217) / WideResNet(34, 10, widen 10) (:220)
        "train_size": train, "val_size": 0, "select_on": "test",  # model_best.pth by test PGD (:467)
        "augmentation": [] if svhn else ["crop", "flip", "rotation"] if c100 else ["crop", "flip"],
        # train_svhn.py:163-166 (ToTensor only); train_cifar100.py:168-170; train_cifar10.py:191
        "padding_mode": None if svhn else "zeros" if c100 else "reflect",
        # RandomCrop(32, padding=4) pads zeros (train_cifar100.py:168); utils.py:27 np.pad(mode='reflect')
        "normalization": SVHN_MEAN_STD if svhn else CIFAR100_MEAN_STD if c100 else CIFAR10_MEAN_STD,
        "method": "at", "train_eps": 8 / 255,   # --epsilon 8 (:142), / 255 (:213)
        "train_step_size": step, "train_attack_steps": 10,  # --attack-iters 10 (:143)
        "attack_bn_mode": "train",              # attack_pgd runs after model.train() (:338, train_cifar100.py:257)
        "bn_sequence": "official-at",
        "train_mode_forwards_per_step": 10 + 1 + 1 + 1,  # attack (:92), its restart forward (:122), :347, :365
        "awp_gamma": gamma, "awp_warmup": warmup if gamma > 0 else None,
        # --awp-gamma / --awp-warmup (train_cifar10.py:162-163, train_svhn.py:134-135), `epoch >= warmup` 0-based (:340)
        "awp_first_epoch": warmup + 1 if gamma > 0 else None,
        "epochs": 200, "batch_size": 128,       # :136, :133
        "iterations_per_epoch": iterations, "total_iterations": 200 * iterations,
        "lr_update": "iteration", "lr_by_epoch": awp_at_lr(lr_max, 200, iterations),
        "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,  # SGD(momentum=0.9, weight_decay=5e-4) (:240)
        "eval_eps": 8 / 255, "eval_step_size": step,  # test PGD-20 with the same epsilon and pgd_alpha (:144,:392)
        "metric_attack": f"pgd20-linf eps={8 / 255:.4g} step={step:.4g} eval-mode",
    }


def trades_like(**values) -> dict:
    """Shared by TRADES, MART, TRADES-AWP and RST: CIFAR-10 with RandomCrop(32, padding=4) (zero
    padding) and RandomHorizontalFlip (TRADES train_trades_cifar10.py:59-63, MART train_wideresnet.py:70-74,
    AWP train_trades_cifar.py:85-89, semisup-adv robust_self_training.py:193-197), ToTensor only,
    attack in eval mode (trades.py:28, mart.py:17, train_trades_cifar.py:107, losses.py:46),
    10 attack steps, momentum 0.9, batch 128, per-epoch lr, the last checkpoint kept (no selection)."""
    base = {"dataset": "cifar10", "train_size": CIFAR_TRAIN, "val_size": 0, "select_on": "test",
            "augmentation": ["crop", "flip"], "padding_mode": "zeros", "normalization": RAW,
            "train_attack_steps": 10, "attack_bn_mode": "eval", "momentum": 0.9, "batch_size": 128,
            "lr_update": "epoch", "eval_eps": 8 / 255, "eval_step_size": 2 / 255}  # auto_attacks/eval.py:56
    base.update(values)
    iterations = math.ceil(base.get("epoch_images", CIFAR_TRAIN) / base["batch_size"])
    base.update(iterations_per_epoch=iterations, total_iterations=iterations * base["epochs"])
    base.pop("epoch_images", None)
    return base


TRADES = trades_like(  # yaodongyu/TRADES train_trades_cifar10.py, trades.py
    model="wrn-34-10", method="trades",            # WideResNet() (:152)
    train_eps=0.031, train_step_size=0.007,        # :30, :34
    beta=6.0, weight_decay=2e-4, epochs=76,        # :36, :22, :20
    nesterov=False, awp_gamma=0.0,
    lr_by_epoch=[trades_lr(e) for e in range(1, 77)],
    bn_sequence="official-trades", train_mode_forwards_per_step=3)  # trades.py:79, 81, 82
TRADES_AWP = trades_like(  # csdongxian/AWP trades_AWP/train_trades_cifar.py, utils_awp.py
    model="wrn-34-10", method="trades",            # --arch WideResNet34 (:19)
    train_eps=8 / 255, train_step_size=2 / 255,    # :41,66; :45,67
    beta=6.0, weight_decay=5e-4, epochs=200,       # :47, :31, :24
    nesterov=False, awp_gamma=0.005,               # :60
    awp_warmup=9, awp_first_epoch=10,              # --awp-warmup 10 (:62), `epoch >= 10` 1-based (:179, :294)
    lr_by_epoch=[trades_awp_lr(e) for e in range(1, 201)],
    bn_sequence="official-trades-awp", train_mode_forwards_per_step=3)  # :187, :189, :192
MART = trades_like(  # YisenWang/MART train_wideresnet.py, mart.py
    model="wrn-34-10", method="mart",              # WideResNet() (:169)
    train_eps=0.031, train_step_size=0.007,        # :35, :39
    beta=6.0, weight_decay=7e-4, epochs=90,        # :41, :27, :25
    nesterov=False, awp_gamma=0.0,
    lr_by_epoch=[mart_lr(e) for e in range(1, 91)],
    bn_sequence="official-mart", train_mode_forwards_per_step=2)  # mart.py:38, 40
RST = trades_like(  # yaircarmon/semisup-adv robust_self_training.py (README: --distance l_inf --epsilon 0.031)
    model="wrn-28-10", method="rst",               # :48
    train_eps=0.031, train_step_size=0.007,        # :115 and the README, :121
    beta=6.0, weight_decay=5e-4, epochs=200,       # :123, :93, :76
    batch_size=256, unsup_fraction=0.5,            # :72, :131
    epoch_images=50000,                            # SemiSupervisedSampler(num_batches=ceil(50000 / 256)) (:237-240)
    nesterov=True, awp_gamma=0.0,                  # :101
    lr_by_epoch=[rst_lr(e) for e in range(1, 201)],
    bn_sequence="official-rst", train_mode_forwards_per_step=2)  # losses.py:80, 81
# MART-AWP and RST-AWP: no official code; the cards say so and use TRADES-AWP's AWP settings.
RECONSTRUCTION = {"awp_gamma": 0.005, "awp_warmup": 9, "awp_first_epoch": 10}  # train_trades_cifar.py:60,62,179

OFFICIAL = {
    "cifar10-at": awp_at("cifar10", 0.0, 0),
    "cifar10-at-awp": awp_at("cifar10", 0.01, 0),
    "cifar10-at-wrn34": awp_at("cifar10", 0.0, 0, "wrn-34-10"),
    "cifar10-at-awp-wrn34": awp_at("cifar10", 0.01, 0, "wrn-34-10"),
    "cifar100-at": awp_at("cifar100", 0.0, 0),
    "cifar100-at-awp": awp_at("cifar100", 0.01, 0),
    "svhn-at": awp_at("svhn", 0.0, 5),
    "svhn-at-awp": awp_at("svhn", 0.01, 5),
    "cifar10-trades": TRADES,
    "cifar10-trades-awp": TRADES_AWP,
    "cifar10-mart": MART,
    "cifar10-mart-awp": {**MART, **RECONSTRUCTION},
    "cifar10-rst": RST,
    "cifar10-rst-awp": {**RST, **RECONSTRUCTION},
}

# The official script each paper row follows (repository, then the script's path in it).
SCRIPT = {
    **{name: f"csdongxian/AWP AT_AWP/train_{name.split('-')[0]}.py" for name in OFFICIAL
       if name.split("-")[1] == "at"},
    "cifar10-trades": "yaodongyu/TRADES train_trades_cifar10.py",
    "cifar10-trades-awp": "csdongxian/AWP trades_AWP/train_trades_cifar.py",
    "cifar10-mart": "YisenWang/MART train_wideresnet.py",
    "cifar10-mart-awp": "YisenWang/MART train_wideresnet.py",  # RECONSTRUCTION: MART's recipe plus TRADES-AWP's AWP
    "cifar10-rst": "yaircarmon/semisup-adv robust_self_training.py",
    "cifar10-rst-awp": "yaircarmon/semisup-adv robust_self_training.py",  # RECONSTRUCTION, likewise
}
