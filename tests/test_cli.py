"""The commands end to end, as the README's offline rows run them: train a standard model,
pseudo-label the pool it did not use, train RST-AWP on the labels, evaluate; each output file
holds what the README's "Files" section says.

Bad inputs of every command are tests/test_bad_inputs.py."""

import contextlib
import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import awp_cli
from awp.checkpoint import load_checkpoint
from awp.data import build_dataset

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
ACCURACIES = [f"{split}_{kind}_acc" for split in ("train", "val", "test") for kind in ("clean", "robust")]


def _metrics(run):
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _check_metrics(run, epochs, eps):
    """One row per epoch, finite accuracies in [0, 1] and losses, the attack named with its eps."""
    rows = _metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for row in rows:
        for key in ACCURACIES + ["train_batch_adv_acc"]:
            assert 0.0 <= float(row[key]) <= 1.0, (key, row[key])
        for key in [k for k in row if k.endswith("_loss")]:
            assert math.isfinite(float(row[key])) and float(row[key]) >= 0, (key, row[key])
        assert float(row["lr"]) > 0
        assert row["attack"].startswith("pgd1-linf ") and f"eps={eps:g} " in row["attack"], row["attack"]
    return rows


def _pool(config):
    """The training images the run did not use, rebuilt from the run's own config."""
    return build_dataset(config["dataset"], val_size=config["val_size"], train_subset=config["train_subset"],
                         split_seed=config["split_seed"]).pool


def _main(argv):
    """Run a command as the console does; (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = awp_cli.main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The README's offline commands, shortened: std (3 epochs), pool.npz, RST-AWP (2 epochs), eval."""
    root = tmp_path_factory.mktemp("cli")
    std, rst, labels = root / "std", root / "rst", root / "pl.npz"
    outs = {}
    for name, argv in (
            ("std", ["train", "--preset", "digits-standard", "epochs=3", "eval_steps=1", "--out", std, "--quiet"]),
            ("pseudo-label", ["pseudo-label", std / "last.pt", "--out", labels]),
            ("rst", ["train", "--preset", "digits-rst-awp", f"unlabeled={labels}", "epochs=2", "awp_warmup=1",
                     "eval_steps=1", "--out", rst, "--quiet"]),
            ("eval", ["eval", rst / "last.pt", "--attacks", "natural,fgsm", "--samples", "50"])):
        code, outs[name] = _main(argv)
        assert code == 0, (name, outs[name])
    return {"std": std, "rst": rst, "labels": labels, "out": outs}


def test_standard_run_writes_one_row_per_epoch_with_clean_equal_to_robust(cli):
    run = cli["std"]
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["eval_steps"], config["eps"], config["awp_gamma"]) == (3, 1, 0.0, 0.0)
    rows = _check_metrics(run, 3, eps=0.0)
    for row in rows:  # eps 0: the "robust" accuracy is the clean one, and no AWP
        assert row["awp_active"] == "0"
        for split in ("train", "val", "test"):
            assert row[f"{split}_robust_acc"] == row[f"{split}_clean_acc"], split
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3


def test_pseudo_labels_are_the_standard_models_predictions_on_the_whole_pool(cli):
    out = cli["out"]["pseudo-label"]
    assert "pseudo-labeled" in out and "agreement" in out
    config = json.loads((cli["std"] / "config.json").read_text())
    pool = _pool(config)
    with np.load(cli["labels"], allow_pickle=False) as archive:
        images, labels = torch.from_numpy(archive["images"]), torch.from_numpy(archive["labels"])
    # As many labels as the pool holds, each the standard model's eval-mode prediction on its image.
    assert len(labels) == len(images) == len(pool) > 0
    assert torch.equal(images, pool.images)
    assert labels.dtype == torch.int64 and int(labels.min()) >= 0 and int(labels.max()) < 10
    model, _ = load_checkpoint(cli["std"] / "last.pt")
    with torch.no_grad():
        logits = model.eval()(pool.images)
    top2 = logits.topk(2, dim=1).values
    differ = labels != logits.argmax(dim=1)
    assert not differ.any() or float((top2[differ, 0] - top2[differ, 1]).max()) < 1e-5  # only exact ties may differ
    agreement = float((labels == pool.labels).float().mean())
    assert f"{len(pool)} " in out and f"{agreement:.3f}" in out, out
    readme_pool = re.search(r"# the (\d+) training images the runs do not use", README.read_text())
    assert int(readme_pool.group(1)) == len(pool)


def test_rst_awp_run_trains_on_the_labels_with_awp_after_its_warmup(cli):
    run = cli["rst"]
    config = json.loads((run / "config.json").read_text())
    assert (config["method"], config["unlabeled"], config["epochs"], config["awp_warmup"]) == (
        "rst", str(cli["labels"]), 2, 1)
    assert config["awp_gamma"] > 0
    rows = _check_metrics(run, 2, eps=config["eps"])
    assert [r["awp_active"] for r in rows] == ["0", "1"]  # awp_warmup=1: one epoch without AWP
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_eval_json_names_each_attack_and_eps_and_holds_the_plain_accuracy(cli):
    out, run = cli["out"]["eval"], cli["rst"]
    assert "fgsm" in out
    config = json.loads((run / "config.json").read_text())
    result = json.loads((run / "last.eval.json").read_text())  # default --out: next to the checkpoint
    assert result["sha256"] == hashlib.sha256((run / "last.pt").read_bytes()).hexdigest()
    assert (result["method"], result["awp_gamma"], result["epoch"]) == ("rst", config["awp_gamma"], 2)
    assert (result["split"], result["samples"], result["norm"]) == ("test", 50, "linf")
    assert result["eps"] == config["eps"]  # digits: the training eps
    assert list(result["results"]) == ["clean", "fgsm"]  # "natural" is the tables' word for clean
    for name, entry in result["results"].items():
        assert 0.0 <= entry["accuracy"] <= 1.0 and entry["accuracy"] * 50 == pytest.approx(
            round(entry["accuracy"] * 50), abs=1e-9), name
        assert f"{entry['accuracy']:.2%}" in out, name  # the printed table
    fgsm = result["results"]["fgsm"]["attack"]
    assert "FGSM" in fgsm and f"eps={config['eps']:g}" in fgsm, fgsm
    assert "clean" in result["results"]["clean"]["attack"]
    # The clean accuracy is the plain one of the checkpoint's model on the first 50 test images.
    model, _ = load_checkpoint(run / "last.pt")
    test = build_dataset(config["dataset"], val_size=config["val_size"], train_subset=config["train_subset"],
                         split_seed=config["split_seed"]).test
    with torch.no_grad():
        correct = (model.eval()(test.images[:50]).argmax(dim=1) == test.labels[:50]).sum()
    assert result["results"]["clean"]["accuracy"] == pytest.approx(int(correct) / 50, abs=1e-12)
