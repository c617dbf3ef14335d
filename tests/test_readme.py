"""The README's Python quickstart runs as written, and what it makes is what its comments say."""
import csv
import math
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"## Quickstart \(Python\)\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__quickstart__"}
    exec(compile(code, "README quickstart", "exec"), namespace)
    out = capsys.readouterr().out
    assert "pgd20" in out and "sharpness:" in out
    assert (tmp_path / "runs" / "quickstart" / "best.pt").exists()
    # A 10-epoch run: one metrics row per epoch, best.pt the epoch of the best validation robust accuracy.
    with open(tmp_path / "runs" / "quickstart" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    best = torch.load(tmp_path / "runs" / "quickstart" / "best.pt", weights_only=True)
    assert best["metrics"]["val_robust_acc"] == max(float(r["val_robust_acc"]) for r in rows)
    assert best["awp_gamma"] > 0  # digits-at-awp
    # The landscape: 3 directions x the 3 alphas asked for, a finite sharpness, the one printed.
    result = namespace["result"]
    assert len(result.table) == 3 * 3 and sorted(set(result.table["alpha"])) == [-0.5, 0.0, 0.5]
    sharpness = result.flatness["sharpness"]
    assert math.isfinite(sharpness) and f"sharpness: {sharpness}" in out
    # The hand-made AWP step ran: a finite perturbation of the weights and a finite loss.
    assert namespace["v"].tensors and all(torch.isfinite(t).all() for t in namespace["v"].tensors.values())
    assert math.isfinite(float(namespace["loss"].detach()))
