"""TRADES and MART losses against hand computations of their formulas (numpy), registry checks."""
import numpy as np
import pytest
import torch

from awp.errors import UsageError
from awp.methods import get_method, list_methods, mart_loss, trades_loss


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _logits(seed=0, n=6, k=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)) * 2, rng.normal(size=(n, k)) * 2, rng.integers(0, k, n)


def test_trades_loss_equals_hand_computation():
    zc, za, y = _logits()
    pc, pa = _softmax(zc), _softmax(za)
    ce = -np.log(pc[np.arange(len(y)), y]).mean()
    kl = (pc * (np.log(pc) - np.log(pa))).sum(1).mean()
    expected = ce + 6.0 * kl
    got = trades_loss(torch.tensor(zc), torch.tensor(za), torch.tensor(y), 6.0)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_mart_loss_equals_hand_computation():
    zc, za, y = _logits(1)
    pc, pa = _softmax(zc), _softmax(za)
    n = len(y)
    ce_adv = -np.log(pa[np.arange(n), y]).mean()
    masked = pa.copy()
    masked[np.arange(n), y] = -1
    wrong = masked.argmax(1)  # most likely wrong class under p(x')
    margin = -np.log(1.0001 - pa[np.arange(n), wrong] + 1e-12).mean()
    kl = (pc * (np.log(pc) - np.log(pa + 1e-12))).sum(1)
    robust = (kl * (1.0000001 - pc[np.arange(n), y])).mean()
    expected = ce_adv + margin + 5.0 * robust
    got = mart_loss(torch.tensor(zc), torch.tensor(za), torch.tensor(y), 5.0)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_attacks_and_gives_a_finite_differentiable_loss(name):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    method = get_method(name, eps=0.1, step_size=0.03, steps=3)
    x_adv = method.attack(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    out = method.forward(model, x, x_adv, y)
    assert torch.isfinite(out["loss"]) and out["logits_adv"].shape == (8, 10)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registry_refuses_unknown_names_and_bad_values():
    with pytest.raises(UsageError, match="unknown method"):
        get_method("pgd")
    with pytest.raises(UsageError, match="no hyperparameter"):
        get_method("at", gamma=0.1)
    with pytest.raises(UsageError, match="eps"):
        get_method("trades", eps=-0.1)
