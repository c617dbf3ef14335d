"""The paper's claims on the demo's digits setting (Wu et al. 2020, Fig. 1): robust overfitting
sharpens the adversarial weight loss landscape, AWP flattens it, flatness goes with the gap.

The slow tests train the demo's AT and AT-AWP runs (the same presets and seed, so the same
weights: the per-epoch evaluation draws from its own generator and does not change training) and
compare their sharpness with the attack re-run at every perturbed weight. The fast ones check the
committed output of the full demo (``figures/summary.json``, every seed's numbers): the claims the
report makes hold there, over seeds, and each interval is scipy's paired t-interval of the per-seed
numbers stored beside it.
"""
import json
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats
import torch

from awp.checkpoint import load_checkpoint
from awp.config import config_from_dict, load_preset
from awp.data import build_dataset
from awp.metrics import AttackSpec
from awp.train import fit
from landscape.curve import weight_loss_curve
from landscape.directions import random_direction
from landscape.flatness import sharpness

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def summary():
    return json.loads((FIGURES / "summary.json").read_text())


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


# ------------------------------------------------------- the committed full demo, over seeds
def test_committed_report_is_computed_from_the_committed_summary(summary):
    from analysis.report import report_markdown

    assert report_markdown(summary) == (FIGURES / "report.md").read_text()


def test_committed_intervals_are_scipys_paired_t_intervals(summary):
    def check(d, base, other):
        ci = scipy.stats.ttest_rel(other, base).confidence_interval(summary["confidence"])
        assert d["per_seed"] == pytest.approx([b - a for a, b in zip(base, other)])
        assert (d["lo"], d["hi"]) == pytest.approx((ci.low, ci.high))

    for pair in summary["awp_vs_base"]:
        for q in ("sharpness", "gap", "test_robust_acc"):
            check(pair[q], [p[q] for p in pair["per_seed"]], [p[f"{q}_awp"] for p in pair["per_seed"]])
    o = summary["overfitting"]
    check(o["at_fall"], [r["test_best"] for r in o["at"]], [r["test_last"] for r in o["at"]])
    check(o["at_loss_rise"], [r["loss_after_decay"] for r in o["at"]], [r["loss_end"] for r in o["at"]])
    check(o["awp_minus_at_test_last"], [r["test_last"] for r in o["at"]], [r["test_last"] for r in o["at-awp"]])


def test_flatness_goes_with_the_gap_over_every_checkpoint_of_every_seed(summary):
    per = pd.DataFrame(summary["checkpoints"])
    epoch_files = set(zip(per.loc[~per["is_best"], "run"], per.loc[~per["is_best"], "epoch"]))
    twin = per["is_best"] & pd.Series([(r, e) in epoch_files for r, e in zip(per["run"], per["epoch"])])
    unique = per[~twin]  # each set of weights once: best.pt duplicates its epoch file
    assert len(unique) == summary["n_checkpoints"] >= 12
    assert summary["spearman"] == pytest.approx(scipy.stats.spearmanr(unique["sharpness"], unique["gap"])[0])
    assert summary["spearman_ci"][0] > 0
    seeds = summary["settings"]["seeds"]
    assert len(seeds) >= 3
    for name in ("at", "at-awp"):
        part = per[(per["name"] == name) & ~per["is_best"]]
        assert sorted(part["seed"].unique()) == sorted(seeds)
        assert part.groupby("seed")["epoch"].nunique().min() >= 2  # every saved epoch of every seed


def test_every_awp_variant_is_flatter_beyond_the_seed_spread(summary):
    pairs = {p["method"]: p for p in summary["awp_vs_base"]}
    assert set(pairs) == {"at", "trades", "mart", "rst"}
    for method, pair in pairs.items():
        assert len(pair["seeds"]) >= 3, method
        assert all(p["sharpness_awp"] < p["sharpness"] for p in pair["per_seed"]), method
        assert pair["sharpness"]["hi"] < 0, method  # the 95% interval of AWP minus base excludes 0


def test_gamma_sweep_flattens_with_gamma_and_random_perturbation_does_not(summary):
    sweep = summary["gamma_sweep"]
    adversarial = sorted((r for r in sweep if r["awp_kind"] == "adversarial"), key=lambda r: r["awp_gamma"])
    assert adversarial[0]["awp_gamma"] == 0 and len(adversarial) >= 4
    at, largest = adversarial[0], adversarial[-1]
    assert all(r["sharpness"] < at["sharpness"] for r in adversarial[1:])  # every AWP flatter than AT
    assert all(largest["sharpness"] < r["sharpness"] for r in adversarial[:-1])
    assert largest["gap"] < at["gap"]
    rwp = next(r for r in sweep if r["awp_kind"] == "random")
    same = next(r for r in adversarial if r["awp_gamma"] == rwp["awp_gamma"])
    assert rwp["sharpness"] > same["sharpness"] and rwp["gap"] > same["gap"]
