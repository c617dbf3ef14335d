"""Tests of analysis/: catalog (gap against a direct evaluation), correlation (against scipy),
figures and the `awp correlate` / `awp figures` commands on run folders the demo did not make."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import awp_cli
from analysis.catalog import add_labels, collect_runs, unique_checkpoints
from analysis.correlation import correlate, correlation, statistics_rows
from awp.errors import UsageError, UserError


# --------------------------------------------------------------------------- correlation
def _xy(n=15, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    x[2] = x[5]  # a tie, so Spearman and Kendall's tie corrections matter
    return x, y


def test_correlation_equals_scipy():
    x, y = _xy()
    out = correlation(x, y, n_boot=200)
    for name, ref in (("pearson", stats.pearsonr(x, y)), ("spearman", stats.spearmanr(x, y)),
                      ("kendall", stats.kendalltau(x, y))):
        assert out[name] == pytest.approx(ref[0], abs=1e-12)
        assert out[f"{name}_p"] == pytest.approx(ref[1], rel=1e-9)
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"]
    assert out["n"] == len(x)


def test_vectorized_bootstrap_statistics_equal_scipy_rowwise():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(20, 9)).astype(float)  # many ties, like bootstrap resamples
    b = rng.normal(size=(20, 9))
    b[:, 1] = b[:, 2]
    got = statistics_rows(a, b)
    for i in range(20):
        assert got["pearson"][i] == pytest.approx(stats.pearsonr(a[i], b[i])[0], abs=1e-12)
        assert got["spearman"][i] == pytest.approx(stats.spearmanr(a[i], b[i])[0], abs=1e-12)
        assert got["kendall"][i] == pytest.approx(stats.kendalltau(a[i], b[i])[0], abs=1e-12)


def test_bootstrap_is_seeded_and_contains_estimate():
    x, y = _xy(25)
    a = correlation(x, y, n_boot=300, seed=7)
    b = correlation(x, y, n_boot=300, seed=7)
    c = correlation(x, y, n_boot=300, seed=8)
    assert a == b
    assert any(a[k] != c[k] for k in ("pearson_lo", "spearman_lo", "kendall_lo", "pearson_hi"))
    wide = correlation(x, y, n_boot=300, seed=7, ci=0.99)
    assert wide["pearson_lo"] <= a["pearson_lo"] and wide["pearson_hi"] >= a["pearson_hi"]


def test_correlation_drops_nan_and_needs_three_points():
    x, y = _xy(6)
    x[0] = np.nan
    assert correlation(x, y, n_boot=10)["n"] == 5
    with pytest.raises(UsageError, match="need at least 3 checkpoints with both sharpness and gap to correlate, got 2"):
        correlate(pd.DataFrame({"sharpness": [1.0, 2.0, np.nan], "gap": [0.1, 0.2, 0.3]}))


def test_correlate_groupby_one_row_per_group_matches_functional_form():
    x, y = _xy(12)
    df = pd.DataFrame({"sharpness": x, "gap": y, "run": ["a"] * 6 + ["b"] * 6})
    table = correlate(df, groupby="run", n_boot=50)
    assert list(table["group"]) == ["a", "b"]
    assert list(table["n"]) == [6, 6]
    ref = stats.spearmanr(x[6:], y[6:])[0]
    assert table.loc[1, "spearman"] == pytest.approx(ref, abs=1e-12)
    whole = correlate(df, n_boot=50)
    assert len(whole) == 1 and whole.loc[0, "group"] == "all"
    assert whole.loc[0, "kendall"] == pytest.approx(correlation(x, y, n_boot=50)["kendall"])
    with pytest.raises(UsageError, match="unknown column 'nope'; choose from: sharpness, gap, run"):
        correlate(df, x="nope")
    with pytest.raises(UsageError, match="unknown column 'sharpnes'; did you mean sharpness"):
        correlate(df, x="sharpnes")
    wide = df.assign(**{f"measure_{i}": 0.0 for i in range(20)})  # a catalog has more columns than a list shows
    with pytest.raises(UsageError) as exc:
        correlate(wide, x="zzz")
    assert str(exc.value) == f"unknown column 'zzz'; 23 columns: {', '.join(wide.columns)}"


def test_labels_name_methods_kinds_and_sweeps():
    df = pd.DataFrame({"method": ["at", "at", "at", "at", "mart", "trades"],
                       "awp_gamma": [0.0, 0.005, 0.01, 0.01, 0.005, 0.0],
                       "awp_kind": ["adversarial", "adversarial", "adversarial", "random", "adversarial", "adversarial"]})
    assert list(add_labels(df)) == ["AT", "AT-AWP (γ=0.005)", "AT-AWP (γ=0.01)", "AT-RWP", "MART-AWP", "TRADES"]


# ------------------------------------------------------------------- runs made by the test
@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Two tiny digits runs (AT, AT-AWP) fitted here, and their landscapes (1 direction, 3 alphas)."""
    from awp.config import load_preset
    from awp.train import fit

    root = tmp_path_factory.mktemp("analysis")
    small = dict(epochs=3, save_every=1, eval_steps=1, attack_steps=2, train_subset=64, eval_train_samples=64,
                 eval_test_samples=64, val_size=32, batch_size=32)
    for preset, name in (("digits-at", "at"), ("digits-at-awp", "at-awp")):
        fit(load_preset(preset, small), root / "runs" / "group" / name, progress=False)
    ckpts = sorted(str(p) for p in (root / "runs").rglob("epoch_*.pt"))
    rc = awp_cli.main(["landscape", *ckpts, "--out", str(root / "landscapes"), "--alphas", "-0.5,0,0.5",
                       "--directions", "1", "--samples", "16", "--steps", "1", "--radius", "0.5", "--quiet"])
    assert rc == 0
    return root


