"""Tests for awp.models: the registry contract, checkpoint round trips, normalization inside the
model, parameter counts from the literature, and forward passes against a functional
transcription of the official PreActResNet-18 (Rice et al. 2020) and WideResNet (TRADES) code.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from awp.errors import UsageError
from awp.models import Normalize, build_model, list_models

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2471, 0.2435, 0.2616]

# Cheap stand-ins where a test is about structure, not size (depth 6n+4 keeps the WRN rule).
SMALL_WRN = {"depth": 10, "widen_factor": 2}


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, in place, so that a
    round trip or a reference comparison that dropped or mixed them up would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def _images(n: int, c: int = 3, hw: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, hw, hw, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- registry


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert {"smallcnn", "preactresnet18", "wrn-34-10", "wrn-28-10"} <= set(names)


@pytest.mark.parametrize("name", list_models())
def test_output_shape_32x32x3(name):
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(_images(2))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_smallcnn_runs_on_8x8_digits():
    model = build_model("smallcnn", in_channels=1, mean=[0.5], std=[0.25])
    out = model(_images(4, c=1, hw=8))
    assert out.shape == (4, 10)
    out.sum().backward()  # trains in train mode too (BN over a 2x2 map at the last stage)


@pytest.mark.parametrize("name", list_models())
def test_arch_kwargs_round_trip(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, mean=MEAN, std=STD)
    _randomize_bn(model)
    assert model.arch == name
    assert model.arch_kwargs["num_classes"] == 5
    # A checkpoint stores arch_kwargs as JSON-like data; rebuild from the decoded copy.
    kwargs = json.loads(json.dumps(model.arch_kwargs))
    assert kwargs == model.arch_kwargs
    state = model.state_dict()
    assert not [k for k in state if "normalize" in k or k.endswith((".mean", ".std"))]

    torch.manual_seed(1)  # a different init, so equal outputs must come from the loaded state
    rebuilt = build_model(model.arch, **kwargs)
    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.arch_kwargs == model.arch_kwargs
    x = _images(2)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize("name", list_models())
def test_state_dict_holds_only_network_weights(name):
    model = build_model(name, mean=MEAN, std=STD)
    bn_buffers = {
        f"{mod_name}.{buf}"
        for mod_name, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)
        for buf in ("running_mean", "running_var", "num_batches_tracked")
    }
    params = {k for k, _ in model.named_parameters()}
    assert set(model.state_dict()) == params | bn_buffers


def test_arch_kwargs_are_plain_json_types():
    model = build_model("smallcnn", num_classes=np.int64(4), in_channels=np.int32(1),
                        mean=(np.float32(0.5),), std=(1,), channels=(np.int64(8), 8, 8))
    assert model.arch_kwargs == {"num_classes": 4, "in_channels": 1, "mean": [0.5],
                                 "std": [1.0], "channels": [8, 8, 8]}
    assert all(type(v) in (int, float, list, type(None)) for v in model.arch_kwargs.values())
    json.dumps(model.arch_kwargs)


# ---------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("name", list_models())
def test_normalization_is_inside_the_model(name):
    extra = SMALL_WRN if name.startswith("wrn") else {}
    normalized = build_model(name, mean=MEAN, std=STD, **extra).eval()
    plain = build_model(name, **extra).eval()
    _randomize_bn(normalized)
    plain.load_state_dict(normalized.state_dict(), strict=True)
    x = _images(2)
    by_hand = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), plain(by_hand), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(normalized(x), plain(x), atol=1e-3)
    assert isinstance(next(iter(normalized.children())), Normalize)  # the first layer


def test_normalize_identity_and_dtype():
    x = _images(2)
    assert torch.equal(Normalize()(x), x)
    model = build_model("smallcnn", mean=MEAN, std=STD).double().eval()
    assert model(x.double()).dtype == torch.float64  # the buffers follow .double()/.to()


# ---------------------------------------------------------------------------- parameter counts


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _basic_block_params(cin: int, cout: int, shortcut: bool) -> int:
    # bn1 + conv3x3 + bn2 + conv3x3 (+ 1x1 shortcut conv), no conv biases
    return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if shortcut else 0)


def test_preactresnet18_param_count():
    # 11,171,146 is the count usually quoted for PreActResNet-18: kuangliu/pytorch-cifar's
    # version, which ends without BatchNorm. Rice et al. (and the AWP code) add the final
    # `bn` before pooling, 512 weights + 512 biases, and their checkpoints carry it.
    literature_without_final_bn = 11_171_146
    by_formula = 9 * 3 * 64 + 2 * 512 + 512 * 10 + 10
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        by_formula += _basic_block_params(cin, cout, stride != 1 or cin != cout)
        by_formula += _basic_block_params(cout, cout, False)
        cin = cout
    model = build_model("preactresnet18")
    assert _n_params(model) == by_formula == literature_without_final_bn + 2 * 512


@pytest.mark.parametrize("name, expected", [("wrn-34-10", 46_160_474), ("wrn-28-10", 36_479_194)])
def test_wideresnet_param_count(name, expected):
    assert _n_params(build_model(name)) == expected


def test_wideresnet_name_presets_depth_and_width():
    assert build_model("wrn-34-10").arch_kwargs["depth"] == 34
    kw = build_model("wrn-28-10").arch_kwargs
    assert (kw["depth"], kw["widen_factor"], kw["dropout"]) == (28, 10, 0.0)


def test_smallcnn_is_small_and_has_batchnorm():
    model = build_model("smallcnn")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert 10_000 <= _n_params(model) < 100_000


# ---------------------------------------------------------------------------- official code


class _Recorder(dict):
    """A state dict that remembers which keys the reference read, to catch unused weights."""

    def __init__(self, state):
        super().__init__(state)
        self.used: set[str] = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)


def _bn(sd, prefix, x):
    return F.batch_norm(x, sd[prefix + ".running_mean"], sd[prefix + ".running_var"],
                        sd[prefix + ".weight"], sd[prefix + ".bias"], training=False)


def _reference_preactresnet18(sd, x):
    """The forward of locuslab/robust_overfitting preactresnet.py, in eval mode."""
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for layer, stride in zip(range(1, 5), (1, 2, 2, 2)):
        for b in range(2):
            p = f"layer{layer}.{b}."
            s = stride if b == 0 else 1
            o = F.relu(_bn(sd, p + "bn1", out))
            short = (F.conv2d(o, sd[p + "shortcut.0.weight"], stride=s)
                     if p + "shortcut.0.weight" in sd else out)
            o = F.conv2d(o, sd[p + "conv1.weight"], stride=s, padding=1)
            o = F.conv2d(F.relu(_bn(sd, p + "bn2", o)), sd[p + "conv2.weight"], padding=1)
            out = o + short
    out = F.avg_pool2d(F.relu(_bn(sd, "bn", out)), 4).flatten(1)
    return F.linear(out, sd["linear.weight"], sd["linear.bias"])


def _reference_wideresnet(sd, x, depth):
    """The forward of TRADES' models/wideresnet.py (dropout 0), in eval mode."""
    n = (depth - 4) // 6
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for block, stride in zip((1, 2, 3), (1, 2, 2)):
        for i in range(n):
            p = f"block{block}.layer.{i}."
            s = stride if i == 0 else 1
            equal_in_out = p + "convShortcut.weight" not in sd
            if equal_in_out:
                o = F.relu(_bn(sd, p + "bn1", out))
            else:
                out = o = F.relu(_bn(sd, p + "bn1", out))  # the reference overwrites x here
            o = F.relu(_bn(sd, p + "bn2", F.conv2d(o, sd[p + "conv1.weight"], stride=s,
                                                   padding=1)))
            o = F.conv2d(o, sd[p + "conv2.weight"], padding=1)
            short = out if equal_in_out else F.conv2d(out, sd[p + "convShortcut.weight"],
                                                      stride=s)
            out = short + o
    out = F.avg_pool2d(F.relu(_bn(sd, "bn1", out)), 8).flatten(1)
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


