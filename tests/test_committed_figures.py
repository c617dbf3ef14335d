"""The committed figures/ agree with the README and with each other.

``figures/`` is what ``awp demo`` produced (three seeds; the command and its duration are in the
README). No code change can fail these tests except a change of ``analysis.report``'s wording,
which the committed ``report.md`` must follow; they fail when a committed file, or a number the
README quotes from it, no longer matches the others: the report is the one computed from
``summary.json``; every interval is scipy's paired t-interval of the per-seed numbers stored beside
it; the claims the report makes (Wu et al. 2020, Fig. 1 and 4: AWP flattens the weight loss
landscape, flatness goes with the robust generalization gap) hold there over seeds; the CSV tables
hold the summary's numbers; and the README's demo section quotes them.
The code behind these numbers is tested by tests/test_demo.py (the quick demo run end to end) and
tests/test_paper_claims.py (the claims re-derived by training).
"""
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"


@pytest.fixture(scope="module")
def summary():
    return json.loads((FIGURES / "summary.json").read_text())


def _mean(values):
    return sum(values) / len(values)


def _unique(summary):
    """Each set of weights once: best.pt duplicates the epoch file of its epoch, where there is one."""
    per = pd.DataFrame(summary["checkpoints"])
    epoch_files = set(zip(per.loc[~per["is_best"], "run"], per.loc[~per["is_best"], "epoch"]))
    twin = per["is_best"] & pd.Series([(r, e) in epoch_files for r, e in zip(per["run"], per["epoch"])])
    return per, per[~twin]


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
    # AT's first and last saved epochs, seed by seed (the README's "From epoch 10 to 60").
    a = summary["at_epochs"]
    seeds = sorted({r["seed"] for r in a["per_seed"]})
    at = {(r["seed"], r["epoch"]): r for r in a["per_seed"]}
    for q in ("gap", "sharpness"):
        check(a[f"{q}_change"], [at[k, a["first_epoch"]][q] for k in seeds], [at[k, a["last_epoch"]][q] for k in seeds])


def test_flatness_goes_with_the_gap_over_every_checkpoint_of_every_seed(summary):
    per, unique = _unique(summary)
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


def test_committed_tables_hold_the_summarys_numbers(summary):
    _, unique = _unique(summary)
    # The scatter of fig_flatness_vs_gap: the summary's checkpoints, each set of weights once.
    scatter = pd.read_csv(FIGURES / "fig_flatness_vs_gap.csv").set_index(["run", "file"])
    expected = unique.set_index(["run", "file"])
    assert sorted(scatter.index) == sorted(expected.index)
    for column in ("epoch", "sharpness", "gap", "train_robust_acc", "test_robust_acc"):
        assert list(scatter.loc[expected.index, column]) == pytest.approx(list(expected[column]), abs=1e-12), column
    assert (scatter["gap"] - (scatter["train_robust_acc"] - scatter["test_robust_acc"])).abs().max() < 1e-9
    assert scipy.stats.spearmanr(scatter["sharpness"], scatter["gap"])[0] == pytest.approx(summary["spearman"])
    assert scipy.stats.kendalltau(scatter["sharpness"], scatter["gap"])[0] == pytest.approx(summary["kendall"])
    assert scipy.stats.pearsonr(scatter["sharpness"], scatter["gap"])[0] == pytest.approx(summary["pearson"])
    # correlation.csv's overall row is the summary's.
    corr = pd.read_csv(FIGURES / "correlation.csv")
    overall = corr[(corr["groupby"] == "all") & (corr["x"] == "sharpness") & (corr["y"] == "gap")]
    assert len(overall) == 1
    row = overall.iloc[0]
    assert row["n"] == summary["n_checkpoints"]
    for stat in ("spearman", "kendall"):
        assert (row[stat], row[f"{stat}_lo"], row[f"{stat}_hi"]) == pytest.approx(
            (summary[stat], *summary[f"{stat}_ci"]), abs=1e-12), stat
    assert row["pearson"] == pytest.approx(summary["pearson"], abs=1e-12)
    # measure_ranking.csv, the table of fig_measures and the summary's ranking: one table.
    ranking = pd.DataFrame(summary["measure_ranking"])
    for name in ("measure_ranking.csv", "fig_measures.csv"):
        table = pd.read_csv(FIGURES / name)
        assert list(table["measure"]) == list(ranking["measure"]), name
        assert list(table["kendall"]) == sorted(table["kendall"], reverse=True), name  # best first
        for column in ranking.columns.drop("measure"):
            assert list(table[column]) == pytest.approx(list(ranking[column]), abs=1e-12), (name, column)
    assert set(ranking["n"]) == {summary["n_checkpoints"]}