def _direct(path: Path) -> dict[str, float]:
    """Train/test robust accuracy of one checkpoint, measured here from its weights and config."""
    from awp.checkpoint import load_checkpoint
    from awp.config import config_from_dict
    from awp.data import build_dataset
    from awp.metrics import AttackSpec, clean_and_robust

    model, meta = load_checkpoint(path)
    c = config_from_dict(meta["config"])
    data = build_dataset(c.dataset, val_size=c.val_size, train_subset=c.train_subset, split_seed=c.split_seed)
    attack = AttackSpec(eps=c.eps, step_size=c.eps / 4, steps=c.eval_steps, norm=c.norm, seed=c.seed)
    train = clean_and_robust(model, *data.train.tensors(limit=c.eval_train_samples), attack)
    test = clean_and_robust(model, *data.test.tensors(limit=c.eval_test_samples), attack)
    return {"train_robust_acc": train["robust_acc"], "test_robust_acc": test["robust_acc"],
            "gap": train["robust_acc"] - test["robust_acc"]}


@pytest.mark.slow
def test_catalog_rows_and_gap_equal_direct_evaluation(runs):
    df = collect_runs(runs / "runs", runs / "landscapes")
    # 3 epoch files + best.pt per run; last.pt is skipped (epoch_003.pt covers its epoch)
    assert len(df) == 8 and not df["file"].eq("last.pt").any()
    assert set(df["label"]) == {"AT", "AT-AWP"}
    assert df.groupby("run")["is_best"].sum().tolist() == [1, 1]
    assert (df["gap"] == df["train_robust_acc"] - df["test_robust_acc"]).all()
    epoch_rows = df[~df["is_best"]]
    assert epoch_rows["sharpness"].notna().all() and epoch_rows["curvature"].notna().all()
    # each landscape row is joined by sha256: the json names the same checkpoint digest
    for _, r in epoch_rows.iterrows():
        info = json.loads((Path(r["landscape_dir"]) / "landscape.json").read_text())
        assert info["checkpoint_sha256"] == r["sha256"]
        assert info["flatness"]["sharpness"] == pytest.approx(r["sharpness"])
    row = df[(df["run"] == "at") & (df["file"] == "epoch_002.pt")].iloc[0]
    ref = _direct(Path(row["path"]))
    for key, value in ref.items():
        assert row[key] == pytest.approx(value, abs=1e-9)
    assert len(unique_checkpoints(df)) == 6  # best.pt duplicates an epoch file's weights


