"""The figures' registry, row selection, spreads over seeds and saving (analysis.figures, .rows,
.seeds, .output), on a catalog made here: checked against pandas and numpy written out in the
test, and against invariants (every registered figure draws or says why not; nothing is written
when any figure fails; the summary and the figures pick the same checkpoints)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import rows as select
from analysis.figures import FIGURES, make_figures
from analysis.output import Drawing, FigureSkipped, save_figure
from analysis.seeds import mean_sd, over_seeds
from awp.errors import UsageError, UserError

# run -> (method, gamma, kind, seed)
RUNS = {"at-s0": ("at", 0.0, "adversarial", 0), "at-s1": ("at", 0.0, "adversarial", 1),
        "awp-s0": ("at", 0.01, "adversarial", 0), "awp-s1": ("at", 0.01, "adversarial", 1),
        "awp05-s0": ("at", 0.05, "adversarial", 0), "rwp-s0": ("at", 0.01, "random", 0),
        "trades-s0": ("trades", 0.0, "adversarial", 0)}


def _catalog(seed: int = 0, landscapes: bool = True) -> pd.DataFrame:
    """Catalog rows (the columns the figures read) of epochs 2, 4, 6 and a best.pt at epoch 4 per
    run, random accuracies; a sharpness and a landscape folder for every epoch row but at-s1's
    epoch 6. No file is behind them: with ``landscapes=False`` the folders are left out, so the
    figures that draw landscapes or metrics.csv skip and the two that need no file draw."""
    from analysis.catalog import add_labels

    rng = np.random.default_rng(seed)
    rows = []
    for run, (method, gamma, kind, s) in RUNS.items():
        for epoch, best in ((2, False), (4, False), (6, False), (4, True)):
            train, test = rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.5)
            measured = not ((run == "at-s1" and epoch == 6) or best)
            landscape = f"/lands/{run}/{epoch}" if measured and landscapes else None
            rows.append({"run": run, "run_dir": f"/nowhere/{run}", "method": method, "awp_gamma": gamma,
                         "awp_kind": kind, "seed": s, "epoch": epoch, "is_best": best,
                         "file": "best.pt" if best else f"epoch_{epoch:03d}.pt", "sha256": f"{run}-{epoch}-{best}",
                         "train_robust_acc": train, "test_robust_acc": test, "gap": train - test,
                         "sharpness": rng.uniform(0.5, 2.0) if measured else np.nan, "landscape_dir": landscape,
                         "attack": "pgd3", "landscape_attack": "pgd10", "landscape_split": "train",
                         "landscape_samples": 64})
    df = pd.DataFrame(rows)
    df["label"] = add_labels(df)
    return df.sort_values(["run", "epoch", "is_best", "file"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------ registry
def test_registry_names_descriptions_and_sweep_flags():
    assert FIGURES.names() == ["fig_gap_over_epochs", "fig_robust_overfitting", "fig_at_epochs", "fig_methods",
                               "fig_methods_awp", "fig_flatness_vs_gap", "fig_gamma"]
    for name, description in FIGURES.describe().items():
        assert description and "\n" not in description and len(description) <= 110, name
    assert FIGURES.where(lambda entry: entry.sweep) == ["fig_flatness_vs_gap", "fig_gamma"]


@pytest.mark.parametrize("name", FIGURES.names())
def test_every_figure_draws_or_says_why_not(name):
    """One signature for every entry; a Drawing named after its entry, or a FigureSkipped reason."""
    catalog = _catalog(landscapes=False)
    try:
        drawing = FIGURES.get(name).draw(catalog, n_boot=20, seed=0)
    except FigureSkipped as exc:
        assert str(exc) and "\n" not in str(exc)
        assert name not in ("fig_flatness_vs_gap", "fig_gamma")  # these need no file, so they draw here
        return
    assert isinstance(drawing, Drawing) and drawing.name == name and len(drawing.table) > 0


def test_unknown_figure_is_the_registrys_one_line(tmp_path):
    with pytest.raises(UsageError) as exc:
        make_figures(_catalog(), tmp_path / "out", only=["fig_gama"])
    assert str(exc.value).startswith("unknown figure 'fig_gama'; did you mean fig_gamma?")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_nothing_is_written_when_a_later_figure_fails(tmp_path, monkeypatch):
    """Figures are all drawn before any is saved: a damaged input met by the last figure leaves
    the output folder as it was, though an earlier figure was drawn."""
    from analysis import tables

    def damaged(catalog):
        raise UserError("metrics.csv: column 'gap' must hold numbers")

    monkeypatch.setattr(tables, "gamma_table", damaged)
    with pytest.raises(UserError, match="must hold numbers"):
        make_figures(_catalog(landscapes=False), tmp_path / "out", n_boot=20)
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    made = make_figures(_catalog(landscapes=False), tmp_path / "out", n_boot=20)
    assert {p.name for p in made} >= {"fig_flatness_vs_gap.csv", "fig_gamma.png", "correlation.csv"}


def test_gamma_csv_equals_each_runs_last_checkpoint(tmp_path):
    """fig_gamma.csv against the last epoch checkpoint of each AT run, found with pandas here, and
    the provenance of every row's run."""
    catalog = _catalog(landscapes=False)
    make_figures(catalog, tmp_path, n_boot=20, only=["fig_gamma"])
    table = pd.read_csv(tmp_path / "fig_gamma.csv")
    last = catalog[~catalog["is_best"]].sort_values("epoch").groupby("run").tail(1).set_index("run")
    assert set(table["run"]) == {run for run, spec in RUNS.items() if spec[0] == "at"}
    for _, r in table.iterrows():
        assert r["epoch"] == 6 and r["gap"] == last.loc[r["run"], "gap"]
        if r["awp_gamma"] > 0:
            assert (r["kind"] == "random") == (r["run"] == "rwp-s0")
    # plain AT (gamma 0) is the common start of both curves: once per kind
    assert sorted(table.loc[table["awp_gamma"] == 0, "kind"]) == ["adversarial"] * 2 + ["random"] * 2
    assert set(table["gap_attack"]) == {"pgd3"} and set(table["landscape_samples"]) == {64}


