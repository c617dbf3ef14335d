"""The quick demo end to end, its summary against scipy, and the notebook executed on its outputs."""
import json
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

pytestmark = pytest.mark.slow

FIGURES = ["fig_gap_over_epochs", "fig_robust_overfitting", "fig_at_epochs", "fig_methods", "fig_methods_awp",
           "fig_flatness_vs_gap", "fig_gamma", "fig_measures"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import awp_cli

    root = tmp_path_factory.mktemp("demo")
    assert awp_cli.main(["demo", "--quick", "--out", str(root / "fig"), "--work", str(root / "work")]) == 0
    return root


def _reject(constant: str):
    raise AssertionError(f"{constant} in a JSON file: not JSON")


def test_demo_writes_every_figure_with_its_csv(demo):
    for path in demo.rglob("*.json"):  # summary.json, landscape.json, meta.json, config.json: strict JSON
        json.loads(path.read_text(), parse_constant=_reject)
    for name in FIGURES:
        for suffix in (".png", ".pdf", ".csv"):
            assert (demo / "fig" / f"{name}{suffix}").stat().st_size > 0, name + suffix
    report = (demo / "fig" / "report.md").read_text()
    assert "Spearman" in report and "AWP" in report


def _catalog(demo):
    from analysis.catalog import collect_runs

    runs = demo / "work" / "runs"
    return collect_runs([p for p in runs.iterdir() if p.name != "standard"], demo / "work" / "landscapes")


def test_summary_correlation_equals_scipy_on_every_checkpoint_of_every_seed(demo):
    from analysis.catalog import unique_checkpoints

    summary = json.loads((demo / "fig" / "summary.json").read_text())
    points = unique_checkpoints(_catalog(demo)).dropna(subset=["sharpness", "gap"])
    assert summary["n_checkpoints"] == len(points) >= 12
    assert summary["spearman"] == pytest.approx(scipy.stats.spearmanr(points["sharpness"], points["gap"])[0])
    assert summary["kendall"] == pytest.approx(scipy.stats.kendalltau(points["sharpness"], points["gap"])[0])
    per = pd.DataFrame(summary["checkpoints"])
    assert set(per["name"]) >= {"at", "at-awp", "trades", "trades-awp", "mart", "mart-awp", "rst", "rst-awp"}
    seeds = summary["settings"]["seeds"]
    assert len(seeds) >= 2 and summary["seeds"] == sorted(seeds)
    for name in ("at", "at-awp"):  # every saved epoch of every seed has its landscape
        part = per[(per["name"] == name) & ~per["is_best"]]
        assert sorted(part["seed"].unique()) == sorted(seeds)
        assert part.groupby("seed")["epoch"].nunique().min() >= 2
    assert (per["gap"] - (per["train_robust_acc"] - per["test_robust_acc"])).abs().max() < 1e-9


def test_paired_differences_equal_scipy_on_the_runs(demo):
    """Each AWP-minus-base claim, recomputed here from the run folders' last checkpoints and
    metrics.csv, with scipy's paired t-interval."""
    from analysis.catalog import read_metrics

    summary = json.loads((demo / "fig" / "summary.json").read_text())
    catalog = _catalog(demo)
    last = catalog[~catalog["is_best"]].sort_values("epoch").groupby("run").tail(1).set_index("run")
    for pair in summary["awp_vs_base"]:
        m, seeds = pair["method"], pair["seeds"]
        for q in ("sharpness", "gap", "test_robust_acc"):
            base = [last.loc[f"{m}-seed{k}", q] for k in seeds]
            awp = [last.loc[f"{m}-awp-seed{k}", q] for k in seeds]
            ci = scipy.stats.ttest_rel(awp, base).confidence_interval(summary["confidence"])
            assert pair[q]["mean"] == pytest.approx(sum(awp) / len(awp) - sum(base) / len(base))
            assert (pair[q]["lo"], pair[q]["hi"]) == pytest.approx((ci.low, ci.high))
    o, runs = summary["overfitting"], demo / "work" / "runs"
    seeds = [r["seed"] for r in o["at"]]
    at_last = [read_metrics(runs / f"at-seed{k}")["test_robust_acc"].iloc[-1] for k in seeds]
    awp_last = [read_metrics(runs / f"at-awp-seed{k}")["test_robust_acc"].iloc[-1] for k in seeds]
    ci = scipy.stats.ttest_rel(awp_last, at_last).confidence_interval(summary["confidence"])
    d = o["awp_minus_at_test_last"]
    assert (d["lo"], d["hi"]) == pytest.approx((ci.low, ci.high))
    assert [r["test_last"] for r in o["at"]] == pytest.approx(at_last)
    report = (demo / "fig" / "report.md").read_text()
    assert f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" in report


def test_demo_resumes_without_retraining(demo):
    from analysis.demo import run_demo

    before = {p: p.stat().st_mtime_ns for p in (demo / "work" / "runs").rglob("*.pt")}
    run_demo(demo / "fig2", demo / "work", quick=True, workers=1, log=lambda m: None)
    after = {p: p.stat().st_mtime_ns for p in (demo / "work" / "runs").rglob("*.pt")}
    assert before == after  # complete runs are reused, not retrained
    assert json.loads((demo / "fig2" / "summary.json").read_text())["n_checkpoints"] >= 12


def test_notebook_runs_on_the_quick_demo(demo, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parents[1] / "notebooks" / "explore_landscape.ipynb"
    notebook = nbformat.read(path, as_version=4)
    monkeypatch.setenv("AWP_DEMO_WORK", str(demo / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(demo)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps([o.get("text", "") for o in outputs])
    assert "sharpness at |alpha| = 0.5" in text
    # The comparison figure is shown inline (no import-time backend choice hides it).
    assert any("image/png" in o.get("data", {}) for o in outputs)
