"""Bad and crafted inputs shared by the bad-input table (tests/test_bad_inputs.py) and the
safe-loading tests (tests/test_reliability.py): a tiny real run (val_size=0, so it has no
validation split) plus empty, truncated, garbage, wrong-architecture, foreign and crafted files."""
from __future__ import annotations

import os
import pickle
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
    return d
