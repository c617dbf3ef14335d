"""The quick demo end to end, its summary against scipy, and the notebook executed on its outputs."""
import json
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

pytestmark = pytest.mark.slow

FIGURES = ["fig_gap_over_epochs", "fig_at_epochs", "fig_methods", "fig_methods_awp", "fig_flatness_vs_gap", "fig_gamma"]


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


def test_summary_correlation_equals_scipy_on_the_checkpoints(demo):
    from analysis.catalog import collect_runs, unique_checkpoints

    summary = json.loads((demo / "fig" / "summary.json").read_text())
    runs = demo / "work" / "runs"
    catalog = collect_runs([p for p in runs.iterdir() if p.name != "standard"], demo / "work" / "landscapes")
    points = unique_checkpoints(catalog).dropna(subset=["sharpness", "gap"])
    assert summary["n_checkpoints"] == len(points) >= 12
    assert summary["spearman"] == pytest.approx(scipy.stats.spearmanr(points["sharpness"], points["gap"])[0])
    assert summary["kendall"] == pytest.approx(scipy.stats.kendalltau(points["sharpness"], points["gap"])[0])
    per = pd.DataFrame(summary["checkpoints"])
    assert set(per["run"]) >= {"at", "at-awp", "trades", "trades-awp", "mart", "mart-awp", "rst", "rst-awp"}
    assert (per["gap"] - (per["train_robust_acc"] - per["test_robust_acc"])).abs().max() < 1e-9


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