def test_legends_spell_out_random_weight_perturbation():
    """'RWP' will also name Yu et al.'s Robust Weight Perturbation: our random baseline is spelled out
    in the legends, while the catalog and its CSVs keep the label 'AT-RWP'."""
    from analysis.catalog import legend_label

    assert legend_label("AT-RWP") == "AT + random weight perturbation"
    assert legend_label("AT-RWP (γ=0.01)") == "AT + random weight perturbation (γ=0.01)"
    assert legend_label("AT-AWP") == "AT-AWP"
    catalog = _catalog(landscapes=False)
    for name in ("fig_gamma", "fig_flatness_vs_gap"):
        drawing = FIGURES.get(name).draw(catalog, n_boot=20, seed=0)
        texts = [t.get_text() for ax in drawing.figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert any("random weight perturbation" in t for t in texts), texts
        assert not any("RWP" in t for t in texts), texts
    assert "AT-RWP" in set(FIGURES.get("fig_flatness_vs_gap").draw(catalog, n_boot=20).table["label"])


# ---------------------------------------------------------------------------------- selection
def test_last_and_early_stopping_rows_against_pandas():
    catalog = _catalog()
    epochs = catalog[~catalog["is_best"]]
    for needs in ("landscape_dir", "sharpness", None):
        have = epochs if needs is None else epochs[epochs[needs].notna()]
        ref = have.sort_values("epoch").groupby("run").tail(1)
        got = select.last_checkpoints(catalog, needs)
        assert sorted(zip(got["run"], got["epoch"])) == sorted(zip(ref["run"], ref["epoch"]))
    # at-s1's epoch 6 has no landscape: its last checkpoint with one is epoch 4, without the need 6
    assert select.by_seed(select.last_checkpoints(select.plain(catalog, "at")))[1]["epoch"] == 4
    assert select.by_seed(select.last_checkpoints(select.plain(catalog, "at"), needs=None))[1]["epoch"] == 6
    assert select.early_stopping(catalog, needs=None)["file"].eq("best.pt").sum() == len(RUNS)
    assert select.early_stopping(catalog).empty  # no best.pt row has a landscape of its own here


def test_awp_runs_and_chosen_gamma():
    catalog = _catalog()
    # the most common AWP gamma of AT is 0.01 (two seeds against one at 0.05); random runs never count
    assert set(select.awp_runs(catalog, "at")["run"]) == {"awp-s0", "awp-s1"}
    kept = select.select_awp_gamma(catalog, {"at": 0.05})
    assert set(kept["run"]) == set(RUNS) - {"awp-s0", "awp-s1"}
    assert set(select.awp_runs(kept, "at")["run"]) == {"awp05-s0"}


def test_summary_and_figures_pick_the_same_checkpoints():
    """The demo's summary and the method figures select through analysis.rows: the same last
    checkpoints of AT and AT-AWP, seed by seed."""
    from analysis import summary, tables

    catalog = _catalog()
    catalog["name"] = catalog["run"].map(lambda r: {"at": "at", "awp": "at-awp"}.get(r.split("-")[0]))
    entries = {e["name"]: e["rows"] for e in tables.method_entries(catalog[catalog["name"].notna()], True)}
    for name, label in (("at", "AT"), ("at-awp", "AT-AWP (γ=0.01)")):
        from_summary = {k: (r["run"], r["file"]) for k, r in summary._last(catalog, name).items()}
        from_figures = {int(r["seed"]): (r["run"], r["file"]) for _, r in entries[label].iterrows()}
        assert from_summary == from_figures and len(from_summary) == 2


# ------------------------------------------------------------------------------- over seeds
def test_over_seeds_equals_numpy():
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"label": ["a"] * 6 + ["b"] * 3 + ["c"], "epoch": [1, 1, 1, 2, 2, 2, 1, 1, 1, 1],
                          "run": list("xyzxyzxyzx"), "gap": rng.normal(size=10)})
    table.loc[5, "gap"] = np.nan  # a seed without the value: left out of its group
    stats = over_seeds(table, ["label", "epoch"], ["gap"]).set_index(["label", "epoch"])
    for (label, epoch), part in table.groupby(["label", "epoch"]):
        values = part["gap"].dropna().to_numpy()
        assert stats.loc[(label, epoch), "gap_mean"] == pytest.approx(np.mean(values))
        sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
        assert stats.loc[(label, epoch), "gap_sd"] == pytest.approx(sd)
        assert stats.loc[(label, epoch), "n_seeds"] == part["run"].nunique()
    assert mean_sd([2.0]) == (2.0, 0.0) and all(np.isnan(mean_sd([])))


# ------------------------------------------------------------------------------------- saving
def test_save_figure_writes_png_pdf_and_the_csv_with_provenance(tmp_path):
    from matplotlib.figure import Figure

    catalog = _catalog()
    fig = Figure(figsize=(2, 2), layout="constrained")
    fig.add_subplot().plot([0, 1], [1, 0])
    table = pd.DataFrame({"run": ["at-s0", "awp-s1"], "value": [1.0, 2.0], "landscape_split": ["stale", "stale"]})
    paths = save_figure(fig, table, tmp_path / "out", "f", catalog)
    assert [p.name for p in paths] == ["f.png", "f.pdf", "f.csv"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
    written = pd.read_csv(paths[2])
    assert list(written.columns) == ["run", "value", "gap_attack", "landscape_attack", "landscape_split",
                                     "landscape_samples"]
    assert set(written["landscape_split"]) == {"train"}  # the catalog's, not the table's stale copy
    assert fig.get_layout_engine() is not None  # its own layout kept, not replaced by tight_layout
    plain = save_figure(fig, pd.DataFrame({"x": [1]}), tmp_path / "out", "g", catalog)
    assert list(pd.read_csv(plain[2]).columns) == ["x"]  # no run column: nothing to add
