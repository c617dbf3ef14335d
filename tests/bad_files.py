"""Bad and crafted inputs shared by the bad-input table (tests/test_bad_inputs.py) and the
safe-loading tests (tests/test_reliability.py): a tiny real run (val_size=0, so it has no
validation split) plus empty, truncated, garbage, wrong-architecture, foreign and crafted files,
damaged copies of the run, checkpoints that do not fit their data set, re-packed archives and
symlinks that lead nowhere."""
from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch

import awp_cli


class Evil:
    """Unpickling this calls os.system: what a malicious checkpoint from the internet would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_bad_files(d: Path) -> Path:
    """Write the files into ``d``; returns ``d``."""
    run = d / "runs" / "tiny"
    assert awp_cli.main(["train", "--preset", "digits-at", "epochs=2", "save_every=1", "eval_steps=1",
                         "val_size=0", "train_subset=100", "--out", str(run), "--quiet"]) == 0
    good = run / "epoch_001.pt"
    data = good.read_bytes()
    (d / "good.pt").write_bytes(data)
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "garbage.pt").write_bytes(b"this is not a checkpoint" * 10)
    (d / "folder.pt").mkdir()
    (d / "a_file").write_text("x")
    (d / "emptyruns").mkdir()
    (d / "junk" / "x").mkdir(parents=True)
    (d / "junk" / "x" / "notes.txt").write_text("hi")
    payload = torch.load(good, weights_only=True)
    wrong = dict(payload, model={("head." + k if k.startswith("features.0") else k): v
                                 for k, v in payload["model"].items()})
    torch.save(wrong, d / "wrong_keys.pt")
    torch.save(dict(payload, arch_kwargs={**payload["arch_kwargs"], "channels": [8, 16, 32]}), d / "wrong_arch.pt")
    torch.save({"weight": torch.zeros(3)}, d / "foreign.pt")
    # crafted: the payload sits in a checkpoint that otherwise looks right
    marker = d / "MARKER"
    torch.save({**payload, "metrics": Evil(marker)}, d / "evil.pt")
    torch.save({**payload, "model": Evil(marker)}, d / "evil_legacy.pt", _use_new_zipfile_serialization=False)
    with open(d / "evil.pickle", "wb") as handle:
        pickle.dump({"data": Evil(marker), "extrapolated_targets": [0]}, handle)
    # a run without any landscape, and one whose single checkpoint has a landscape
    single = d / "single" / "run"
    single.mkdir(parents=True)
    (single / "config.json").write_bytes((run / "config.json").read_bytes())
    (single / "epoch_001.pt").write_bytes(data)
    assert awp_cli.main(["landscape", str(single / "epoch_001.pt"), "--out", str(single / "land"), "--directions", "1",
                         "--alphas", "-0.5,0,0.5", "--samples", "16", "--steps", "1", "--quiet"]) == 0
    _make_damaged_runs(run, d / "damaged")
    _make_misfits(payload, d)
    return d


def repack(src: Path, dst: Path) -> None:
    """``src`` (a torch.save archive) re-zipped with its records deflated: what torch.load still reads."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for info in archive.infolist():
            out.writestr(info.filename, archive.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)


def _make_damaged_runs(run: Path, runs: Path) -> None:
    """Copies of the tiny run, each damaged in one way a --resume must refuse with one line."""
    last = torch.load(run / "last.pt", weights_only=True)
    for name, change in (("no_optimizer", lambda p: {k: v for k, v in p.items() if k != "optimizer"}),
                         ("text_epoch", lambda p: {**p, "epoch": "abc"}),
                         ("other_lr", lambda p: {**p, "config": {**p["config"], "lr": 0.5}})):
        copy = runs / name
        shutil.copytree(run, copy)
        torch.save(change(last), copy / "last.pt")
    (runs / "other_lr" / "config.json").unlink()  # only last.pt still says which config the run had
    shutil.copytree(run, runs / "bad_json")
    (runs / "bad_json" / "config.json").write_text('{"epochs": 2,')


def _make_misfits(payload: dict, d: Path) -> None:
    """Checkpoints that do not fit their data set, re-packed archives, and symlinks to nowhere."""
    from awp.models import build_model

    for name, kwargs in (("rgb_digits", {"in_channels": 3}), ("three_classes", {"num_classes": 3})):
        model = build_model("smallcnn", **{**payload["arch_kwargs"], "mean": None, "std": None, **kwargs})
        torch.save({**payload, "model": model.state_dict(), "arch_kwargs": model.arch_kwargs}, d / f"{name}.pt")
    torch.save(build_model("smallcnn").state_dict(), d / "rgb_foreign.pt")
    repack(d / "good.pt", d / "bomb.pt")
    os.symlink(d / "loop_b", d / "loop_a")
    os.symlink(d / "loop_a", d / "loop_b")
    os.symlink(d / "nowhere", d / "dangling")
