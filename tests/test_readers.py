"""Damaged inputs of `awp correlate` / `awp figures` (issue 18): every file analysis reads is checked
by its reader, and a hand-edited or damaged one is one line on stderr naming the file, exit status
1, nothing written under --out and the inputs untouched, never a traceback or a row silently lost.

The inputs are real: a three-epoch run of `awp train`, the landscapes of its checkpoints (`awp
landscape`) and their measures (`awp measures`), built once; each case damages one file of a copy.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import torch

import awp_cli

CKPTS = ("epoch_001.pt", "epoch_002.pt", "epoch_003.pt")
QUIET = ["--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """runs/at (3 epochs, a checkpoint each), lands/ (a landscape per checkpoint), meas/ (weight_norm)."""
    root = tmp_path_factory.mktemp("readers")
    run = root / "runs" / "at"
    assert awp_cli.main(["train", "--preset", "digits-at", "epochs=3", "save_every=1", "eval_steps=1", "val_size=0",
                         "train_subset=100", "--out", str(run), *QUIET]) == 0
    ckpts = [str(run / c) for c in CKPTS]
    assert awp_cli.main(["landscape", *ckpts, "--out", str(root / "lands"), "--directions", "1", "--alphas",
                         "-0.5,0,0.5", "--samples", "16", "--steps", "1", *QUIET]) == 0
    assert awp_cli.main(["measures", *ckpts, "--out", str(root / "meas"), "--measures", "weight_norm",
                         "--samples", "16", "--steps", "1", *QUIET]) == 0
    return root


def _commands(c: Path, out: Path) -> dict[str, list[str]]:
    common = ["--runs", str(c / "runs"), "--landscapes", str(c / "lands")]
    return {"correlate": ["correlate", *common, "--n-boot", "20", "--out", str(out / "correlation.csv")],
            "figures": ["figures", *common, "--out", str(out / "fig")],
            "ranking": ["correlate", *common, "--measures", str(c / "meas"), "--n-boot", "20",
                        "--ranking-dir", str(out / "rank")]}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ ways to damage
def _json(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Rewrite a JSON file with ``change(value)`` (its return value, or the value changed in place)."""
    def damage(path: Path) -> None:
        value = json.loads(path.read_text())
        changed = change(value)
        path.write_text(json.dumps(value if changed is None else changed))
    return damage


