"""One AT, AT-AWP, TRADES and TRADES-AWP training step: ours against the original repositories' code paths.

The "original" steps are written out below, following the official code line by line:
  - AT (Rice et al., locuslab/robust_overfitting ``attack_pgd``, as reused by csdongxian/AWP
    ``train_cifar10.py``): the attack runs in train mode on ``delta.requires_grad = True`` and calls
    ``loss.backward()``, which also fills every weight gradient (cleared later by
    ``opt.zero_grad()``), then one more forward to pick the best restart;
  - TRADES (yaodongyu/TRADES ``trades.py``): the attack (eval mode) takes
    ``torch.autograd.grad`` of ``KLDivLoss(sum)`` but recomputes ``softmax(model(x_natural))``
    inside every attack step; the outer loss runs ``model(x_natural)`` twice;
  - AWP (csdongxian/AWP ``utils_awp.AdvWeightPerturb`` / ``TradesAWP``): every step copies the
    model's state dict into a proxy model, takes an SGD step on the proxy's negated loss and
    rebuilds v from the weight difference; TRADES-AWP uses that repository's ``perturb_input``.
Ours: ``awp.train.train_step`` with ``awp.methods.get_method`` and
``awp.perturbation.AdversarialWeightPerturbation``.

First the mathematics is checked: from the same weights and the same RNG state, one step of ours
and one of the original path give the same updated weights (asserted; max abs difference printed).
Then the two are timed, interleaved round by round, medians; the ratio original / ours is
printed for each method (target >= 1.3). The per-pass costs on this machine (forward, backward to
the input only, full backward) are printed too: they explain the ratios a CPU can show.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/step_speed.py [--model smallcnn] [--batch 128]
        [--rounds 7] [--threads 1]     # --model preactresnet18 --batch 16 --rounds 3: ~4 minutes
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse
import copy
import platform
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.common import interleaved
from awp.methods import get_method
from awp.models import build_model
from awp.perturbation import AdversarialWeightPerturbation
from awp.train import train_step

EPS, STEP, STEPS, BETA, GAMMA = 8 / 255, 2 / 255, 10, 6.0, 0.01
AWP_EPS = 1e-20


# ------------------------------------------------------------------------------------------------
# The original code paths (their .cuda() calls replaced by the device of the batch; the models
# hold their own identity normalization). benchmarks/gpu.py times them on a GPU.


def clamp(x, lower, upper):
    return torch.max(torch.min(x, upper), lower)


def rice_attack_pgd(model, X, y, epsilon, alpha, attack_iters, restarts=1):
    """locuslab/robust_overfitting ``attack_pgd`` (Linf, no early stop, no mixup), as in AWP's AT code."""
    max_loss = torch.zeros(y.shape[0], device=y.device)
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X)
        delta.uniform_(-epsilon, epsilon)
        delta = clamp(delta, 0 - X, 1 - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            index = slice(None, None, None)
            loss = F.cross_entropy(output, y)
            loss.backward()  # fills delta.grad and every weight's .grad
            grad = delta.grad.detach()
            d = delta[index, :, :, :]
            g = grad[index, :, :, :]
            x = X[index, :, :, :]
            d = torch.clamp(d + alpha * torch.sign(g), min=-epsilon, max=epsilon)
            d = clamp(d, 0 - x, 1 - x)
            delta.data[index, :, :, :] = d
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(X + delta), y, reduction="none")
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


def diff_in_weights(model, proxy):
    diff_dict = OrderedDict()
    model_state_dict = model.state_dict()
    proxy_state_dict = proxy.state_dict()
    for (old_k, old_w), (new_k, new_w) in zip(model_state_dict.items(), proxy_state_dict.items()):
        if len(old_w.size()) <= 1:
            continue
        if "weight" in old_k:
            diff_w = new_w - old_w
            diff_dict[old_k] = old_w.norm() / (diff_w.norm() + AWP_EPS) * diff_w
    return diff_dict


def add_into_weights(model, diff, coeff=1.0):
    names_in_diff = diff.keys()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names_in_diff:
                param.add_(coeff * diff[name])


