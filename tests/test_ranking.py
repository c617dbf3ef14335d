"""Ranking measures against the robust gap (analysis.ranking): scipy and hand-computed granulated tau."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.ranking import granulated_tau, plot_measure_ranking, rank_measures
from awp.errors import UsageError


def _hand_table() -> pd.DataFrame:
    """Two methods x three epochs; awp_gamma constant (not an axis), no seed column.

    Granulated tau of ``m`` by hand (pairs i < j, concordant +1, discordant -1, over 3 pairs or 1):
      epoch axis (groups: method)  A: m 1,3,2 vs gap .1,.2,.3 -> (+1 +1 -1)/3 = 1/3
                                   B: m 5,4,6 vs gap .2,.1,.4 -> (+1 +1 +1)/3 = 1      psi = 2/3
      method axis (groups: epoch)  e1: (1,.1),(5,.2) +1; e2: (3,.2),(4,.1) -1; e3: (2,.3),(6,.4) +1
                                                                                     psi = 1/3
      Psi = (2/3 + 1/3) / 2 = 1/2.
    A seventh row has no value of m (NaN) and must be left out.
    """
    return pd.DataFrame({
        "method": ["A", "A", "A", "B", "B", "B", "B"], "epoch": [1, 2, 3, 1, 2, 3, 4],
        "awp_gamma": [0.0] * 7, "gap": [0.1, 0.2, 0.3, 0.2, 0.1, 0.4, 0.9],
        "m": [1, 3, 2, 5, 4, 6, np.nan], "flat": [1.0] * 7})


def test_granulated_tau_matches_the_hand_computation():
    df = _hand_table()
    got = granulated_tau(df, "m", "gap", ["epoch", "method"])
    assert got["tau_epoch"] == pytest.approx(2 / 3) and got["groups_epoch"] == 2
    assert got["tau_method"] == pytest.approx(1 / 3) and got["groups_method"] == 3
    assert got["granulated_tau"] == pytest.approx(1 / 2)
    # A constant measure defines no tau in any group: NaN, zero groups, not 0.
    flat = granulated_tau(df, "flat", "gap", ["epoch", "method"])
    assert np.isnan(flat["granulated_tau"]) and flat["groups_epoch"] == 0
    # A fixed column splits the groups: with method fixed, the method axis has no group of 2.
    fixed = granulated_tau(df, "m", "gap", ["epoch"], fixed=["method"])
    assert fixed["tau_epoch"] == pytest.approx(2 / 3)


def test_rank_measures_matches_scipy_and_the_hand_computation():
    df = _hand_table()
    rng = np.random.default_rng(1)
    df["noise"] = rng.normal(size=len(df))
    table = rank_measures(df, ["noise", "m"], n_boot=300, seed=3)
    assert list(table["measure"]) == sorted(["noise", "m"], key=lambda n: -abs(table.set_index("measure").loc[n, "kendall"]))
    assert "tau_awp_gamma" not in table and "tau_seed" not in table  # constant / absent axes
    for _, row in table.iterrows():
        keep = df[row["measure"]].notna()
        x, y = df.loc[keep, row["measure"]], df.loc[keep, "gap"]
        assert row["n"] == keep.sum()
        assert row["kendall"] == pytest.approx(stats.kendalltau(x, y)[0])
        assert row["kendall_p"] == pytest.approx(stats.kendalltau(x, y)[1])
        assert row["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
        assert row["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
        for s in ("pearson", "spearman", "kendall"):
            assert row[f"{s}_lo"] <= row[f"{s}_hi"]
    m = table.set_index("measure").loc["m"]
    assert m["granulated_tau"] == pytest.approx(0.5) and m["tau_epoch"] == pytest.approx(2 / 3)
    again = rank_measures(df, ["noise", "m"], n_boot=300, seed=3)
    pd.testing.assert_frame_equal(table, again)  # seeded bootstrap


def test_rank_measures_bad_input_is_one_line():
    df = _hand_table()
    for call in (lambda: rank_measures(df, []), lambda: rank_measures(df, ["nope"]),
                 lambda: rank_measures(df, ["m"], gap="nogap"), lambda: rank_measures(df, ["m"], axes=["seed"]),
                 lambda: rank_measures(df.iloc[:2], ["m"])):
        with pytest.raises(UsageError) as exc:
            call()
        assert "\n" not in str(exc.value)
    # A measure with too few points keeps its row (n, NaN statistics) when another can be ranked.
    df["sparse"] = [1.0, 2.0] + [np.nan] * 5
    table = rank_measures(df, ["m", "sparse"], n_boot=50).set_index("measure")
    assert table.loc["sparse", "n"] == 2 and np.isnan(table.loc["sparse", "kendall"])
    assert table.index[-1] == "sparse"  # NaN sorts last


def test_plot_measure_ranking_writes_png_pdf_csv(tmp_path):
    df = _hand_table()
    df["noise"] = np.random.default_rng(0).normal(size=len(df))
    table = rank_measures(df, ["noise", "m"], n_boot=100)
    paths = plot_measure_ranking(table, tmp_path / "fig_measures.png")
    assert [p.name for p in paths] == ["fig_measures.png", "fig_measures.pdf", "fig_measures.csv"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
    drawn = pd.read_csv(paths[2])
    assert list(drawn["measure"]) == list(table["measure"])
    with pytest.raises(UsageError):
        plot_measure_ranking(table.assign(kendall=np.nan), tmp_path / "empty.png")


def test_importing_the_ranking_selects_no_matplotlib_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import analysis.ranking, sys; "
            "assert matplotlib.get_backend() == 'svg'; assert 'matplotlib.pyplot' not in sys.modules")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root)})
