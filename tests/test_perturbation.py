"""AWP (Wu et al. 2020, Algorithm 1, official one-step form) against an independent hand-written reference of the official proxy step (tests/reference.py)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from awp.errors import UsageError
from awp.methods import get_method
from awp.perturbation import AdversarialWeightPerturbation
from awp.weights import is_weight

from helpers import digits_batch as _batch, digits_model as _model, sgd as _opt
from reference import official_awp_training, official_proxy_loss as _official_loss


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_relative_norm_per_layer_and_nothing_else_perturbed():
    model = _model()
    x, x_adv, y = _batch()
    method = get_method("at")
    v = AdversarialWeightPerturbation(model, gamma=0.02).compute(lambda m: method.loss(m, x, x_adv, y))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.dim() >= 2 and "weight" in n}
    assert set(v.tensors) == expected and expected
    for name, tensor in v.tensors.items():
        assert torch.allclose(tensor.norm(), 0.02 * params[name].detach().norm(), rtol=1e-5)
    before = _snapshot(model)
    with v.applied():
        for name, value in model.state_dict().items():
            changed = not torch.equal(value, before[name])
            assert changed == (name in expected), name


def test_direction_is_the_normalized_gradient_of_the_loss_in_train_mode():
    model = _model()
    x, x_adv, y = _batch()
    gamma = 0.01
    v = AdversarialWeightPerturbation(model, gamma=gamma).compute(
        lambda m: F.cross_entropy(m(x_adv), y))
    ref = copy.deepcopy(model).train()
    F.cross_entropy(ref(x_adv), y).backward()
    for name, p in ref.named_parameters():
        if name in v.tensors:
            w = dict(model.named_parameters())[name].detach()
            expected = gamma * w.norm() * p.grad / p.grad.norm()
            assert torch.allclose(v.tensors[name], expected, atol=1e-7, rtol=1e-5)


def test_compute_leaves_model_buffers_grads_and_mode_untouched():
    model = _model()
    model.eval()
    x, x_adv, y = _batch()
    before = _snapshot(model)
    method = get_method("trades")
    AdversarialWeightPerturbation(model, gamma=0.01).compute(lambda m: method.loss(m, x, x_adv, y))
    after = model.state_dict()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name  # bit-identical, BN buffers included
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and not any(m.training for m in model.modules())


def test_applied_restores_bit_for_bit_also_on_error():
    model = _model()
    x, x_adv, y = _batch()
    method = get_method("at")
    v = AdversarialWeightPerturbation(model, gamma=0.05).compute(lambda m: method.loss(m, x, x_adv, y))
    model.eval()  # a train-mode forward inside the block would (rightly) move the BN statistics
    before = _snapshot(model)
    with v.applied():
        pass
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    with pytest.raises(RuntimeError, match="boom"):
        with v.applied():
            model(x)
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())


def _ours(model, method, x, x_adv, y, gamma, steps=2):
    opt = _opt(model)
    awp = AdversarialWeightPerturbation(model, gamma=gamma)
    for _ in range(steps):
        model.train()
        with awp.compute(lambda m: method.loss(m, x, x_adv, y)).applied():
            loss = method.loss(model, x, x_adv, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def _reference_training(loss, gamma, x, x_adv, y, steps=2):
    """Two AWP steps through the official proxy path, with the official outer loss ``loss(model)``."""
    ref = _model()
    return official_awp_training(ref, _opt(ref), loss, gamma, steps)


@pytest.mark.parametrize("name, gamma", [("at", 0.01), ("trades", 0.005)])
def test_awp_step_matches_official_proxy_reference(name, gamma):
    x, x_adv, y = _batch()
    ours = _ours(_model(), get_method(name), x, x_adv, y, gamma)
    ref = _reference_training(_official_loss(name, x, x_adv, y), gamma, x, x_adv, y)
    for (key, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.allclose(a, b, atol=2e-6, rtol=1e-5), key


def test_multi_step_ascent_stays_in_the_ball_and_increases_the_loss():
    model = _model()
    x, x_adv, y = _batch()
    loss = lambda m: F.cross_entropy(m(x_adv), y)  # noqa: E731
    one = AdversarialWeightPerturbation(model, gamma=0.05).compute(loss)
    five = AdversarialWeightPerturbation(model, gamma=0.05, steps=5, step_size=0.02).compute(loss)
    params = dict(model.named_parameters())
    for name, t in five.tensors.items():
        assert t.norm() <= 0.05 * params[name].detach().norm() * (1 + 1e-5)
    model.train()
    values = []
    for v in (None, one, five):
        if v is None:
            with torch.no_grad():
                values.append(float(loss(model)))
        else:
            with v.applied(), torch.no_grad():
                values.append(float(loss(model)))
    assert values[1] > values[0] and values[2] >= values[1] - 1e-4


def test_bad_gamma_is_refused():
    model = _model()
    for gamma in (0.0, -0.1, 1.5):
        with pytest.raises(UsageError):
            AdversarialWeightPerturbation(model, gamma=gamma)


def test_predicate_selects_conv_and_linear_weights_only():
    conv, bn, lin = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 3)
    assert is_weight("conv.weight", conv.weight) and is_weight("fc.weight", lin.weight)
    assert not is_weight("conv.bias", conv.bias) and not is_weight("bn.weight", bn.weight)


def test_random_perturbation_has_the_same_relative_size_and_is_seeded():
    from awp.perturbation import RandomWeightPerturbation

    model = _model()
    params = dict(model.named_parameters())
    a = RandomWeightPerturbation(model, 0.02, generator=torch.Generator().manual_seed(1)).compute()
    b = RandomWeightPerturbation(model, 0.02, generator=torch.Generator().manual_seed(1)).compute()
    for name, t in a.tensors.items():
        assert torch.allclose(t.norm(), 0.02 * params[name].detach().norm(), rtol=1e-5)
        assert torch.equal(t, b.tensors[name])


def test_relative_size_is_exact_on_a_wide_layer():
    """||v_l|| = gamma ||w_l|| to float64 precision on a 3.7M-entry kernel (the norms are accumulated
    in float64; a float32 sum over so many entries is off by ~5e-5 relative on a CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1920, 1920, bias=False))
    with torch.no_grad():
        model[1].weight.mul_(10).add_(0.01)  # a mean offset makes float32 accumulation drift more
    x = torch.rand(4, 1920)
    y = torch.randint(0, 1920, (4,))
    v = AdversarialWeightPerturbation(model, gamma=0.01).compute(lambda m: F.cross_entropy(m(x), y))
    w = model[1].weight.detach().double()
    ratio = v.tensors["1.weight"].double().norm() / w.norm()
    assert abs(float(ratio) / 0.01 - 1) < 1e-6


def test_weight_offset_moves_from_the_centre_and_restores_bit_for_bit():
    from awp.weights import WeightOffset

    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    d = {"weight": torch.full_like(w0, 0.1)}
    offset = WeightOffset(model)
    offset.move([(1.0, d)])
    offset.move([(2.0, d)])  # exact moves replace each other: w0 + 2d, not w0 + 3d
    assert torch.equal(model.weight.detach(), w0 + 2.0 * d["weight"])
    offset.restore()
    assert torch.equal(model.weight.detach(), w0)
    with torch.no_grad():  # a step taken at w + d (as AWP's): restore subtracts d, keeping the step
        offset.move([(1.0, d)])
        model.weight.add_(1.0)
        offset.restore()
    assert torch.allclose(model.weight.detach(), w0 + 1.0)
    loose = WeightOffset(model, exact=False)
    start = model.weight.detach().clone()
    loose.move([(1.0, d)])
    loose.move([(1.0, d)])  # moves add up without a saved copy
    assert torch.allclose(model.weight.detach(), start + 2 * d["weight"])
    loose.restore()
    assert torch.allclose(model.weight.detach(), start)
