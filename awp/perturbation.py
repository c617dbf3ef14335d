"""Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020, Eq. 7-9 and the official code).

AWP solves min_w max_{v in V} rho(w + v) with V = {v : ||v_l|| <= gamma ||w_l|| for every layer l}.
The official one-step implementation, which is what this module computes by default:

1. g_l = d loss / d w_l of the method's own training loss on (x, x_adv, y), with BatchNorm on
   batch statistics (train mode) and the model's running statistics left untouched;
2. v_l = gamma ||w_l|| g_l / (||g_l|| + 1e-20), only for conv and linear weights
   (:func:`awp.weights.is_weight`), v in float32 and the norms accumulated in float64 (a float32
   sum over a WRN's 2.4M-entry kernel is off by ~5e-5 relative on a CPU);
3. w <- w + v; the training step is taken there; w <- w - v.

The official code gets g through a proxy model (a state-dict copy and one SGD step on the negated
loss); the proxy's learning rate cancels in step 2, so this module takes the gradient directly
with ``torch.autograd.grad`` on the model itself: no copy, and ``.grad`` is never touched.
K > 1 ascent steps with projection onto V are an extension (``steps``), not the paper's method.

Every weight perturbation a training step can take is a :class:`WeightPerturber` registered in
:data:`PERTURBATIONS`: ``awp`` (this one) and ``random`` (the paper's same-size random baseline).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import Tensor, nn

from awp import distributed
from awp.attacks import model_mode
from awp.checks import check_int, check_number
from awp.errors import UsageError
from awp.registry import Registry
from awp.weights import WeightOffset, named_weights, unwrap

if TYPE_CHECKING:
    from awp.config import TrainConfig
    from awp.runtime import Runtime

EPS = 1e-20  # the official code's guard; float32 keeps it representable (it underflows in fp16)


def _norm(t: Tensor) -> Tensor:
    """||t|| accumulated in float64 (a 0-dim float64 tensor on t's device; no host sync)."""
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float64)


def _scaled(g: Tensor, size: Tensor) -> Tensor:
    """g * size / (||g|| + 1e-20) in place, the factor formed in float64 and applied in g's dtype."""
    return g.mul_((size / (_norm(g) + EPS)).to(g.dtype))


class WeightPerturbation:
    """A perturbation v of named weights, applied only inside :meth:`applied`.

    ``tensors`` maps parameter names to float32 tensors shaped like the parameters.
    """

    def __init__(self, model: nn.Module, tensors: dict[str, Tensor]):
        self.model = model
        self.tensors = tensors

    def norms(self) -> dict[str, float]:
        """||v_l|| for each perturbed tensor."""
        return {name: float(_norm(v)) for name, v in self.tensors.items()}

    @contextlib.contextmanager
    def applied(self, exact: bool = True) -> Iterator["WeightPerturbation"]:
        """w += v on entry and w -= v on exit, even when the block raises (:class:`awp.weights.WeightOffset`).

        ``exact`` (default): when nothing inside the block changed a weight in place, exit restores
        a saved copy bit for bit (w + v - v is not exact in floating point); a weight the block did
        change (an optimizer step taken at w + v, as AWP prescribes) gets v subtracted, exactly
        like the official code. ``exact=False`` always subtracts and saves no copy (the training
        step uses it: its optimizer step changes the weights anyway).
        """
        with WeightOffset(self.model, exact=exact).applied([(1.0, self.tensors)], list(self.tensors)):
            yield self


class WeightPerturber:
    """What a training step asks of a weight perturbation: ``compute(loss_fn)`` -> the
    :class:`WeightPerturbation` v of this batch (never changing the model), and ``state_dict`` /
    ``load_state_dict`` for what resuming needs besides the model. Entries of :data:`PERTURBATIONS`.

    ``gamma``: the relative size per layer, ||v_l|| = gamma ||w_l|| on the conv and linear weights
    (:func:`awp.weights.named_weights`), the set the official AWP code perturbs.
    """

    def __init__(self, model: nn.Module, gamma: float):
        self.model = model
        self.gamma = check_number(gamma, "perturbation gamma", low=0, high=1, low_open=True,
                                  unit=" (a relative weight norm)")
        self.names = [name for name, _ in named_weights(unwrap(model))]
        if not self.names:
            raise UsageError("the model has no conv or linear weight to perturb")

    @classmethod
    def from_config(cls, config: "TrainConfig", model: nn.Module, runtime: "Runtime") -> "WeightPerturber":
        """This perturbation with a training config's settings (``awp_gamma``...)."""
        raise NotImplementedError

    def compute(self, loss_fn: Callable[[nn.Module], Tensor]) -> WeightPerturbation:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        """What resuming needs besides the model; nothing by default."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (a no-op by default)."""


PERTURBATIONS: Registry[type[WeightPerturber]] = Registry("weight perturbation")


