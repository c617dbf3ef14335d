"""Every bad input gets one clear line on stderr, the right exit code, and leaves nothing behind."""
import os

import pytest
import torch

import awp_cli
from awp.checkpoint import save_checkpoint
from awp.config import TrainConfig
from awp.models import build_model


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.pt").write_bytes(b"")
    (d / "garbage.pt").write_bytes(b"this is not a checkpoint" * 10)
    (d / "folder.pt").mkdir()
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    config = TrainConfig(dataset="digits", model="smallcnn", train_subset=300, eps=0.2).to_dict()
    save_checkpoint(d / "good.pt", model, arch="smallcnn", arch_kwargs=model.arch_kwargs, dataset="digits",
                    method="at", awp_gamma=0.0, epoch=1, metrics={}, config=config)
    good = (d / "good.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    payload = torch.load(d / "good.pt", weights_only=True)
    payload["arch_kwargs"] = {**payload["arch_kwargs"], "channels": [8, 16, 32]}
    torch.save(payload, d / "wrong_arch.pt")
    torch.save({"model": Evil(d / "MARKER"), "arch": "smallcnn", "arch_kwargs": {}}, d / "evil.pt")
    (d / "readonly").mkdir()
    (d / "readonly" / "file").write_text("x")
    return d


CASES = [
    ("unknown preset", ["train", "--preset", "nope", "--out", "{out}"], 2, "unknown preset"),
    ("unknown key", ["train", "--preset", "digits-at", "epoch=3", "--out", "{out}"], 2, "unknown setting"),
    ("wrong type", ["train", "--preset", "digits-at", "epochs=three", "--out", "{out}"], 2, "not a valid int"),
    ("not key=value", ["train", "--preset", "digits-at", "epochs", "--out", "{out}"], 2, "key=value"),
    ("negative eps", ["train", "--preset", "digits-at", "eps=-0.1", "--out", "{out}"], 2, "eps must be >= 0"),
    ("gamma above 1", ["train", "--preset", "digits-at", "awp_gamma=1.5", "--out", "{out}"], 2, "awp_gamma"),
    ("unknown method", ["train", "--preset", "digits-at", "method=pgd", "epochs=1", "--out", "{out}"], 2, "unknown method"),
    ("unknown model", ["train", "--preset", "digits-at", "model=resnet9", "epochs=1", "--out", "{out}"], 2, "unknown model"),
    ("unknown data set", ["train", "--preset", "digits-at", "dataset=mnist", "--out", "{out}"], 2, "mnist"),
    ("missing data", ["train", "--preset", "cifar10-at", "--data-dir", "{d}/nodata", "--out", "{out}"], 1, "download"),
    ("no --out", ["train", "--preset", "digits-at"], 2, "--out"),
    ("out under a file", ["train", "--preset", "digits-at", "epochs=1", "eval_steps=1", "--out", "{d}/readonly/file/run"], 1, "cannot"),
    ("missing checkpoint", ["eval", "{d}/missing.pt"], 1, "not found"),
    ("empty checkpoint", ["eval", "{d}/empty.pt"], 1, "empty"),
    ("folder as checkpoint", ["eval", "{d}/folder.pt"], 1, "folder"),
    ("garbage checkpoint", ["eval", "{d}/garbage.pt"], 1, "cannot read checkpoint"),
    ("truncated checkpoint", ["eval", "{d}/truncated.pt"], 1, "truncated or corrupt"),
    ("wrong architecture", ["eval", "{d}/wrong_arch.pt"], 1, "do not fit the architecture"),
    ("code in checkpoint", ["eval", "{d}/evil.pt"], 1, "refusing to load"),
    ("unknown attack", ["eval", "{d}/good.pt", "--attacks", "pgd7"], 2, "pgd7"),
    ("bad eps", ["eval", "{d}/good.pt", "--eps", "big"], 2, "not a number"),
    ("unknown command", ["fly"], 2, "invalid choice"),
]


@pytest.mark.parametrize("name, argv, code, text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line(files, tmp_path, capsys, name, argv, code, text):
    out = tmp_path / "run"
    argv = [a.format(d=files, out=out) for a in argv]
    assert awp_cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and text in err
    assert not out.exists()  # nothing written, not even an empty run folder
    assert not (files / "MARKER").exists()  # the crafted checkpoint's code never ran


def test_debug_shows_the_traceback(files):
    with pytest.raises(Exception):
        awp_cli.main(["--debug", "eval", str(files / "missing.pt")])


def test_train_eval_and_pseudo_label_end_to_end(tmp_path, capsys):
    run = tmp_path / "std"
    assert awp_cli.main(["train", "--preset", "digits-standard", "epochs=3", "eval_steps=1", "--out", str(run), "--quiet"]) == 0
    assert awp_cli.main(["pseudo-label", str(run / "last.pt"), "--out", str(tmp_path / "pl.npz")]) == 0
    out = capsys.readouterr().out
    assert "pseudo-labeled" in out and "agreement" in out
    rst = tmp_path / "rst"
    assert awp_cli.main(["train", "--preset", "digits-rst-awp", f"unlabeled={tmp_path / 'pl.npz'}", "epochs=2",
                         "awp_warmup=1", "eval_steps=1", "--out", str(rst), "--quiet"]) == 0
    assert awp_cli.main(["eval", str(rst / "last.pt"), "--attacks", "natural,fgsm", "--samples", "50"]) == 0
    assert "fgsm" in capsys.readouterr().out