def _used_all_weights(sd: _Recorder) -> None:
    unused = {k for k in sd if not k.endswith("num_batches_tracked")} - sd.used
    assert not unused


def test_preactresnet18_matches_official_forward():
    model = build_model("preactresnet18").eval()
    _randomize_bn(model)
    sd = _Recorder(model.state_dict())
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_preactresnet18(sd, x),
                                   rtol=1e-4, atol=1e-4)
    _used_all_weights(sd)


@pytest.mark.parametrize("name", ["wrn-34-10", "wrn-28-10"])
def test_wideresnet_matches_official_forward(name):
    model = build_model(name, depth=16, widen_factor=2).eval()
    _randomize_bn(model)
    sd = _Recorder(model.state_dict())
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_wideresnet(sd, x, depth=16),
                                   rtol=1e-4, atol=1e-4)
    _used_all_weights(sd)


def test_wideresnet_official_init():
    torch.manual_seed(0)
    model = build_model("wrn-28-10", depth=10, widen_factor=4)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 10_000:
            k_h, k_w = m.kernel_size
            expected_std = (2.0 / (k_h * k_w * m.out_channels)) ** 0.5
            assert abs(m.weight.std().item() / expected_std - 1) < 0.05, name
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    assert torch.all(model.fc.bias == 0)