@pytest.mark.slow
def test_catalog_recomputes_missing_metrics(runs, tmp_path):
    run = tmp_path / "copy" / "at"
    shutil.copytree(runs / "runs" / "group" / "at", run)
    path = run / "epoch_003.pt"
    payload = torch.load(path, weights_only=True)
    stored = dict(payload["metrics"])  # what the training loop measured after epoch 3
    payload["metrics"] = {}
    torch.save(payload, path)
    df = collect_runs([tmp_path / "copy"])
    row = df[df["file"] == "epoch_003.pt"].iloc[0]
    assert row["metrics_source"] == "recomputed"
    assert (df[df["file"] != "epoch_003.pt"]["metrics_source"] == "checkpoint").all()
    ref = _direct(path)
    for key, value in ref.items():
        assert row[key] == pytest.approx(value, abs=1e-9)
    for key in ("train_robust_acc", "test_robust_acc", "train_clean_acc", "test_robust_loss"):
        assert row[key] == pytest.approx(stored[key], abs=1e-6)
    assert df["sharpness"].isna().all()  # no landscapes given


@pytest.mark.slow
def test_figures_command_on_foreign_runs(runs, tmp_path, capsys):
    out = tmp_path / "fig"
    rc = awp_cli.main(["figures", "--runs", str(runs / "runs"), "--landscapes", str(runs / "landscapes"),
                       "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("fig_gap_over_epochs", "fig_at_epochs", "fig_methods", "fig_methods_awp",
                 "fig_flatness_vs_gap", "fig_gamma"):
        for ext in ("png", "pdf", "csv"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    assert "fig_gamma" in printed
    catalog = collect_runs(runs / "runs", runs / "landscapes")
    # the scatter's table is the catalog's checkpoints (each set of weights once)
    scatter = pd.read_csv(out / "fig_flatness_vs_gap.csv").set_index("sha256")
    ref = unique_checkpoints(catalog).set_index("sha256")
    assert set(scatter.index) == set(ref.index)
    for col in ("gap", "sharpness", "epoch"):
        np.testing.assert_allclose(scatter[col], ref.loc[scatter.index, col])
    # the gap curves come from metrics.csv, which agrees with the checkpoints at saved epochs
    curves = pd.read_csv(out / "fig_gap_over_epochs.csv")
    for _, r in catalog[~catalog["is_best"]].iterrows():
        c = curves[(curves["run"] == r["run"]) & (curves["epoch"] == r["epoch"])]
        assert c["gap"].iloc[0] == pytest.approx(r["gap"])
    corr = pd.read_csv(out / "correlation.csv")
    overall = corr[(corr["groupby"] == "all") & (corr["x"] == "sharpness")].iloc[0]
    assert overall["spearman"] == pytest.approx(
        stats.spearmanr(ref["sharpness"], ref["gap"])[0], abs=1e-12)


@pytest.mark.slow
def test_landscapes_joined_by_make_figures_equal_the_catalogs(runs, tmp_path):
    """make_figures(landscapes=...) on a catalog without them joins them as collect_runs does (one
    join: best.pt borrows its epoch twin's landscape), so the figures' tables are the same."""
    from analysis.figures import make_figures

    joined = collect_runs(runs / "runs", runs / "landscapes")
    assert joined.loc[joined["is_best"], "landscape_source"].str.startswith("epoch_").all()  # borrowed
    a = make_figures(joined, tmp_path / "a", n_boot=20, only=["fig_at_epochs", "fig_methods"])
    b = make_figures(collect_runs(runs / "runs"), tmp_path / "b", landscapes=runs / "landscapes", n_boot=20,
                     only=["fig_at_epochs", "fig_methods"])
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 7
    for path in a:
        if path.suffix == ".csv":
            assert path.read_text() == (tmp_path / "b" / path.name).read_text(), path.name
    assert "early stop" in (tmp_path / "b" / "fig_methods.csv").read_text()


@pytest.mark.slow
def test_figures_skip_what_runs_do_not_allow(runs, tmp_path):
    from analysis.figures import make_figures

    catalog = collect_runs([runs / "runs" / "group" / "at"])  # AT only, no landscapes
    made = make_figures(catalog, tmp_path / "fig", n_boot=20)
    notes = "\n".join(made.notes)
    assert "fig_gap_over_epochs: fig_gap_over_epochs.png" in notes
    for name in ("fig_at_epochs", "fig_methods", "fig_methods_awp", "fig_flatness_vs_gap", "fig_gamma",
                 "correlation.csv"):
        assert f"{name}: skipped" in notes
    assert all(Path(p).exists() for p in made)


# ------------------------------------------------------------------------------------ CLI
def _one_line_error(capsys, argv):
    rc = awp_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("awp: error:"), err
    return err[0]


def test_empty_runs_folder_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        collect_runs(tmp_path / "empty")


@pytest.mark.slow
def test_cli_correlate_errors_and_output(runs, tmp_path, capsys):
    line = _one_line_error(capsys, ["correlate", "--runs", str(runs / "runs")])  # no landscapes there
    assert "landscape" in line
    single = tmp_path / "single" / "at"
    single.mkdir(parents=True)
    shutil.copy(runs / "runs" / "group" / "at" / "config.json", single)
    shutil.copy(runs / "runs" / "group" / "at" / "epoch_001.pt", single)
    line = _one_line_error(capsys, ["correlate", "--runs", str(single), "--landscapes", str(runs / "landscapes")])
    assert "need at least 3 checkpoints" in line and "got 1" in line
    rc = awp_cli.main(["correlate", "--runs", str(runs / "runs"), "--landscapes", str(runs / "landscapes"),
                       "--by", "run", "--n-boot", "50", "--out", str(tmp_path / "c.csv")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "c.csv")
    assert list(table["group"]) == ["at", "at-awp"] and list(table["n"]) == [3, 3]


def test_parser_registers_analysis_commands():
    parser, owners = awp_cli.build_parser()
    assert owners["correlate"].__name__ == "analysis.cli"
    assert owners["figures"].__name__ == "analysis.cli"


def test_measures_cli_then_ranking_against_the_gap(runs, tmp_path, capsys):
    """`awp measures` on every checkpoint, then `awp correlate --measures`: the ranking equals scipy on
    the catalog's columns, and a second `awp measures` computes nothing."""
    import scipy.stats

    from analysis.catalog import collect_runs, unique_checkpoints

    ckpts = sorted(str(p) for p in (runs / "runs").rglob("epoch_*.pt"))
    argv = ["measures", *ckpts, "--out", str(tmp_path / "m"), "--measures", "weight_norm,logit_margin,awp_sharpness",
            "--samples", "16", "--steps", "1", "--quiet"]
    assert awp_cli.main(argv) == 0
    files = sorted((tmp_path / "m").rglob("measures.json"))
    assert len(files) == len(ckpts)
    info = json.loads(files[0].read_text())
    assert info["complete"] and info["measures_computed"] == 3 and info["attack"]["steps"] == 1
    assert awp_cli.main(argv) == 0
    assert json.loads(files[0].read_text())["measures_reused"] == 3
    capsys.readouterr()
    assert awp_cli.main(["correlate", "--runs", str(runs / "runs"), "--landscapes", str(runs / "landscapes"),
                         "--measures", str(tmp_path / "m"), "--n-boot", "50"]) == 0
    ranking = pd.read_csv(tmp_path / "m" / "measure_ranking.csv")
    assert set(ranking["measure"]) == {"weight_norm", "logit_margin", "awp_sharpness"}
    assert (tmp_path / "m" / "fig_measures.png").stat().st_size > 0
    table = unique_checkpoints(collect_runs(runs / "runs", measures=tmp_path / "m"))
    for row in ranking.itertuples():
        expected = scipy.stats.kendalltau(table[f"measure_{row.measure}"], table["gap"])[0]
        assert row.kendall == pytest.approx(expected, nan_ok=True)