def _text(text: str | bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _metrics_cell(column: str, value: str) -> Callable[[Path], None]:
    """metrics.csv with ``value`` in ``column`` of its second epoch (line 3 of the file)."""
    def damage(path: Path) -> None:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df.loc[1, column] = value
        path.write_text(df.to_csv(index=False))
    return damage


def _checkpoint(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        change(payload)
        torch.save(payload, path)
    return damage


def _drop(key: str) -> Callable[[Path], None]:
    return _json(lambda d: d.pop(key) and None)


def _landscape_table(path: Path) -> None:
    """landscape.csv (direction, alpha, loss, acc) with a word for its second loss, and
    landscape.json's csv_sha256 updated to match (a careful hand edit): only the table's check
    can catch it."""
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[2] = "high"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    info = json.loads((path.parent / "landscape.json").read_text())
    info["csv_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / "landscape.json").write_text(json.dumps(info))


LAND, TABLE = "lands/epoch_002/landscape.json", "lands/epoch_002/landscape.csv"
CONFIG, METRICS = "runs/at/config.json", "runs/at/metrics.csv"
CKPT, MEAS = "runs/at/epoch_002.pt", "meas/epoch_002/measures.json"
BOTH, FIGURES, RANKING = ("correlate", "figures"), ("figures",), ("ranking",)
DAMAGES = [  # (id, the file damaged and named, damage, the commands that read it, what the line says)
    ("landscape flatness a list", LAND, _json(lambda d: d.update(flatness=[0.1, 0.2])), BOTH,
     "flatness must be an object, got list"),
    ("landscape sharpness a word", LAND, _json(lambda d: d["flatness"].update(sharpness="high")), BOTH,
     "flatness.sharpness must be a number, got str 'high'"),
    ("landscape attack a string", LAND, _json(lambda d: d["settings"].update(attack="pgd10")), BOTH,
     "settings.attack must be an object, got str 'pgd10'"),
    ("landscape samples not whole", LAND, _json(lambda d: d["settings"].update(samples=16.5)), BOTH,
     "settings.samples must be a whole number"),
    ("landscape settings a list", LAND, _json(lambda d: d.update(settings=["x"])), BOTH,
     "settings must be an object"),
    ("landscape not an object", LAND, _json(lambda d: [d]), BOTH, "must hold a JSON object"),
    ("landscape not JSON", LAND, _text('{"flatness": {'), BOTH, "cannot read"),
    ("landscape names no checkpoint", LAND, _drop("checkpoint_sha256"), BOTH,
     "names no checkpoint"),
    ("landscape checkpoint digest a number", LAND, _json(lambda d: d.update(checkpoint_sha256=7)), BOTH,
     "checkpoint_sha256 must be a string"),
    ("landscape table edited", TABLE, _text("direction,alpha,loss,acc\n0,0.0,1.0,0.5\n"), BOTH,
     "does not match landscape.json"),
    ("landscape table with a word", TABLE, _landscape_table, BOTH, "column 'loss' must hold numbers, got 'high'"),
    ("config not JSON", CONFIG, _text("epochs = 3"), BOTH, "cannot read"),
    ("config a list", CONFIG, _text("[1, 2]"), BOTH, "must hold a JSON object"),
    ("config epochs a word", CONFIG, _json(lambda d: d.update(epochs="abc")), BOTH,
     "epochs must be a whole number, got str 'abc'"),
    ("config seed a float", CONFIG, _json(lambda d: d.update(seed=0.5)), BOTH, "seed must be a whole number"),
    ("config milestones a string", CONFIG, _json(lambda d: d.update(lr_milestones="0.5")), BOTH,
     "lr_milestones must be a list of numbers"),
    ("checkpoint epoch a word", CKPT, _checkpoint(lambda p: p.update(epoch="abc")), BOTH,
     "epoch must be a whole number, got str 'abc'"),
    ("checkpoint metrics a list", CKPT, _checkpoint(lambda p: p.update(metrics=[0.5])), BOTH,
     "metrics must be an object"),
    ("checkpoint robust accuracy a word", CKPT, _checkpoint(lambda p: p["metrics"].update(test_robust_acc="high")),
     BOTH, "metrics.test_robust_acc must be a number"),
    ("checkpoint method a number", CKPT, _checkpoint(lambda p: p.update(method=3)), BOTH,
     "method must be a string"),
    ("checkpoint gamma a string", CKPT, _checkpoint(lambda p: p.update(awp_gamma="0.01")), BOTH,
     "awp_gamma must be a number"),
    ("checkpoint config epochs a word", CKPT, _checkpoint(lambda p: p["config"].update(epochs="x")), BOTH,
     "config.epochs must be a whole number"),
    ("checkpoint config cannot rebuild", CKPT, _checkpoint(lambda p: p.update(metrics={}, config={"eps": 5.0})),
     BOTH, "its training config cannot rebuild the run"),
    ("metrics empty", METRICS, _text(b""), FIGURES, "is empty"),
    ("metrics binary", METRICS, _text(bytes(range(256)) * 4), FIGURES, "metrics.csv"),
    ("metrics word for a number", METRICS, _metrics_cell("test_robust_acc", "abc"), FIGURES,
     "column 'test_robust_acc' must hold numbers, got 'abc' on line 3"),
    ("metrics without epochs", METRICS, _text("a,b\n1,2\n"), FIGURES, "has no 'epoch' column"),
    ("measures a list", MEAS, _json(lambda d: d.update(measures=[1.0])), RANKING, "measures must be an object"),
    ("measure value a word", MEAS, _json(lambda d: d["measures"]["weight_norm"].update(value="big")), RANKING,
     "measures.weight_norm.value must be a number, got str 'big'"),
    ("measure entry a number", MEAS, _json(lambda d: d["measures"].update(weight_norm=1.5)), RANKING,
     "measures.weight_norm must be an object"),
    ("measures not JSON", MEAS, _text("{"), RANKING, "cannot read"),
    ("measures name no checkpoint", MEAS, _drop("checkpoint_sha256"), RANKING,
     "has no checkpoint_sha256"),
]


def test_undamaged_inputs_give_every_output(made, tmp_path, capsys):
    """The control: the same commands on an undamaged copy succeed and write their outputs."""
    c, out = tmp_path / "copy", tmp_path / "out"
    shutil.copytree(made, c)
    for name, argv in _commands(c, out).items():
        assert awp_cli.main(argv) == 0, (name, capsys.readouterr().err)
    assert (out / "correlation.csv").is_file() and (out / "rank" / "measure_ranking.csv").is_file()
    for name in ("fig_gap_over_epochs", "fig_at_epochs", "fig_flatness_vs_gap", "correlation"):
        assert (out / "fig" / f"{name}.csv").is_file(), name


@pytest.mark.parametrize("case, rel, damage, commands, text", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_damaged_input_is_one_line_naming_the_file(made, tmp_path, capsys, case, rel, damage, commands, text):
    c, out = tmp_path / "copy", tmp_path / "out"
    shutil.copytree(made, c)
    damage(c / rel)
    before = _snapshot(c)
    for command in commands:
        assert awp_cli.main(_commands(c, out)[command]) == 1, (command, capsys.readouterr().err)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("awp: error: ") and "Traceback" not in err, err
        assert str(c / rel) in err and text in err, err
        assert not out.exists(), sorted(out.rglob("*"))  # nothing written, not even an empty folder
    assert _snapshot(c) == before  # the inputs are untouched


def test_correlate_does_not_read_metrics_csv(made, tmp_path, capsys):
    """`awp correlate` takes the gap from the checkpoints: a damaged metrics.csv does not stop it,
    while `awp figures`, which draws from it, names it."""
    c, out = tmp_path / "copy", tmp_path / "out"
    shutil.copytree(made, c)
    (c / METRICS).write_bytes(b"")
    assert awp_cli.main(_commands(c, out)["correlate"]) == 0, capsys.readouterr().err
    assert awp_cli.main(_commands(c, out)["figures"]) == 1
    assert str(c / METRICS) in capsys.readouterr().err


# ----------------------------------------------------------------------------- reader contracts
def test_load_done_counts_a_damaged_result_as_nothing_done(made, tmp_path):
    """The cache's reader keeps its contract: what read_result refuses is 'nothing done', not an error."""
    from awp.errors import UserError
    from landscape import io as lio

    source = made / "lands" / "epoch_002"
    folder = tmp_path / "land"
    shutil.copytree(source, folder)
    key = json.loads((folder / lio.JSON).read_text())["cache_key"]
    rows = lio.load_done(folder, key)
    assert [r["alpha"] for r in rows] == [-0.5, 0.0, 0.5]  # 1 direction x 3 alphas
    # Damaged scalars beside an intact table under the same key: the points are reused (and the
    # scalars computed again from them), while read_result refuses the file.
    _json(lambda d: d.update(flatness=[1]))(folder / lio.JSON)
    with pytest.raises(UserError, match="flatness must be an object"):
        lio.read_result(folder)
    assert lio.load_done(folder, key) == rows
    for damage, says in ((_json(lambda d: [d]), "must hold a JSON object"), (_text("{"), "cannot read"),
                         (_drop("cache_key"), "does not match")):
        shutil.copy(source / lio.JSON, folder / lio.JSON)
        damage(folder / lio.JSON)
        assert lio.load_done(folder, key) == []  # nothing done: every point is computed again
        if says != "does not match":
            with pytest.raises(UserError, match=says):
                lio.read_result(folder)
    shutil.copy(source / lio.JSON, folder / lio.JSON)
    (folder / lio.CSV).write_bytes(bytes(range(256)))
    assert lio.load_done(folder, key) == []
    with pytest.raises(UserError, match="does not match"):
        lio.read_result(folder)


def test_a_checkpoint_without_an_epoch_is_epoch_minus_one(made, tmp_path):
    """Imported checkpoints store epoch None (awp import-checkpoint); the catalog no longer crashes on it."""
    from analysis.catalog import collect_runs

    run = tmp_path / "run"
    shutil.copytree(made / "runs" / "at", run)
    _checkpoint(lambda p: p.update(epoch=None))(run / "epoch_003.pt")
    df = collect_runs(run).set_index("file")["epoch"]
    # last.pt (epoch 3) is a row again: no other checkpoint of the run now covers its epoch
    assert df.to_dict() == {"epoch_001.pt": 1, "epoch_002.pt": 2, "epoch_003.pt": -1, "last.pt": 3}


def test_metrics_reader_keeps_empty_cells_and_header_only_files(made, tmp_path):
    """What a run writes stays readable: the validation columns of a run without a validation split
    ('nan', or empty cells) are NaN, a header without rows is an empty table; the gap is train minus
    test robust accuracy, row by row."""
    from analysis.readers import read_metrics

    run = tmp_path / "run"
    shutil.copytree(made / "runs" / "at", run)
    raw = pd.read_csv(run / "metrics.csv", dtype=str, keep_default_na=False)
    assert set(raw["val_robust_acc"]) == {"nan"}  # val_size=0
    for text in ("nan", ""):
        (run / "metrics.csv").write_text(raw.replace("nan", text).to_csv(index=False))
        m = read_metrics(run)
        assert m["val_robust_acc"].isna().all() and list(m["epoch"]) == [1, 2, 3]
        gap = raw["train_robust_acc"].astype(float) - raw["test_robust_acc"].astype(float)
        assert (m["gap"] == gap).all()
    (run / "metrics.csv").write_text(",".join(raw.columns) + "\n")
    assert read_metrics(run).empty