@PERTURBATIONS.register("awp", aliases=("adversarial",))
class AdversarialWeightPerturbation(WeightPerturber):
    """AWP (Wu et al. 2020, Eq. 8-9): the worst-case weight perturbation of the training loss.

    Computes AWP's worst-case weight perturbation for a loss; never changes the model.

    Usage (as in the README)::

        awp = AdversarialWeightPerturbation(model, gamma=0.01)
        v = awp.compute(lambda m: method.loss(m, x, x_adv, y))   # model and BN stats unchanged
        with v.applied():                                        # w += v, then w -= v on exit
            loss = method.loss(model, x, x_adv, y); opt.zero_grad(); loss.backward(); opt.step()

    ``gamma``: relative size per layer, ||v_l|| = gamma ||w_l||. ``steps``: ascent steps (1 is the
    paper's method; more is projected ascent onto V with relative step ``step_size``, default gamma).
    """

    def __init__(self, model: nn.Module, gamma: float = 0.01, *, steps: int = 1,
                 step_size: float | None = None):
        super().__init__(model, gamma)
        self.steps = check_int(steps, "awp steps", 1)
        self.step_size = self.gamma if step_size is None else check_number(step_size, "awp step_size", low=0,
                                                                            low_open=True)

    @classmethod
    def from_config(cls, config: "TrainConfig", model: nn.Module, runtime: "Runtime") -> "WeightPerturber":
        return cls(model, config.awp_gamma, steps=config.awp_steps)

    def _gradient(self, loss_fn: Callable[[nn.Module], Tensor]) -> list[Tensor]:
        params = dict(unwrap(self.model).named_parameters())
        loss = loss_fn(self.model)
        grads = torch.autograd.grad(loss, [params[n] for n in self.names], allow_unused=True)
        # Under DDP the ascent follows the whole global batch: the gradient is averaged over processes.
        return [distributed.all_reduce_mean(torch.zeros_like(params[n], dtype=torch.float32) if g is None
                                            else g.detach().float()) for n, g in zip(self.names, grads)]

    def compute(self, loss_fn: Callable[[nn.Module], Tensor]) -> WeightPerturbation:
        """v for ``loss_fn(model)`` (a scalar to maximize), with BN in train mode, stats restored."""
        module = unwrap(self.model)
        params = dict(module.named_parameters())
        w_norms = [_norm(params[n]) for n in self.names]
        buffers = [(b, b.detach().clone()) for b in module.buffers()]
        try:
            with model_mode(self.model, "train"):
                # One step (the paper's method): v_l = gamma ||w_l|| g_l / (||g_l|| + 1e-20),
                # written as one scaling pass over g_l (on a CPU these passes, not the
                # gradient, are what an extra elementwise operation costs).
                grads = self._gradient(loss_fn)
                v = [_scaled(g_l, self.step_size * w_norm) for g_l, w_norm in zip(grads, w_norms)]
                for _ in range(self.steps - 1):  # the projected-ascent extension
                    with WeightPerturbation(self.model, dict(zip(self.names, v))).applied():
                        grads = self._gradient(loss_fn)
                    for v_l, g_l, w_norm in zip(v, grads, w_norms):
                        v_l.add_(_scaled(g_l, self.step_size * w_norm))
                        v_l.mul_(torch.clamp(self.gamma * w_norm / (_norm(v_l) + EPS), max=1.0).to(v_l.dtype))
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
        return WeightPerturbation(self.model, dict(zip(self.names, v)))



@PERTURBATIONS.register("random")
class RandomWeightPerturbation(WeightPerturber):
    """Random weight perturbation, the paper's baseline (Sec. 5, Fig. 4b): a random v of AWP's relative size.

    v_l = gamma ||w_l|| r_l / ||r_l|| with r_l Gaussian, fresh at every step; the loss is not
    used. Comparing it with AWP at equal gamma shows that the direction, not the size, matters.
    """

    def __init__(self, model: nn.Module, gamma: float = 0.01, *, generator: torch.Generator | None = None):
        super().__init__(model, gamma)
        self.generator = generator

    @classmethod
    def from_config(cls, config: "TrainConfig", model: nn.Module, runtime: "Runtime") -> "WeightPerturber":
        # Its own seed stream (seed + 7919), so that it does not shift the attack's random starts.
        return cls(model, config.awp_gamma, generator=runtime.generator(config.seed + 7919))

    def compute(self, loss_fn: Callable[[nn.Module], Tensor] | None = None) -> WeightPerturbation:
        params = dict(unwrap(self.model).named_parameters())
        v = {}
        for name in self.names:
            w = params[name].detach()
            r = torch.randn(w.shape, generator=self.generator, device=w.device)
            v[name] = _scaled(r, self.gamma * _norm(w))
        return WeightPerturbation(self.model, v)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state, so a resumed run draws the same v as an uninterrupted one."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"].to("cpu"))
