"""Input-space attacks: PGD (Madry et al. 2018), FGSM, CW-inf and the TRADES KL attack.

All attacks share one projected-gradient engine. It takes gradients with respect to the input only
(``torch.autograd.grad``), so no weight gradient is ever filled, and computes what does not change
between steps (the clean probabilities of the TRADES attack) once. Results always lie inside the
eps-ball around ``x`` and inside [0, 1]. An attack may switch the model to eval (or train) mode,
and always restores every submodule's mode afterwards (:func:`awp.modes.model_mode`, re-exported
here). Settings are checked where they enter, by :func:`awp.threat.check_threat`; the norms, modes,
random starts and losses are registries, so an unknown name is one line naming the closest.

Conventions (those of the Rice et al., TRADES and MART code): Linf PGD starts uniformly in the
eps-ball; TRADES and MART start
at x + 0.001 N(0, 1); the CW loss is the margin -clamp(z_y - max_{k != y} z_k + kappa, min=0).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp.checks import check_int
from awp.modes import MODES, model_mode
from awp.registry import Registry
from awp.threat import NORMS, check_threat

__all__ = ["LOSSES", "MODES", "NORMS", "STARTS", "cw_inf", "fgsm", "margin_loss", "model_mode",
           "pgd", "trades_kl"]

STARTS = Registry("random start", {
    "uniform": "uniform in the eps-ball (Madry et al.; the Rice et al. / AWP AT code)",
    "normal": "x + 0.001 N(0, 1), not projected (the TRADES and MART code)",
    "none": "x itself",
})
LOSSES: Registry[Callable[[Tensor, float], Callable[[Tensor], Tensor]]] = Registry("attack loss")


def margin_loss(logits: Tensor, y: Tensor, kappa: float = 0.0) -> Tensor:
    """Per-example CW margin loss -clamp(z_y - max_{k != y} z_k + kappa, min=0) (to be maximized)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -torch.clamp(true - others.amax(1) + kappa, min=0)


@LOSSES.register("ce")
def _cross_entropy(y: Tensor, kappa: float) -> Callable[[Tensor], Tensor]:
    """Cross-entropy of the true label (kappa unused)."""
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


@LOSSES.register("cw")
def _margin(y: Tensor, kappa: float) -> Callable[[Tensor], Tensor]:
    """Carlini-Wagner margin -clamp(z_y - max_{k != y} z_k + kappa, min=0)."""
    return lambda logits: margin_loss(logits, y, kappa)


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * torch.clamp(eps / _flat_norm(delta), max=1.0)
    # Clamping to the image box only shrinks each coordinate of delta, so the point stays in the ball.
    return (x + delta).clamp(0.0, 1.0)


def _start_name(random_start: bool | str) -> str:
    """True / False are the old spellings of 'uniform' / 'none'."""
    if isinstance(random_start, bool):
        return "uniform" if random_start else "none"
    return STARTS.resolve(random_start)


def _start(x: Tensor, eps: float, norm: str, random_start: str, generator) -> Tensor:
    if random_start == "none" or eps == 0:
        return x.clone()
    if random_start == "normal":  # TRADES / MART: x + 0.001 N(0, 1)
        return x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return _project(x + (2 * noise - 1) * eps, x, eps, norm)
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device)
    return _project(x + direction / _flat_norm(direction) * radius * eps, x, eps, norm)


def _ascend(model: nn.Module, x: Tensor, x_adv: Tensor, objective: Callable[[Tensor], Tensor], *,
            eps: float, step_size: float, steps: int, norm: str) -> Tensor:
    # The TRADES/MART start is not projected (as in their code); every step, and the result, is.
    x_adv = _project(x_adv, x, eps, norm) if steps == 0 else x_adv
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(model(x_adv).float()).sum()
        (grad,) = torch.autograd.grad(loss, [x_adv])
        if norm == "linf":
            step = grad.sign()
        else:
            step = grad / _flat_norm(grad)
        x_adv = _project(x_adv.detach() + step_size * step, x, eps, norm)
    return x_adv.detach()


def _attack(model: nn.Module, x: Tensor, objective: Callable[[Tensor], Tensor], *, eps: float,
            step_size: float, steps: int, norm: str, random_start, restarts: int, mode: str,
            generator) -> Tensor:
    """Run the projected ascent ``restarts`` times, keeping each example's highest objective."""
    check_threat(eps=eps, step_size=step_size, steps=steps, norm=norm)
    steps, restarts = int(steps), check_int(restarts, "restarts", 1)
    random_start = _start_name(random_start)
    x = x.detach()
    with model_mode(model, mode):
        best = _ascend(model, x, _start(x, eps, norm, random_start, generator), objective,
                       eps=eps, step_size=step_size, steps=steps, norm=norm)
        if restarts == 1:
            return best
        with torch.no_grad():
            best_value = objective(model(best).float())
        for _ in range(restarts - 1):
            candidate = _ascend(model, x, _start(x, eps, norm, random_start, generator), objective,
                                eps=eps, step_size=step_size, steps=steps, norm=norm)
            with torch.no_grad():
                value = objective(model(candidate).float())
                better = value > best_value
                best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), candidate, best)
                best_value = torch.where(better, value, best_value)
        return best


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int,
        norm: str = "linf", random_start: bool | str = True, restarts: int = 1, loss: str = "ce",
        kappa: float = 0.0, mode: str = "eval", generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent on the cross-entropy (``loss='ce'``) or CW margin (``'cw'``).

    ``random_start``: True/'uniform' (uniform in the ball), 'normal' (x + 0.001 N(0, 1)) or False.
    ``mode``: 'eval' (default), 'train' (BatchNorm on batch statistics, as the original AT code
    crafts training examples; this updates BN running statistics like any train-mode forward) or
    'keep'. ``generator`` (on ``x``'s device) makes the random start reproducible.
    """
    return _attack(model, x, LOSSES.get(loss)(y, kappa), eps=eps, step_size=step_size, steps=steps, norm=norm,
                   random_start=random_start, restarts=restarts, mode=mode, generator=generator)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
         mode: str = "eval") -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, norm=norm, random_start=False, mode=mode)


def cw_inf(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None,
           steps: int = 30, kappa: float = 50.0, random_start: bool | str = True, mode: str = "eval",
           generator: torch.Generator | None = None) -> Tensor:
    """CW-inf: Linf PGD on the CW margin loss (kappa 50, 30 steps of eps/4, as in the MART/AWP tables)."""
    return pgd(model, x, y, eps=eps, step_size=eps / 4 if step_size is None else step_size,
               steps=steps, norm="linf", random_start=random_start, loss="cw", kappa=kappa,
               mode=mode, generator=generator)


def trades_kl(model: nn.Module, x: Tensor, *, eps: float, step_size: float, steps: int,
              norm: str = "linf", mode: str = "eval", clean_logits: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """TRADES attack (Zhang et al. 2019): maximize KL(p(x) || p(x')) from x + 0.001 N(0, 1).

    p(x) is computed once (it does not change between steps) unless ``clean_logits`` are given.
    """
    with model_mode(model, mode), torch.no_grad():
        p_clean = F.softmax((model(x) if clean_logits is None else clean_logits).float(), dim=1)
    objective = lambda logits: F.kl_div(F.log_softmax(logits, dim=1), p_clean,  # noqa: E731
                                        reduction="none").sum(1)
    return _attack(model, x, objective, eps=eps, step_size=step_size, steps=steps, norm=norm,
                   random_start="normal", restarts=1, mode=mode, generator=generator)