def test_wideresnet_dropout_is_active_only_in_training():
    model = build_model("wrn-34-10", dropout=0.5, **SMALL_WRN)
    x = _images(2)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        assert torch.equal(model.eval()(x), model(x))


@pytest.mark.parametrize("name", ["smallcnn", "wrn-34-10"])
def test_input_gradient_for_attacks(name):
    extra = SMALL_WRN if name.startswith("wrn") else {}
    model = build_model(name, mean=MEAN, std=STD, **extra)
    x = _images(2).requires_grad_(True)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- errors


def test_unknown_model_name():
    with pytest.raises(UsageError, match="unknown model 'resnet9'; choose from: ") as err:
        build_model("resnet9")
    for name in list_models():
        assert name in str(err.value)


@pytest.mark.parametrize("name, kwargs, fragment", [
    ("smallcnn", {"width": 3}, "unknown argument 'width'"),
    ("preactresnet18", {"depth": 18}, "unknown argument 'depth'"),
    ("smallcnn", {"num_classes": "10"}, "num_classes must be an int"),
    ("smallcnn", {"num_classes": True}, "num_classes must be an int"),
    ("smallcnn", {"num_classes": 0}, "num_classes must be >= 1"),
    ("smallcnn", {"in_channels": 2.0}, "in_channels must be an int"),
    ("smallcnn", {"mean": 0.5}, "mean must be a list"),
    ("smallcnn", {"mean": ["a", 0, 0]}, "mean must be a number"),
    ("smallcnn", {"mean": [0.5, 0.5]}, "mean has 2 values for in_channels=3"),
    ("smallcnn", {"std": [1.0, 0.0, 1.0]}, "std must be > 0"),
    ("smallcnn", {"std": [1.0, float("nan"), 1.0]}, "std must be a finite number, got nan"),
    ("smallcnn", {"channels": [16, 32]}, "channels must list 3 stage widths"),
    ("wrn-34-10", {"depth": 30}, "depth must be 6n+4"),
    ("wrn-34-10", {"widen_factor": 2.5}, "widen_factor must be an int"),
    ("wrn-28-10", {"dropout": 1.5}, "dropout must be a finite number >= 0 and < 1, got 1.5"),
])
def test_bad_kwargs_raise_one_line_usage_error(name, kwargs, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)) as err:
        build_model(name, **kwargs)
    assert "\n" not in str(err.value)
