"""Measures that may predict the robust gap (landscape.measures): each against an independent computation.

References used here: a dense Hessian from torch.autograd.functional.hessian (float64), a
hand-applied AWP perturbation measured with awp.metrics.clean_and_robust, a brute-force sigma
grid on deep copies of the model, per-example gradients and logits computed directly.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from awp.data import build_dataset
from awp.errors import UsageError
from awp.metrics import AttackSpec, clean_and_robust
from awp.models import build_model
from awp.weights import named_weights
from landscape.directions import random_direction
from landscape.hessian import HessianOperator
from landscape.measures import MEASURES, measure
from landscape.pacbayes import bisect_sigma, magnitude_noise, pac_bayes_sigma

ATTACK = AttackSpec(eps=0.1, step_size=0.025, steps=3, seed=7)  # robust accuracy 0.62 on the fitted CNN
# Cheap settings per measure for the invariant tests; a new measure must be added here.
FAST = {"sharpness": {"directions": 1}, "curvature": {"directions": 1, "points": 3},
        "average_sharpness": {"draws": 1}, "worst_case_sharpness": {"steps": 2}, "awp_sharpness": {},
        "hessian_top_eigenvalue": {"iters": 3}, "hessian_trace": {"samples": 2},
        "pac_bayes_sharpness": {"depth": 4, "draws": 1}, "input_gradient_norm": {}, "logit_margin": {},
        "weight_norm": {}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return build_dataset("digits", val_size=0, train_subset=300).train.tensors(limit=48)


@pytest.fixture(scope="module")
def trained(data):
    """A small CNN fitted to the samples (so weight noise has accuracy to lower), BN statistics set."""
    x, y = data
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=[4, 8, 8])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def _fresh(model):
    return copy.deepcopy(model).eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------ the registry
@pytest.mark.parametrize("name", list(MEASURES))
def test_measure_is_seeded_and_leaves_the_model_untouched(name, trained, data):
    assert set(FAST) == set(MEASURES)
    model = _fresh(trained).train()  # train mode on entry: a train-mode forward would move BN statistics
    state = _state(model)
    first = measure(name, model, data, ATTACK, **FAST[name])
    second = measure(name, model, data, ATTACK, **FAST[name])
    assert first == second and first == first  # seeded, and not NaN
    assert _same(model, state), "parameters or buffers (BN statistics) changed"
    assert all(m.training for m in model.modules()), "train/eval flags not restored"
    assert all(p.grad is None for p in model.parameters())


def test_registry_documents_every_measure():
    for name, spec in MEASURES.items():
        assert spec.name == name and spec.formula and spec.units and spec.cost and spec.reference
        assert spec.compute.__doc__, name
        assert spec.settings() == spec.defaults
    assert {n for n, s in MEASURES.items() if not s.scale_invariant} == {
        "hessian_top_eigenvalue", "hessian_trace", "weight_norm"}


def test_bad_input_is_one_line(trained, data):
    cases = [lambda: measure("nope", trained, data, ATTACK),
             lambda: measure("awp_sharpness", trained, data, None),
             lambda: measure("worst_case_sharpness", trained, data),
             lambda: measure("hessian_trace", trained, data, ATTACK, sample=3),
             lambda: measure("logit_margin", trained, data, "pgd"),
             lambda: measure("pac_bayes_sharpness", trained, data, max_drop=1.5),
             lambda: measure("input_gradient_norm", trained, data, norm="linf"),
             lambda: measure("hessian_top_eigenvalue", trained, data, iters=0),
             lambda: measure("sharpness", trained, (data[0], data[1][:3]))]
    for case in cases:
        with pytest.raises(UsageError) as exc:
            case()
        assert "\n" not in str(exc.value) and str(exc.value)
    with pytest.raises(UsageError, match="choose from: sharpness, curvature"):
        measure("nope", trained, data)


# ------------------------------------------------------------------------- scale invariance
def _rescaled(model, c):
    """The same function with the second conv multiplied by c: its BatchNorm's statistics (and eps)
    follow, so (c z - c mu) / sqrt(c^2 var + c^2 eps) = (z - mu) / sqrt(var + eps)."""
    other = _fresh(model)
    conv, bn = other.features[4], other.features[5]
    with torch.no_grad():
        conv.weight.mul_(c)
        bn.running_mean.mul_(c)
        bn.running_var.mul_(c * c)
    bn.eps *= c * c
    return other


@pytest.mark.parametrize("name", list(MEASURES))
def test_scale_invariance_is_as_documented(name, trained, data):
    x, _ = data
    other = _rescaled(trained, 3.0)
    with torch.no_grad():
        torch.testing.assert_close(other(x), trained(x), rtol=1e-5, atol=1e-5)  # the same function
    settings = {**FAST[name], **({"depth": 6, "draws": 2} if name == "pac_bayes_sharpness" else {})}
    a = measure(name, trained, data, ATTACK, **settings)
    b = measure(name, other, data, ATTACK, **settings)
    if MEASURES[name].scale_invariant:
        assert b == pytest.approx(a, rel=2e-3, abs=1e-5)
    else:
        assert abs(b - a) > 0.1 * abs(a)


# ------------------------------------------------------------------------------- Hessian
@pytest.fixture(scope="module")
def tiny64(data):
    """A float64 CNN with ~100 weights, so its dense Hessian is cheap; non-trivial BN statistics."""
    torch.manual_seed(3)
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=[2, 2, 3]).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x, y = data
    return model.eval(), x[:24].double(), y[:24]


def _dense_hessian(model, x, y):
    """d^2 mean CE / dw^2 over the weights (awp.weights.is_weight), flattened in registration order."""
    names = [n for n, _ in named_weights(model)]
    params = dict(model.named_parameters())
    fixed = {**{k: v.detach() for k, v in params.items()}, **dict(model.named_buffers())}
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(w):
        override = {n: t.view_as(params[n]) for n, t in zip(names, w.split(sizes))}
        return F.cross_entropy(torch.func.functional_call(model, {**fixed, **override}, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


def test_hessian_vector_product_matches_the_dense_hessian(tiny64):
    model, x, y = tiny64
    h = _dense_hessian(model, x, y)
    v = torch.randn(h.shape[0], dtype=torch.float64)
    for batches in ([(x, y)], [(x[:10], y[:10]), (x[10:], y[10:])]):  # cached graph; per-batch recompute
        op = HessianOperator(model, batches)
        assert op.names == [n for n, _ in named_weights(model)]
        pieces = [t.view_as(p) for t, p in zip(v.split([p.numel() for p in op.params]), op.params)]
        got = torch.cat([t.reshape(-1) for t in op(pieces)])
        torch.testing.assert_close(got, h @ v, rtol=1e-10, atol=1e-12)


class _WithUnused(torch.nn.Module):
    """A wrapper holding a weight the forward pass never uses (like TRADES' WRN ``sub_block1``)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.unused = torch.nn.Linear(3, 3).double()

    def forward(self, x):
        return self.net(x)


def test_unused_weights_are_left_out(tiny64):
    model, x, y = tiny64
    wrapped = _WithUnused(model).eval()
    op = HessianOperator(wrapped, [(x, y)])
    assert op.names == ["net." + n for n, _ in named_weights(model)]
    assert measure("hessian_trace", wrapped, (x, y), draws=3) == measure("hessian_trace", model, (x, y), draws=3)


def test_top_eigenvalue_matches_the_dense_hessian(tiny64):
    model, x, y = tiny64
    eig = torch.linalg.eigvalsh(_dense_hessian(model, x, y))
    top = eig[eig.abs().argmax()].item()
    got = measure("hessian_top_eigenvalue", model, (x, y), None, iters=2000, tol=1e-12)
    assert got == pytest.approx(top, rel=1e-6)
    # Several batches give the same Hessian (weighted by size, not inflated by their number).
    assert measure("hessian_top_eigenvalue", model, (x, y), None, iters=2000, tol=1e-12,
                   batch_size=7) == pytest.approx(top, rel=1e-6)


def test_hessian_trace_at_adversarial_examples_matches_the_dense_hessian(tiny64):
    model, x, y = tiny64
    attack = AttackSpec(eps=0.2, step_size=0.05, steps=3, seed=1)
    x_adv = attack(model, x, y, torch.Generator().manual_seed(attack.seed))  # crafted at w, then fixed
    h = _dense_hessian(model, x_adv, y)
    n = 200
    got = measure("hessian_trace", model, (x, y), attack, draws=n)
    # Rademacher v: Var(v^T H v) = 2 (||H||_F^2 - sum_i H_ii^2); 4 standard errors.
    sd = (2 * ((h ** 2).sum() - (h.diagonal() ** 2).sum()) / n).sqrt().item()
    assert abs(got - h.trace().item()) < 4 * sd
    assert measure("hessian_trace", model, (x, y), attack, draws=n, seed=1) != got


# --------------------------------------------------------------------------- AWP sharpness
def test_awp_sharpness_matches_a_hand_applied_perturbation(trained, data):
    x, y = data
    gamma = 0.02
    model = _fresh(trained)
    x_adv = ATTACK(model, x, y, torch.Generator().manual_seed(ATTACK.seed))
    weights = named_weights(model)
    grads = torch.autograd.grad(F.cross_entropy(model(x_adv), y), [p for _, p in weights])
    other = _fresh(model)
    params = dict(other.named_parameters())
    with torch.no_grad():
        for (name, w), g in zip(weights, grads):
            params[name].add_(gamma * w.norm() * g / g.norm())  # v_l = gamma ||w_l|| g_l / ||g_l||
    expected = (clean_and_robust(other, x, y, ATTACK)["robust_loss"]
                - clean_and_robust(model, x, y, ATTACK)["robust_loss"])
    got = measure("awp_sharpness", model, (x, y), ATTACK, gamma=gamma)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert got > 0


# ------------------------------------------------------------------------------ PAC-Bayes
def test_bisection_matches_a_brute_force_grid():
    depth, top = 8, 2.0
    h = top / 2 ** depth
    grid = [j * h for j in range(2 ** depth)]
    for drop in (lambda s: s * s, lambda s: 0.3 * s, lambda s: float(s > 0.7)):
        expected = max(s for s in grid if drop(s) <= 0.1)
        assert bisect_sigma(drop, 0.1, top, depth) == expected


def test_pac_bayes_sigma_matches_a_brute_force_grid(trained, data):
    x, y = data
    depth, draws, top, max_drop = 6, 2, 2.0, 0.1
    model = _fresh(trained)
    with torch.no_grad():
        base = (model(x).argmax(1) == y).double().mean().item()

    def drop(sigma):  # independent evaluation: a noisy deep copy per draw
        accs = []
        for k in range(draws):
            noisy = _fresh(model)
            params = dict(noisy.named_parameters())
            with torch.no_grad():
                for name, u in magnitude_noise(model, sigma, seed=k).items():
                    params[name].add_(u)
                accs.append((noisy(x).argmax(1) == y).double().mean().item())
        return base - sum(accs) / draws

    h = top / 2 ** depth
    drops = [drop(j * h) for j in range(2 ** depth)]
    assert drops[0] <= max_drop < max(drops), "the grid must bracket the accuracy drop"
    first_over = next(j for j, d in enumerate(drops) if d > max_drop)
    got = pac_bayes_sigma(model, (x, y), None, max_drop=max_drop, draws=draws, depth=depth, sigma_max=top)
    assert got == (first_over - 1) * h
    assert measure("pac_bayes_sharpness", model, (x, y), None, max_drop=max_drop, draws=draws, depth=depth,
                   sigma_max=top) == pytest.approx(1 / got ** 2)


def test_magnitude_noise_scales_with_each_weight(trained):
    sigma, eps = 0.3, 1e-3
    noise = magnitude_noise(trained, sigma, seed=5, eps=eps)
    weights = dict(named_weights(trained))
    assert list(noise) == list(weights)  # weights only: no bias, no BN parameter
    z = torch.cat([(noise[n] / (sigma ** 2 * w.detach() ** 2 + eps ** 2).sqrt()).reshape(-1)
                   for n, w in weights.items()])
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1  # standardized noise ~ N(0, 1)
    again = magnitude_noise(trained, 2 * sigma, seed=5, eps=0.0)
    for n, w in weights.items():  # same seed: the same z at every sigma
        torch.testing.assert_close(again[n], noise[n] / (sigma ** 2 * w ** 2 + eps ** 2).sqrt() * 2 * sigma * w.abs())


# ---------------------------------------------------------------------- baselines, curves
@pytest.mark.parametrize("attack", [None, ATTACK])
def test_baselines_match_direct_computation(trained, data, attack):
    x, y = data
    model = _fresh(trained)
    x_in = x if attack is None else attack(model, x, y, torch.Generator().manual_seed(attack.seed))
    x_in = x_in.clone().requires_grad_(True)
    logits = model(x_in)
    per_example = [torch.autograd.grad(F.cross_entropy(logits[i:i + 1], y[i:i + 1]), x_in, retain_graph=True)[0][i]
                   for i in range(len(y))]
    for norm, p in (("l2", 2), ("l1", 1)):
        expected = sum(g.abs().pow(p).sum().pow(1 / p).item() for g in per_example) / len(y)
        assert measure("input_gradient_norm", model, (x, y), attack, norm=norm) == pytest.approx(expected, rel=1e-5)
    z = logits.detach()
    margins = [z[i, y[i]] - max(z[i, k] for k in range(10) if k != y[i]) for i in range(len(y))]
    assert measure("logit_margin", model, (x, y), attack) == pytest.approx(sum(margins).item() / len(y), rel=1e-5)
    assert measure("weight_norm", model, None) == pytest.approx(
        sum((p.detach().double() ** 2).sum().item() for n, p in model.named_parameters()
            if p.dim() > 1 and n.endswith("weight")))


def test_clean_sharpness_matches_hand_computed_points(trained, data):
    x, y = data
    model, r = _fresh(trained), 0.3

    def ce(direction, coef):
        other = _fresh(model)
        with torch.no_grad():
            for name, p in other.named_parameters():
                p.add_(coef * direction[name])
            return F.cross_entropy(other(x), y).item()

    rises = []
    for k in range(2):
        d = random_direction(model, seed=4 + k)
        rises.append((ce(d, r) + ce(d, -r)) / 2 - ce(d, 0.0))
    got = measure("sharpness", model, (x, y), None, radius=r, directions=2, seed=4)
    assert got == pytest.approx(sum(rises) / 2, rel=1e-4, abs=1e-6)


def test_settings_are_typed_like_key_value_overrides_and_old_names_still_work():
    from landscape.measures import get_measure

    spec = get_measure("average_sharpness")
    assert spec.settings(draws="3", xi="8/255") == {**spec.defaults, "draws": 3, "xi": pytest.approx(8 / 255)}
    assert spec.settings(samples=4)["draws"] == 4  # the name before 'draws' (random perturbations, not images)
    assert get_measure("hessian_trace").settings(samples="2")["draws"] == 2
    for bad, text in ((dict(xi="abc"), "average_sharpness.xi='abc' is not a valid float"),
                      (dict(xi="inf"), "average_sharpness.xi=inf is not a finite number"),
                      (dict(draw=3), "unknown setting of measure 'average_sharpness' 'draw'; did you mean draws?")):
        with pytest.raises(UsageError) as err:
            spec.settings(**bad)
        assert str(err.value).startswith(text), err.value
    with pytest.raises(UsageError, match="did you mean weight_norm"):
        get_measure("weight_nrm")
