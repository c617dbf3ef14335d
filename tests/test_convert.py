"""Importing other people's checkpoints, RobustBench loading, export (awp.foreign, awp.robustbench).

Each format's checkpoint is written here in that repository's layout, from a copy of that
repository's architecture as published (below, independent of awp.models), with random weights
and BatchNorm statistics; the imported model must compute the original's outputs on the same
inputs, normalization included. WRNs are built at small depth/width (the reference classes take
depth and widen_factor, as published) so the default run stays fast.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from awp.checkpoint import load_checkpoint, load_run, save_checkpoint
from awp.foreign import export_checkpoint, import_checkpoint, load_foreign_state
from awp.robustbench import _robustbench, load_robustbench
from awp.errors import UserError
from awp.io import sha256_file
from awp.models import build_model

# --------------------------------------------------------------------------------------------
# Reference architectures, as published.

# locuslab/robust_overfitting preactresnet.py = csdongxian/AWP at-awp PreActResNet18.


class RefPreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, 'shortcut') else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class RefPreActResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512 * block.expansion)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


# yaodongyu/TRADES models/wideresnet.py (with the unused sub_block1); YisenWang/MART and the RST
# WideResNet are the same code without it (sub_block1=False).


class RefBasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = (in_planes == out_planes)
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                                padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RefNetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride, dropRate=0.0):
        super().__init__()
        self.layer = self._make_layer(block, in_planes, out_planes, nb_layers, stride, dropRate)

    def _make_layer(self, block, in_planes, out_planes, nb_layers, stride, dropRate):
        layers = []
        for i in range(int(nb_layers)):
            layers.append(block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1, dropRate))
        return nn.Sequential(*layers)

    def forward(self, x):
        return self.layer(x)


class RefWideResNet(nn.Module):
    def __init__(self, depth=34, num_classes=10, widen_factor=10, dropRate=0.0, sub_block1=True):
        super().__init__()
        nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert ((depth - 4) % 6 == 0)
        n = (depth - 4) / 6
        block = RefBasicBlock
        self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = RefNetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
        if sub_block1:
            self.sub_block1 = RefNetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
        self.block2 = RefNetworkBlock(n, nChannels[1], nChannels[2], block, 2, dropRate)
        self.block3 = RefNetworkBlock(n, nChannels[2], nChannels[3], block, 2, dropRate)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(nChannels[3], num_classes)
        self.nChannels = nChannels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


# --------------------------------------------------------------------------------------------
# Helpers


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN affine parameters and running statistics, so BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
    return model.eval()


def _inputs(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x.clone())  # clone: the references' in-place ReLUs


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


SMALL_WRN = {"depth": 10, "widen_factor": 2}


# --------------------------------------------------------------------------------------------
# Import, one test per format


def test_official_awp_preactresnet_normalizes_as_their_loop(tmp_path):
    torch.manual_seed(0)
    ref = _randomize(RefPreActResNet(RefPreActBlock, [2, 2, 2, 2]), 0)
    src = tmp_path / "awp.pt"
    torch.save(nn.DataParallel(ref).state_dict(), src)  # train_cifar10.py: DataParallel, bare state dict
    assert all(k.startswith("module.") for k in torch.load(src, weights_only=True))
    out = import_checkpoint(src, format="official-awp", arch="preactresnet18", dataset="cifar10",
                            out=tmp_path / "ours.pt")
    model, meta = load_checkpoint(out)
    # csdongxian/AWP AT_AWP/utils.py:17-18, digit for digit
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    mu, sd = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    x = _inputs()
    assert _close(_outputs(model, x), _outputs(ref, (x - mu) / sd))  # their normalize(X) before model
    assert meta["arch_kwargs"]["mean"] == list(mean)
    prov = meta["provenance"]
    assert prov["format"] == "official-awp" and prov["sha256"] == sha256_file(src)
    assert prov["source"] == str(src.resolve())
    assert meta["config"]["eps"] == pytest.approx(8 / 255) and meta["config"]["norm"] == "linf"
    # load_run: the same model, the imported threat model as its metric attack, CIFAR-10 as its data
    run = load_run(out)
    assert _close(_outputs(run.model, x), _outputs(model, x)) and run.sha256 == sha256_file(out)
    assert run.config.dataset == "cifar10" and run.attack.eps == pytest.approx(8 / 255)
    assert run.attack.step_size == pytest.approx(2 / 255)


def test_trades_wrn_drops_unused_sub_block1(tmp_path):
    torch.manual_seed(1)
    ref = _randomize(RefWideResNet(num_classes=10, sub_block1=True, **SMALL_WRN), 1)
    src = tmp_path / "model-wideres-epoch76.pt"
    torch.save(nn.DataParallel(ref).state_dict(), src)
    out = import_checkpoint(src, format="trades", arch="wrn-34-10", dataset="cifar10", out=tmp_path / "ours.pt",
                            arch_kwargs=SMALL_WRN)
    model, meta = load_checkpoint(out)
    x = _inputs()
    assert _close(_outputs(model, x), _outputs(ref, x))  # raw [0, 1] inputs
    assert meta["arch_kwargs"]["mean"] is None
    assert meta["provenance"]["dropped_keys"] and all(k.startswith("sub_block1.") for k in meta["provenance"]["dropped_keys"])


def test_mart_wrn_bare_state_dict(tmp_path):
    torch.manual_seed(2)
    ref = _randomize(RefWideResNet(num_classes=100, sub_block1=False, **SMALL_WRN), 2)
    src = tmp_path / "mart.pt"
    torch.save(ref.state_dict(), src)  # no module. prefix: also accepted
    out = import_checkpoint(src, format="mart", arch="wrn-34-10", dataset="cifar100", out=tmp_path / "ours.pt",
                            arch_kwargs=SMALL_WRN)
    model, _ = load_checkpoint(out)
    x = _inputs()
    assert _close(_outputs(model, x), _outputs(ref, x))


@pytest.mark.parametrize("sub_block1", [False, True])
def test_rst_wrn28_state_dict_in_dict(tmp_path, sub_block1):
    # RST saves {'state_dict', 'epoch', 'optimizer'}; RobustBench registers Carmon2019Unlabeled
    # with sub_block1=True, so both layouts are accepted.
    torch.manual_seed(3)
    ref = _randomize(RefWideResNet(depth=10, widen_factor=2, sub_block1=sub_block1), 3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    src = tmp_path / "rst.pt"
    torch.save({"state_dict": nn.DataParallel(ref).state_dict(), "epoch": 200, "optimizer": opt.state_dict()}, src)
    out = import_checkpoint(src, format="rst", arch="wrn-28-10", dataset="cifar10", out=tmp_path / "ours.pt",
                            arch_kwargs=SMALL_WRN)
    model, meta = load_checkpoint(out)
    x = _inputs()
    assert _close(_outputs(model, x), _outputs(ref, x))
    assert meta["arch"] == "wrn-28-10" and meta["provenance"]["format"] == "rst"


def test_mismatch_names_the_keys(tmp_path):
    ref = RefWideResNet(sub_block1=False, **SMALL_WRN)
    state = ref.state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["fc.bias"]
    src = tmp_path / "bad.pt"
    torch.save(state, src)
    with pytest.raises(UserError) as err:
        import_checkpoint(src, format="mart", arch="wrn-34-10", dataset="cifar10", out=tmp_path / "o.pt",
                          arch_kwargs=SMALL_WRN)
    message = str(err.value)
    assert "fc.bias" in message and "extra.weight" in message and "\n" not in message
    assert not (tmp_path / "o.pt").exists()


class _Opaque:  # what an old pickle with arbitrary objects looks like to weights_only
    pass


def test_unsafe_pickle_is_refused_in_one_line(tmp_path):
    src = tmp_path / "old.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": _Opaque()}, src)
    with pytest.raises(UserError) as err:
        load_foreign_state(src, "rst")
    assert "refusing" in str(err.value) and "weights_only=False" in str(err.value) and "\n" not in str(err.value)


def test_our_own_checkpoint_is_not_imported(tmp_path):
    model = build_model("smallcnn", in_channels=1)
    save_checkpoint(tmp_path / "c.pt", model, arch="smallcnn", arch_kwargs=model.arch_kwargs, dataset="digits",
                    method="at", awp_gamma=0.0, epoch=1, metrics={}, config={})
    with pytest.raises(UserError, match="already a checkpoint"):
        load_foreign_state(tmp_path / "c.pt", "trades")


def test_cli_import_and_export(tmp_path, capsys):
    from awp_cli import main

    ref = _randomize(RefWideResNet(sub_block1=True, depth=10, widen_factor=1), 4)
    src = tmp_path / "trades.pt"
    torch.save(ref.state_dict(), src)
    # The CLI has no arch_kwargs: a full-size name with a small file fails with the key shapes named.
    code = main(["import-checkpoint", str(src), "--format", "trades", "--arch", "wrn-34-10", "--dataset", "cifar10",
                 "--out", str(tmp_path / "o.pt")])
    assert code == 1 and "do not fit" in capsys.readouterr().err
    ours = import_checkpoint(src, format="trades", arch="wrn-34-10", dataset="cifar10", out=tmp_path / "ours.pt",
                             arch_kwargs={"depth": 10, "widen_factor": 1})
    assert main(["export", str(ours), "--out", str(tmp_path / "rb.pt")]) == 0
    assert (tmp_path / "rb.pt.provenance.json").exists()
    assert "rb.pt" in capsys.readouterr().out
    # The exported file loads strictly into the published architecture and computes the original's outputs.
    target = _robustbench_style_load(RefWideResNet(sub_block1=False, depth=10, widen_factor=1), tmp_path / "rb.pt")
    x = _inputs()
    assert torch.equal(_outputs(target, x), _outputs(ref, x))
    # The provenance names the checkpoint exported, by path and checksum, and the file written.
    provenance = json.loads((tmp_path / "rb.pt.provenance.json").read_text())
    assert provenance["source"] == str(ours.resolve()) and provenance["sha256"] == sha256_file(ours)
    assert provenance["output_sha256"] == sha256_file(tmp_path / "rb.pt")
    assert (provenance["format"], provenance["arch"], provenance["dataset"]) == ("robustbench", "wrn-34-10", "cifar10")


# --------------------------------------------------------------------------------------------
# Export round trip: RobustBench-style strict load gives identical outputs.


def _robustbench_style_load(model: nn.Module, path: Path) -> nn.Module:
    # robustbench.utils.load_model: state_dict or {'state_dict'}, strip 'module.', strict load.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_export_wrn_round_trip(tmp_path):
    ref = _randomize(RefWideResNet(sub_block1=False, **SMALL_WRN), 5)
    src = tmp_path / "mart.pt"
    torch.save(ref.state_dict(), src)
    ours = import_checkpoint(src, format="mart", arch="wrn-34-10", dataset="cifar10", out=tmp_path / "ours.pt",
                             arch_kwargs=SMALL_WRN)
    out = export_checkpoint(ours, format="robustbench", out=tmp_path / "export.pt")
    target = _robustbench_style_load(RefWideResNet(sub_block1=False, **SMALL_WRN), out)
    model, _ = load_checkpoint(ours)
    x = _inputs()
    assert torch.equal(_outputs(target, x), _outputs(ref, x))
    assert _close(_outputs(target, x), _outputs(model, x))


def test_export_refuses_smallcnn(tmp_path):
    model = build_model("smallcnn")
    save_checkpoint(tmp_path / "c.pt", model, arch="smallcnn", arch_kwargs=model.arch_kwargs, dataset="cifar10",
                    method="at", awp_gamma=0.0, epoch=1, metrics={}, config={})
    with pytest.raises(UserError, match="no architecture"):
        export_checkpoint(tmp_path / "c.pt", out=tmp_path / "x.pt")


def test_export_normalized_preactresnet_into_robustbench_class(tmp_path):
    _robustbench()  # robustbench is a dev dependency: these tests run, never skip
    import robustbench.model_zoo.cifar10 as rb
    # RobustBench's Rice2020OverfittingNetL2: PreActResNet-18 of Rice et al. with CIFAR-10 mu/sigma.
    model = _randomize(build_model("preactresnet18", mean=[0.4914, 0.4822, 0.4465], std=[0.2471, 0.2435, 0.2616]), 6)
    save_checkpoint(tmp_path / "c.pt", model, arch="preactresnet18", arch_kwargs=model.arch_kwargs,
                    dataset="cifar10", method="at", awp_gamma=0.01, epoch=1, metrics={}, config={})
    out = export_checkpoint(tmp_path / "c.pt", out=tmp_path / "rice.pt")
    target = _robustbench_style_load(rb.Rice2020OverfittingNetL2(), out)
    x = _inputs()
    assert _close(_outputs(target, x), _outputs(model, x))


# --------------------------------------------------------------------------------------------
# RobustBench, offline


def test_missing_extra_says_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "robustbench" or m.startswith("robustbench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "robustbench", None)  # import robustbench -> ImportError
    with pytest.raises(UserError) as err:
        load_run("robustbench:Wu2020Adversarial_extra")
    assert "pip install 'awp-landscape[robustbench]'" in str(err.value)


def test_unknown_robustbench_name_suggests(tmp_path):
    _robustbench()
    with pytest.raises(UserError, match="Wu2020Adversarial"):
        load_robustbench("Wu2020Adversarial_extr", model_dir=tmp_path)


@pytest.mark.slow
def test_robustbench_offline_load_landscape_and_export_round_trip(tmp_path):
    """RST-AWP (Wu2020Adversarial_extra, WRN-28-10 with sub_block1) placed where RobustBench looks
    before downloading; our landscape runs on it; our export of the same weights loads back."""
    _robustbench()
    from awp.metrics import AttackSpec
    from landscape.curve import weight_loss_curve
    from landscape.directions import random_direction

    torch.manual_seed(7)
    ref = _randomize(RefWideResNet(depth=28, widen_factor=10, sub_block1=True), 7)
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    placed = folder / "Wu2020Adversarial_extra.pt"
    torch.save({"state_dict": nn.DataParallel(ref).state_dict()}, placed)

    run = load_run("robustbench:Wu2020Adversarial_extra", dataset="cifar10", threat="Linf",
                   model_dir=tmp_path / "models")
    model, meta = run.model, run.meta
    assert run.config.eps == pytest.approx(8 / 255) and run.attack.eps == pytest.approx(8 / 255)
    assert run.source == "robustbench:Wu2020Adversarial_extra" and run.config.dataset == "cifar10"
    x = _inputs(2)
    assert _close(_outputs(model, x), _outputs(ref, x))
    assert meta["arch"] == "robustbench:Wu2020Adversarial_extra" and meta["sha256"] == sha256_file(placed)
    assert meta["config"]["eps"] == pytest.approx(8 / 255)

    direction = random_direction(model, seed=0)
    y = torch.tensor([0, 1])
    df = weight_loss_curve(model, [direction], [-0.1, 0.0, 0.1], (x, y),
                           attack=AttackSpec(eps=8 / 255, step_size=2 / 255, steps=1))
    assert len(df) == 3 and df["loss"].notna().all()
    assert _close(_outputs(model, x), _outputs(ref, x))  # the landscape left the weights alone

    # Round trip: import the same file as RST, export for that RobustBench name, load it back.
    ours = import_checkpoint(placed, format="rst", arch="wrn-28-10", dataset="cifar10", out=tmp_path / "ours.pt")
    other = tmp_path / "other" / "cifar10" / "Linf"
    export_checkpoint(ours, out=other / "Wu2020Adversarial_extra.pt", model_name="Wu2020Adversarial_extra")
    back, _ = load_robustbench("Wu2020Adversarial_extra", model_dir=tmp_path / "other")
    assert torch.equal(_outputs(back, x), _outputs(model, x))