class AdvWeightPerturb:
    """csdongxian/AWP ``utils_awp.AdvWeightPerturb`` (AT)."""

    def __init__(self, model, proxy, proxy_optim, gamma):
        self.model, self.proxy, self.proxy_optim, self.gamma = model, proxy, proxy_optim, gamma

    def calc_awp(self, inputs_adv, targets):
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss = -F.cross_entropy(self.proxy(inputs_adv), targets)
        self.proxy_optim.zero_grad()
        loss.backward()
        self.proxy_optim.step()
        return diff_in_weights(self.model, self.proxy)

    def perturb(self, diff):
        add_into_weights(self.model, diff, coeff=1.0 * self.gamma)

    def restore(self, diff):
        add_into_weights(self.model, diff, coeff=-1.0 * self.gamma)


class TradesAWP(AdvWeightPerturb):
    """csdongxian/AWP ``utils_awp.TradesAWP``."""

    def calc_awp(self, inputs_adv, inputs_clean, targets, beta):
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss_natural = F.cross_entropy(self.proxy(inputs_clean), targets)
        loss_robust = F.kl_div(F.log_softmax(self.proxy(inputs_adv), dim=1),
                               F.softmax(self.proxy(inputs_clean), dim=1), reduction="batchmean")
        loss = -1.0 * (loss_natural + beta * loss_robust)
        self.proxy_optim.zero_grad()
        loss.backward()
        self.proxy_optim.step()
        return diff_in_weights(self.model, self.proxy)


def original_at_step(model, opt, X, y, awp_adversary=None):
    """csdongxian/AWP ``train_cifar10.py`` (Rice et al.'s loop plus AWP), one batch."""
    model.train()
    delta = rice_attack_pgd(model, X, y, EPS, STEP, STEPS, 1).detach()
    X_adv = torch.clamp(X + delta[:X.size(0)], min=0, max=1)
    model.train()
    if awp_adversary is not None:
        awp = awp_adversary.calc_awp(inputs_adv=X_adv, targets=y)
        awp_adversary.perturb(awp)
    robust_output = model(X_adv)
    robust_loss = F.cross_entropy(robust_output, y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    if awp_adversary is not None:
        awp_adversary.restore(awp)


def trades_loss_original(model, x_natural, y, optimizer, step_size, epsilon, perturb_steps, beta):
    """yaodongyu/TRADES ``trades.py`` ``trades_loss`` (Linf)."""
    criterion_kl = nn.KLDivLoss(reduction="sum")  # size_average=False in the original
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                   F.softmax(model(x_natural), dim=1))  # recomputed every step
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    optimizer.zero_grad()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                    F.softmax(model(x_natural), dim=1))
    return loss_natural + beta * loss_robust


def original_trades_step(model, opt, X, y):
    """yaodongyu/TRADES ``train_trades_cifar10.py`` ``train``, one batch."""
    model.train()
    loss = trades_loss_original(model, X, y, opt, STEP, EPS, STEPS, BETA)
    loss.backward()
    opt.step()


def perturb_input(model, x_natural, step_size, epsilon, perturb_steps):
    """csdongxian/AWP ``train_trades_cifar10.py`` ``perturb_input`` (Linf)."""
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1),
                               F.softmax(model(x_natural), dim=1), reduction="sum")
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def original_trades_awp_step(model, opt, X, y, awp_adversary):
    """csdongxian/AWP ``train_trades_cifar10.py`` ``train``, one batch (after the AWP warm-up)."""
    x_adv = perturb_input(model, X, STEP, EPS, STEPS)
    model.train()
    awp = awp_adversary.calc_awp(inputs_adv=x_adv, inputs_clean=X, targets=y, beta=BETA)
    awp_adversary.perturb(awp)
    opt.zero_grad()
    logits_adv = model(x_adv)
    loss_robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(model(X), dim=1),
                           reduction="batchmean")
    logits = model(X)
    loss_natural = F.cross_entropy(logits, y)
    loss = loss_natural + BETA * loss_robust
    loss.backward()
    opt.step()
    awp_adversary.restore(awp)


# ------------------------------------------------------------------------------------------------


