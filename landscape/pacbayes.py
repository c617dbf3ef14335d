"""PAC-Bayes flatness with magnitude-aware weight noise (Jiang et al., ICLR 2020, "Fantastic
Generalization Measures and Where to Find Them", Sec. 5 and App. C, ``pacbayes.mag.flatness``;
as ranked by Dziugaite et al., NeurIPS 2020, code: nitarshan/robust-generalization-measures,
data/generation/measures.py:60-101 and 245-255).

sigma* is the largest sigma for which Gaussian noise u with u_i ~ N(0, sigma^2 w_i^2 + eps^2) on
every weight lowers the accuracy on the given samples by at most ``max_drop`` (default 0.1, as
the references), on average over ``draws`` noise draws; the measure is 1 / sigma*^2 (larger means
sharper). Choices, and where they differ from the references:

- the noise goes on the conv and linear weights (:func:`awp.weights.is_weight`, the tensors AWP
  and the landscape perturb); biases, BatchNorm affine parameters and statistics are untouched.
  The references perturb every parameter;
- eps = 1e-3 as the references (measures.py:246); its floor keeps noise on weights that are
  exactly zero and is the only part of the noise that does not scale with the weights;
- u_i has standard deviation sqrt(sigma^2 w_i^2 + eps^2), the paper's variance (the reference
  code passes that variance to ``torch.normal`` as the standard deviation);
- common random numbers: draw k uses the same z_k ~ N(0, I) (seed ``seed + k``) at every sigma,
  u = z_k * sqrt(sigma^2 w^2 + eps^2), so the accuracy drop is a fixed function of sigma that the
  bisection scans; the references draw fresh noise at every sigma;
- the bisection halves [0, sigma_max] (sigma_max = 2, as the references) exactly ``depth``
  times, keeping drop(lo) <= max_drop < drop(hi), and returns lo: sigma* is resolved to
  sigma_max / 2^depth (the references stop early once |drop - max_drop| < 0.01). When even
  sigma_max / 2^depth drops the accuracy too much, sigma* is reported as that resolution, so
  the measure is then a lower bound;
- accuracy is robust accuracy with the attack re-run at every w + u (clean when attack is None),
  and drop = acc(w) - mean_k acc(w + u_k), signed (noise that helps is no drop). When acc(w) is at
  most ``max_drop`` no noise can lower it that much, and sigma* is the ceiling
  sigma_max (1 - 2^-depth): the measure says nothing about a model with (robust) accuracy that low.

Scale invariance: rescaling a weight tensor by c scales its noise by c (up to the eps floor), so
a conv layer followed by BatchNorm can be rescaled without changing sigma*.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from awp.errors import require
from awp.metrics import AttackSpec
from awp.runtime import Runtime
from awp.weights import named_weights, unwrap
from landscape.evaluate import PointEvaluator

EPS = 1e-3  # Jiang et al. 2020; nitarshan/robust-generalization-measures data/generation/measures.py:246
SIGMA_MAX = 2.0  # the bisection's upper end in the same code (measures.py:71)


def magnitude_noise(model: nn.Module, sigma: float, seed: int, eps: float = EPS) -> dict[str, Tensor]:
    """u_i = z_i sqrt(sigma^2 w_i^2 + eps^2) on every weight tensor (float32, on its device), with
    z ~ N(0, I) drawn in registration order from a generator seeded with ``seed``: the same seed
    gives the same z at every sigma. The model is not touched."""
    noise: dict[str, Tensor] = {}
    generators: dict[torch.device, torch.Generator] = {}
    for name, p in named_weights(unwrap(model)):
        w = p.detach().float()
        gen = generators.setdefault(w.device, torch.Generator(device=w.device).manual_seed(int(seed)))
        z = torch.randn(w.shape, generator=gen, device=w.device, dtype=torch.float32)
        noise[name] = z.mul_((w.square() * sigma ** 2 + eps ** 2).sqrt_())
    return noise


def bisect_sigma(drop: Callable[[float], float], max_drop: float, sigma_max: float = SIGMA_MAX,
                 depth: int = 10) -> float:
    """Bisection on [0, sigma_max]: ``depth`` midpoints, keeping drop(lo) <= max_drop < drop(hi).

    Returns lo, a multiple of sigma_max / 2^depth. For a non-decreasing ``drop`` this is the largest
    such multiple below sigma_max with drop <= max_drop; otherwise it is one crossing.
    """
    lo, hi = 0.0, float(sigma_max)
    for _ in range(int(depth)):
        mid = (lo + hi) / 2
        if drop(mid) <= max_drop:
            lo = mid
        else:
            hi = mid
    return lo


def _check(max_drop: float, draws: int, depth: int, sigma_max: float, eps: float) -> None:
    require(0 < max_drop < 1, f"max_drop must be in (0, 1) (an accuracy drop), got {max_drop}")
    require(int(draws) == draws and draws >= 1, f"draws must be a whole number >= 1, got {draws}")
    require(int(depth) == depth and 1 <= depth <= 40, f"depth must be a whole number in [1, 40], got {depth}")
    require(sigma_max > 0, f"sigma_max must be > 0, got {sigma_max}")
    require(eps >= 0, f"eps must be >= 0, got {eps}")


def pac_bayes_sigma(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, max_drop: float = 0.1,
                    draws: int = 3, depth: int = 10, sigma_max: float = SIGMA_MAX, eps: float = EPS,
                    seed: int = 0, batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """sigma* of the module docstring (not floored at the resolution); model left bit-identical."""
    _check(max_drop, draws, depth, sigma_max, eps)
    evaluator = PointEvaluator(model, data, loss="clean" if attack is None else "adversarial", attack=attack,
                               batch_size=batch_size, runtime=runtime)
    names = [name for name, _ in named_weights(unwrap(model))]
    with evaluator.session():
        centre = evaluator.point()[1]

        def drop(sigma: float) -> float:
            correct = [evaluator.sums(magnitude_noise(model, sigma, seed + k, eps), names)[1]
                       for k in range(int(draws))]
            return centre - float(torch.stack(correct).mean()) / evaluator.count

        return bisect_sigma(drop, max_drop, sigma_max, depth)


def pac_bayes_sharpness(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, max_drop: float = 0.1,
                        draws: int = 3, depth: int = 10, sigma_max: float = SIGMA_MAX, eps: float = EPS,
                        seed: int = 0, batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """1 / sigma*^2 (module docstring), sigma* floored at its resolution sigma_max / 2^depth.

    Units: 1 / (relative weight noise)^2. Cost: 1 + depth x draws evaluations of the accuracy,
    each one attack (S steps: S forward+backward to the input) plus one forward.
    """
    sigma = pac_bayes_sigma(model, data, attack, max_drop=max_drop, draws=draws, depth=depth,
                            sigma_max=sigma_max, eps=eps, seed=seed, batch_size=batch_size, runtime=runtime)
    return 1.0 / max(sigma, sigma_max / 2 ** int(depth)) ** 2
