"""The paper's claims on the demo's digits setting (Wu et al. 2020, Fig. 1), re-derived by training:
robust overfitting sharpens the adversarial weight loss landscape and AWP flattens it.

The tests train the demo's AT and AT-AWP runs (the same presets and seed, so the same weights: the
per-epoch evaluation draws from its own generator and does not change training) and compare their
sharpness with the attack re-run at every perturbed weight. The committed output of the full demo
(``figures/``) is checked by tests/test_committed_figures.py.
"""
import pytest
import torch

from awp.checkpoint import load_checkpoint
from awp.config import config_from_dict, load_preset
from awp.data import build_dataset
from awp.metrics import AttackSpec
from awp.train import fit
from landscape.curve import weight_loss_curve
from landscape.directions import random_direction
from landscape.flatness import sharpness


def _sharpness(path):
    model, meta = load_checkpoint(path)
    config = config_from_dict(meta["config"])
    data = build_dataset(config.dataset, val_size=config.val_size, train_subset=config.train_subset,
                         split_seed=config.split_seed)
    attack = AttackSpec(eps=config.eps, step_size=config.eps / 4, steps=10, seed=0)
    directions = [random_direction(model, seed=s) for s in range(3)]
    curve = weight_loss_curve(model, directions, [-0.5, 0.0, 0.5], data.train.tensors(limit=256), attack=attack)
    return sharpness(curve, radius=0.5), meta["metrics"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    fast_metrics = {"save_every": 10, "eval_steps": 2, "eval_train_samples": 100, "eval_test_samples": 100}
    for name in ("digits-at", "digits-at-awp"):
        fit(load_preset(name, fast_metrics), root / name, progress=False)
    return root


@pytest.mark.slow
def test_last_at_checkpoint_is_sharper_than_an_early_one_and_than_at_awp(runs):
    early, _ = _sharpness(runs / "digits-at" / "epoch_010.pt")
    last, _ = _sharpness(runs / "digits-at" / "epoch_060.pt")
    awp, _ = _sharpness(runs / "digits-at-awp" / "epoch_060.pt")
    assert last > early * 2, (early, last)
    assert last > awp * 1.2, (last, awp)


@pytest.mark.slow
def test_training_is_independent_of_the_evaluation_settings(runs, tmp_path):
    """The claim test relies on this: evaluation never touches the training random stream."""
    short = {"epochs": 2, "save_every": 1}
    fit(load_preset("digits-at", {**short, "eval_steps": 1}), tmp_path / "a", progress=False)
    fit(load_preset("digits-at", {**short, "eval_steps": 5, "eval_train_samples": 50}), tmp_path / "b", progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