def make_optimizer(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


class Pair:
    """One method, ours and the original, each with its own model copy and optimizer."""

    def __init__(self, name, base, lr):
        self.name = name
        self.awp = name.endswith("-AWP")
        self.method = get_method("at" if name.startswith("AT") else "trades", eps=EPS,
                                 step_size=STEP, steps=STEPS, beta=BETA)
        self.ours_model = copy.deepcopy(base)
        self.ours_opt = make_optimizer(self.ours_model, lr)
        self.ours_awp = AdversarialWeightPerturbation(self.ours_model, GAMMA) if self.awp else None
        self.orig_model = copy.deepcopy(base)
        self.orig_opt = make_optimizer(self.orig_model, lr)
        self.orig_awp = None
        if self.awp:
            proxy = copy.deepcopy(base)  # the official code builds a second model once
            cls = AdvWeightPerturb if name.startswith("AT") else TradesAWP
            self.orig_awp = cls(self.orig_model, proxy, torch.optim.SGD(proxy.parameters(), lr=0.01), GAMMA)

    def ours(self, x, y):
        train_step(self.ours_model, self.ours_opt, self.method, x, y, self.ours_awp)

    def original(self, x, y):
        if self.name.startswith("AT"):
            original_at_step(self.orig_model, self.orig_opt, x, y, self.orig_awp)
        elif self.awp:
            original_trades_awp_step(self.orig_model, self.orig_opt, x, y, self.orig_awp)
        else:
            original_trades_step(self.orig_model, self.orig_opt, x, y)


def check_same_math(pair, x, y) -> tuple[float, float, float]:
    """One step each from the same weights and RNG state:
    (max |w_ours - w_orig|, max |w_ours - w0|, max buffer diff)."""
    w0 = {k: v.clone() for k, v in pair.ours_model.state_dict().items()}
    torch.manual_seed(1234)
    pair.ours(x, y)
    torch.manual_seed(1234)
    pair.original(x, y)
    ours = {k: v.detach() for k, v in pair.ours_model.named_parameters()}
    orig = {k: v.detach() for k, v in pair.orig_model.named_parameters()}
    diff = max(float((ours[k] - orig[k]).abs().max()) for k in ours)
    moved = max(float((ours[k] - w0[k]).abs().max()) for k in ours)
    b_ours, b_orig = dict(pair.ours_model.named_buffers()), dict(pair.orig_model.named_buffers())
    bdiff = max([float((b_ours[k] - b_orig[k]).abs().max()) for k in b_ours if b_ours[k].is_floating_point()]
                or [0.0])
    return diff, moved, bdiff


def pass_costs(model, x, y, rounds):
    """Median seconds of forward, forward + input-only backward, forward + full backward (train mode)."""
    model.train()

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_input_bwd():
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y), [xi])

    def fwd_full_bwd():
        xi = x.detach().requires_grad_(True)
        F.cross_entropy(model(xi), y).backward()
        model.zero_grad(set_to_none=True)

    return interleaved({"fwd": fwd, "fwd+input-bwd": fwd_input_bwd, "fwd+full-bwd": fwd_full_bwd}, rounds)[0]


def predict(name: str, f1: float, f2: float, f3: float) -> float:
    """original / ours from pass counts; f1 fwd, f2 fwd + input-bwd, f3 fwd + full bwd.

    AT: original 10 (fwd + full bwd) + 1 fwd (restart selection) + outer; ours 10 (fwd + input-bwd)
    + outer. TRADES: original 10 (fwd x_adv + input-bwd + fwd x_natural) + outer of 3 forwards;
    ours 1 clean fwd + 10 (fwd + input-bwd) + outer of 2 forwards. AWP adds the loss's forwards and
    a full backward to both (the proxy's state-dict copy and diff are not counted).
    """
    if name.startswith("AT"):
        original, ours, awp = 10 * f3 + f1 + f3, 10 * f2 + f3, f3
        awp_orig = awp
    else:
        original, ours = 10 * (f2 + f1) + 3 * f3, f1 + 10 * f2 + 2 * f3
        awp_orig, awp = 3 * f3, 2 * f3
    if name.endswith("-AWP"):
        original, ours = original + awp_orig, ours + awp
    return original / ours



