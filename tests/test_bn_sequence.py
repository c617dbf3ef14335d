"""BatchNorm running statistics: each official script's train-mode forwards, reproduced.

Two independent checks:
- a forward hook counts the model's train-mode forwards in one ``train_step`` and records their
  inputs (x, x_adv or an attack iterate), for every sequence of :data:`awp.methods.BN_SEQUENCES`;
- three steps of ``train_step`` against a hand-written copy of each official step (tests/reference.py)
  on the same tiny model, x and fixed x_adv (so the attack's random start plays no part): the weights
  and the BN running statistics (mean, var and the count of train-mode forwards) must agree.
"""
import copy

import pytest
import torch

from awp.config import load_preset
from awp.methods import get_method
from awp.perturbation import AdversarialWeightPerturbation
from awp.recipe import recipe_card
from awp.train import build_method, train_step

from helpers import digits_batch, digits_model, sgd
from reference import (fixed_iterates, official_at_awp, official_mart, official_rst, official_trades,
                       official_trades_awp)

GAMMA_AT, GAMMA_TRADES = 0.01, 0.005


def _record(model):
    """Inputs of the model's train-mode forwards, in order."""
    seen = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone())
                                         if m.training else None)
    return seen, handle


# (method, sequence) -> the official order of the forwards after the attack: 'x', 'adv', or 'final'
ORDERS = {
    ("at", "official-at"): ["final", "adv", "x"],       # AWP train_cifar10.py:122, :347, :365
    ("at", "minimal"): ["adv"],
    ("trades", "official-trades"): ["x", "adv", "x"],   # TRADES trades.py:79, :81, :82
    ("trades", "official-trades-awp"): ["adv", "x", "x"],  # AWP train_trades_cifar.py:187, :189, :192
    ("trades", "minimal"): ["x", "adv"],
    ("mart", "official-mart"): ["x", "adv"],             # MART mart.py:38, :40
    ("rst", "official-rst"): ["adv", "x"],               # semisup-adv losses.py:80, :81
    ("rst", "minimal"): ["x", "adv"],
}


@pytest.mark.parametrize("method_name, sequence", sorted(ORDERS))
def test_train_mode_forwards_counted_with_a_hook(method_name, sequence):
    model = digits_model()
    x, _, y = digits_batch()
    method = get_method(method_name, eps=0.1, step_size=0.03, steps=10, bn_sequence=sequence)
    seen, handle = _record(model)
    try:
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.01), method, x, y)
    finally:
        handle.remove()
    attack_steps = 10 if method_name == "at" else 0  # AT crafts in train mode; the others in eval mode
    assert len(seen) == attack_steps + len(ORDERS[method_name, sequence]) == len(method.train_mode_forwards())
    after = seen[attack_steps:]
    x_adv = after[ORDERS[method_name, sequence].index("adv")]
    assert not torch.equal(x_adv, x) and (x_adv - x).abs().max() <= 0.1 + 1e-6
    for kind, inp in zip(ORDERS[method_name, sequence], after):
        assert torch.equal(inp, x if kind == "x" else x_adv), kind
    if method_name == "at":  # the attack's own forwards are its iterates, none of them x_adv yet
        assert not any(torch.equal(inp, x_adv) for inp in seen[1:attack_steps])


@pytest.mark.parametrize("preset, forwards", [
    ("cifar10-at-awp", 13),       # the count of AWP train_cifar10.py: 10 + :122 + :347 + :365
    ("cifar100-at", 13), ("svhn-at-awp", 13),
    ("cifar10-trades", 3), ("cifar10-trades-awp", 3), ("cifar10-mart", 2), ("cifar10-rst", 2)])
def test_paper_presets_use_their_scripts_sequence(preset, forwards):
    extra = {"unlabeled": "u.npz"} if "rst" in preset else {}
    method = build_method(load_preset(preset, extra))
    assert len(method.train_mode_forwards()) == forwards
    assert recipe_card(preset, extra)["train_mode_forwards_per_step"] == forwards


CASES = {  # name: (method, official sequence, AWP gamma, official step)
    "at-awp": ("at", "official-at", GAMMA_AT, lambda m, o, x, xa, y: official_at_awp(m, o, x, xa, y, GAMMA_AT)),
    "trades": ("trades", "official-trades", 0.0, official_trades),
    "trades-awp": ("trades", "official-trades-awp", GAMMA_TRADES,
                   lambda m, o, x, xa, y: official_trades_awp(m, o, x, xa, y, GAMMA_TRADES)),
    "mart": ("mart", "official-mart", 0.0, official_mart),
    "rst": ("rst", "official-rst", 0.0, official_rst),
}


def _ours(method_name, sequence, gamma, x, x_adv, y, steps=3):
    model = digits_model()
    opt = sgd(model)
    method = get_method(method_name, bn_sequence=sequence)
    iterates = fixed_iterates(x, x_adv)

    def fixed_attack(m, xb, yb):  # AT: PGD-10's ten train-mode forwards on the same fixed points
        if method_name == "at":
            with torch.no_grad():
                for point in iterates:
                    m(point)
        return x_adv

    method.attack = fixed_attack
    awp = AdversarialWeightPerturbation(model, gamma=gamma) if gamma > 0 else None
    for _ in range(steps):
        train_step(model, opt, method, x, y, awp)
    return model


def _official(step, x, x_adv, y, steps=3):
    model = digits_model()
    opt = sgd(model)
    for _ in range(steps):
        step(model, opt, x, x_adv, y)
    return model


def _buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bn_statistics_and_weights_equal_the_official_step(case):
    method_name, sequence, gamma, step = CASES[case]
    x, x_adv, y = digits_batch()
    ours = _ours(method_name, sequence, gamma, x, x_adv, y)
    ref = _official(step, x, x_adv, y)
    for (key, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.allclose(a, b, atol=2e-6, rtol=1e-5), key
    ref_buffers = _buffers(ref)
    for key, value in _buffers(ours).items():
        if "num_batches" in key:  # counts every train-mode forward
            assert int(value) == int(ref_buffers[key]), key
        else:
            assert torch.allclose(value, ref_buffers[key], atol=1e-6, rtol=1e-5), key
    minimal = _buffers(_ours(method_name, "minimal", gamma, x, x_adv, y))
    gap = max(float((minimal[k].double() - ref_buffers[k].double()).abs().max()) for k in minimal)
    if case == "mart":
        assert gap < 1e-6  # MART's script runs exactly the minimal sequence
    else:
        assert gap > 1e-4, gap  # the test can tell the sequences apart (RST: 1e-3, AT-AWP: 4e-2)


def test_official_sequences_leave_the_loss_unchanged():
    """Repeated clean forwards in train mode give the same logits: one loss for every sequence."""
    model = digits_model()
    x, x_adv, y = digits_batch()
    for name, sequences in {"trades": ("official-trades", "official-trades-awp"), "rst": ("official-rst",)}.items():
        values = []
        for sequence in ("minimal",) + sequences:
            m = copy.deepcopy(model).train()
            values.append(float(get_method(name, bn_sequence=sequence).forward(m, x, x_adv, y)["loss"].detach()))
        assert values == pytest.approx([values[0]] * len(values), rel=1e-6)
