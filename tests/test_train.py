"""Training on digits: learns, writes the run folder described in the README, resumes bit for bit, fails cleanly."""
import csv
import json

import pytest
import torch

import awp.train as train_module
from awp.checkpoint import load_checkpoint, read_checkpoint
from awp.config import load_preset
from awp.errors import UserError, UsageError
from awp.methods import get_method
from awp.models import build_model
from awp.perturbation import AdversarialWeightPerturbation
from awp.train import fit, train_step


def _rows(path):
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]


def test_training_raises_robust_accuracy_well_above_chance(tmp_path):
    config = load_preset("digits-at", {"epochs": 12, "lr": 0.1, "save_every": 4, "eval_steps": 5})
    model, run = fit(config, tmp_path / "run", progress=False)
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["test_robust_acc"]) > 0.25  # chance is 0.10 on 10 classes
    assert float(rows[-1]["test_clean_acc"]) >= float(rows[-1]["test_robust_acc"])
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "meta.json", "metrics.csv", "best.pt", "last.pt",
            "epoch_004.pt", "epoch_008.pt", "epoch_012.pt"} <= names
    raw = torch.load(run / "epoch_012.pt", weights_only=True)
    for key in ("model", "arch", "arch_kwargs", "dataset", "method", "awp_gamma", "epoch", "metrics", "config"):
        assert key in raw
    assert not any(k.startswith("module.") for k in raw["model"])
    for key in ("train_robust_acc", "test_robust_acc", "train_clean_acc", "test_clean_acc", "attack"):
        assert key in raw["metrics"]
    # What the keys hold: the run's config, its model rebuilt from arch + arch_kwargs alone, and the
    # metrics of metrics.csv's row of the checkpoint's epoch.
    assert (raw["arch"], raw["dataset"], raw["method"], raw["awp_gamma"], raw["epoch"]) == (
        config.model, config.dataset, config.method, config.awp_gamma, 12)
    assert raw["config"] == json.loads((run / "config.json").read_text()) == config.to_dict()
    rebuilt = build_model(raw["arch"], **raw["arch_kwargs"])
    rebuilt.load_state_dict(raw["model"])  # strict: every key and shape
    for epoch in (4, 8, 12):
        stored = torch.load(run / f"epoch_{epoch:03d}.pt", weights_only=True)
        row = rows[epoch - 1]
        assert stored["epoch"] == epoch and stored["metrics"]["attack"] == row["attack"]
        for key in ("train_robust_acc", "test_robust_acc", "train_clean_acc", "test_clean_acc"):
            assert stored["metrics"][key] == pytest.approx(float(row[key]), rel=1e-12, abs=0), (epoch, key)
    best = read_checkpoint(run / "best.pt")
    assert best["metrics"]["val_robust_acc"] == max(float(r["val_robust_acc"]) for r in rows)
    loaded, meta = load_checkpoint(run / "last.pt")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("kind", ["adversarial", "random"])
def test_resume_after_interruption_is_bit_identical(tmp_path, monkeypatch, kind):
    overrides = {"epochs": 4, "save_every": 1, "eval_steps": 2, "awp_gamma": 0.01, "awp_kind": kind}
    config = load_preset("digits-at", overrides)
    _, straight = fit(config, tmp_path / "straight", progress=False)

    real_measure = train_module.epoch_metrics
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # killed in epoch 3, after its training steps
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(train_module, "epoch_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_module, "epoch_metrics", real_measure)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    with pytest.raises(UsageError, match="--resume"):
        fit(config, tmp_path / "resumed", progress=False)
    _, resumed = fit(config, tmp_path / "resumed", resume=True, progress=False)

    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert _rows(straight / "metrics.csv") == _rows(resumed / "metrics.csv")


def test_resume_with_another_config_is_refused(tmp_path):
    config = load_preset("digits-at", {"epochs": 1, "eval_steps": 1})
    fit(config, tmp_path / "run", progress=False)
    with pytest.raises(UsageError, match="different config"):
        fit(load_preset("digits-at", {"epochs": 1, "eval_steps": 1, "lr": 0.2}), tmp_path / "run",
            resume=True, progress=False)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    config = load_preset("digits-at", {"epochs": 3, "eval_steps": 1, "lr": 1e30, "momentum": 0.0})
    with pytest.raises(UserError, match=r"non-finite training loss at epoch \d+, step \d+"):
        fit(config, tmp_path / "run", progress=False)


def test_train_step_returns_floats_and_leaves_no_perturbation():
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: after the step, weights must be w again
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.named_parameters()}
    stats = train_step(model, opt, get_method("at", eps=0.1, step_size=0.05, steps=2), x, y,
                       AdversarialWeightPerturbation(model, 0.01))
    assert set(stats) >= {"loss", "adv_acc", "awp"} and all(isinstance(v, float) for v in stats.values())
    for name, p in model.named_parameters():
        assert torch.allclose(p, before[name], atol=1e-7), name