# README cells that disagree with summary.json, each (what the README says, what the summary gives).
# TRADES' sharpness interval ends at -0.04464, which rounds to -0.04; the README rounded report.md's
# -0.045 a second time. The fix is in the README (its owner's change): then delete the entry.
def _demo_section():
    text = (ROOT / "README.md").read_text()
    return text.split("## What `awp demo` shows", 1)[1].split("\n## ", 1)[0]


def test_readme_demo_section_quotes_the_committed_summary(summary):
    section = _demo_section()
    flat = " ".join(section.split())  # the prose wraps lines anywhere

    def diff(d, digits):
        return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"

    # The table: base / AWP means over seeds, and the paired difference with its interval.
    rows = {line.split(" | ")[0].lstrip("| ").split(" /")[0]: line.strip("| ").split(" | ")
            for line in section.splitlines() if re.match(r"\| [A-Z]+ / [A-Z]+-AWP", line)}
    pairs = {p["method"]: p for p in summary["awp_vs_base"]}
    assert set(rows) == {m.upper() for m in pairs}
    for method, pair in pairs.items():
        cells = rows[method.upper()]
        per_seed = pair["per_seed"]
        for cell, q, digits in zip(cells[1:], ("sharpness", "gap", "test_robust_acc"), (2, 3, 3)):
            base, awp = _mean([p[q] for p in per_seed]), _mean([p[f"{q}_awp"] for p in per_seed])
            want = f"{base:.{digits}f} / {awp:.{digits}f}: {diff(pair[q], digits)}"
            assert cell == want, (method, q)
    at_row = next(line for line in section.splitlines() if line.startswith("| AT / AT-AWP"))
    assert f"(gamma {pairs['at']['awp_gamma']:g})" in at_row
    # The prose.
    a, o = summary["at_epochs"], summary["overfitting"]
    first, last = a["mean"][0], a["mean"][-1]
    assert (first["epoch"], last["epoch"]) == (a["first_epoch"], a["last_epoch"])
    sweep = summary["gamma_sweep"]
    largest = max((r for r in sweep if r["awp_kind"] == "adversarial"), key=lambda r: r["awp_gamma"])
    rwp = next(r for r in sweep if r["awp_kind"] == "random")
    same = next(r for r in sweep if r["awp_kind"] == "adversarial" and r["awp_gamma"] == rwp["awp_gamma"])
    top, second = summary["measure_ranking"][:2]
    seeds = summary["settings"]["seeds"]
    quoted = [
        f"{round(summary['duration_s'])} s by its own clock",
        f"trains {summary['n_runs']} runs",
        f"seeds {', '.join(map(str, seeds[:-1]))} and {seeds[-1]}",
        f"{summary['n_checkpoints']} checkpoints' adversarial weight loss curves",
        f"From epoch {a['first_epoch']} to {a['last_epoch']}, AT's gap grows from {first['gap']:.3f} to "
        f"{last['gap']:.3f} ({diff(a['gap_change'], 3)}) and its sharpness from {first['sharpness']:.2f} to "
        f"{last['sharpness']:.2f} ({diff(a['sharpness_change'], 2)})",
        f"over all {summary['n_checkpoints']} checkpoints of every seed: Spearman {summary['spearman']:.2f} "
        f"(bootstrap 95% CI {summary['spearman_ci'][0]:.2f} to {summary['spearman_ci'][1]:.2f}), "
        f"Kendall {summary['kendall']:.2f}",
        f"({largest['awp_gamma']:g}: gap {largest['gap']:.3f},",
        f"(gap {rwp['gap']:.3f}, sharpness {rwp['sharpness']:.2f}, against {same['gap']:.3f} and "
        f"{same['sharpness']:.2f})",
        f"Ranked against the gap over the {summary['n_checkpoints']} checkpoints",
        f"(Kendall tau {top['kendall']:+.2f}, 95% CI {top['kendall_lo']:+.2f} to {top['kendall_hi']:+.2f}), "
        f"then the weight norm ({second['kendall']:+.2f})",
        f"to the last: {diff(o['at_fall'], 3)};",
        f"the first decay: {diff(o['at_loss_rise'], 3)};",
    ]
    missing = [q for q in quoted if q not in flat]
    assert not missing, missing
    assert top["measure"] == "logit_margin" and second["measure"] == "weight_norm"  # as the README names them
    assert summary["quick"] is False  # the README quotes the full demo, not --quick