def main() -> None:
    global STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="preactresnet18", help="the paper's model (smallcnn: quick look)")
    parser.add_argument("--channels", default="16,32,64", help="smallcnn widths")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=0.03,
                        help="max weight difference allowed, relative to how far the step moved the weights: "
                             "float32 gradients of a fresh PreActResNet-18 in train mode are only ~3e-3 "
                             "accurate in early layers (measured against float64), so two summation orders "
                             "of the same mathematics differ at that level and sign() turns that into pixel flips of "
                             "the attack (the small CNN agrees to ~1e-5; on fixed adversarial examples the AWP "
                             "step equals the official proxy step to ~1e-5, see tests/test_perturbation.py)")
    parser.add_argument("--check-steps", type=int, default=2,
                        help="attack steps of the identical-mathematics check (timing uses 10): over many "
                             "steps sign() turns float-summation-order differences into whole-step pixel "
                             "flips, and train-mode BatchNorm spreads them over the batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = {"channels": [int(c) for c in args.channels.split(",")]} if args.model == "smallcnn" else {}
    base = build_model(args.model, num_classes=10, in_channels=3, **kwargs)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.platform()}, "
          f"{os.cpu_count()} logical CPUs")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}")
    print(f"threads: torch.get_num_threads() = {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS = {os.environ.get('OMP_NUM_THREADS')}")
    print(f"settings: {args.model}{kwargs.get('channels', '')}, batch {args.batch}x3x{args.size}x{args.size} "
          f"random images, Linf eps 8/255 step 2/255, {STEPS} attack steps, TRADES beta {BETA}, "
          f"AWP gamma {GAMMA}, SGD momentum 0.9 wd 5e-4; {args.rounds} interleaved rounds after one "
          f"warm-up, medians")

    names = ["AT", "AT-AWP", "TRADES", "TRADES-AWP"]
    timed_steps, STEPS = STEPS, args.check_steps
    print(f"identical mathematics (one step from the same weights and RNG state, lr 0.1, "
          f"{STEPS}-step attacks):")
    for name in names:
        pair = Pair(name, base, lr=0.1)
        diff, moved, bdiff = check_same_math(pair, x, y)
        print(f"  {name:11s} max |w_ours - w_original| = {diff:.2e}  (the step moved weights by up to "
              f"{moved:.2e}; BN running mean/var differ by up to {bdiff:.2e})")
        print(f"  {'':11s} difference / step size = {diff / moved:.1e} (allowed {args.tol:g})")
        assert diff <= args.tol * moved, f"{name}: ours and the original path disagree by {diff:.3g}"
    STEPS = timed_steps
    print("  (BN running statistics are not part of the step's mathematics: the original runs extra\n"
          "   train-mode forwards (attack_pgd's final restart-selection forward, TRADES' second clean\n"
          "   forward, the proxy's forwards act on the proxy), each of which moves the running averages.)")

    costs = pass_costs(copy.deepcopy(base), x, y, args.rounds)
    print("per-pass costs on this machine (train mode, medians): " + ", ".join(
        f"{k} {v * 1000:.1f} ms" for k, v in costs.items()))
    weight_part = (costs["fwd+full-bwd"] - costs["fwd+input-bwd"]) / (costs["fwd+input-bwd"] - costs["fwd"])
    print(f"  weight-gradient part of a backward / input-gradient part = {weight_part:.2f} "
          f"(about 1 on a GPU for conv nets)")
    f1, f2, f3 = costs["fwd"], costs["fwd+input-bwd"], costs["fwd+full-bwd"]
    predicted = {name: predict(name, f1, f2, f3) for name in names}
    gpu_like = {name: predict(name, 1.0, 2.0, 3.0) for name in names}

    pairs = [Pair(name, base, lr=0.01) for name in names]
    variants = {}
    for pair in pairs:
        variants[f"{pair.name} ours"] = lambda p=pair: p.ours(x, y)
        variants[f"{pair.name} original"] = lambda p=pair: p.original(x, y)
    med = interleaved(variants, args.rounds)[0]
    for name, seconds in med.items():
        print(f"  {name:22s} {seconds * 1000:9.1f} ms")
    print("summary: original / ours per training step (target >= 1.3); pass-count predictions from this\n"
          "         machine's per-pass costs, and from GPU-like costs (forward 1, input-bwd 1, weight-bwd 1)")
    for name in names:
        ratio = med[f"{name} original"] / med[f"{name} ours"]
        print(f"  {name:11s} measured {ratio:.3f}  {'met' if ratio >= 1.3 else 'NOT met':7s}  predicted here "
              f"{predicted[name]:.2f}, GPU-like {gpu_like[name]:.2f}")


if __name__ == "__main__":
    main()
