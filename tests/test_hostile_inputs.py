"""Nothing lost, nothing written outside --out, no archive that unpacks to gigabytes, one line for
every bad value: the inputs a hostile or careless user crafts, each in the real format.

The one-line answers of single commands are rows of tests/test_bad_inputs.py; here are the cases
that need more than one command, a second process, a full disk or a memory measurement: an
earlier measures.json kept, output names that would escape --out, two trainings of one folder,
a killed training's lock, a full disk inside torch.save, weights that turn infinite without a
NaN loss, and archives whose records unpack to far more than the file holds.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import awp_cli
from bad_files import repack

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TINY = ["--preset", "digits-at", "epochs=2", "save_every=1", "eval_steps=1", "val_size=0", "train_subset=100"]
L = ["--directions", "1", "--alphas", "-0.5,0,0.5", "--samples", "16", "--steps", "1", "--quiet"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("awp: error: ") and "Traceback" not in err, err
    return err


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------- 1. nothing earlier lost
def test_a_second_measures_call_keeps_every_entry_still_valid(bad_files, tmp_path):
    out, argv = tmp_path / "m", ["measures", str(bad_files / "good.pt"), "--samples", "16", "--steps", "1", "--quiet"]
    assert awp_cli.main([*argv, "--out", str(out), "--measures", "weight_norm,logit_margin,input_gradient_norm"]) == 0
    first = json.loads((out / "good" / "measures.json").read_text())["measures"]
    assert awp_cli.main([*argv, "--out", str(out), "--measures", "weight_norm"]) == 0
    second = json.loads((out / "good" / "measures.json").read_text())
    assert set(second["measures"]) == {"weight_norm", "logit_margin", "input_gradient_norm"}
    for name in first:  # kept as they were, values and keys
        assert {k: v for k, v in second["measures"][name].items() if k != "computed"} == \
            {k: v for k, v in first[name].items() if k != "computed"}
    assert second["measures_computed"] == 0 and second["measures_reused"] == 1  # counted over what was asked
    # other samples make the earlier attack-based entries invalid: they go, weight_norm is recomputed
    assert awp_cli.main(["measures", str(bad_files / "good.pt"), "--samples", "8", "--steps", "1", "--quiet",
                         "--out", str(out), "--measures", "weight_norm"]) == 0
    assert set(json.loads((out / "good" / "measures.json").read_text())["measures"]) == {"weight_norm"}


# ------------------------------------------------------------ 2. nothing written outside --out
def test_output_names_stay_inside_out_and_apart(bad_files, tmp_path):
    source = (bad_files / "good.pt").read_bytes()
    inputs = tmp_path / "in"
    names = ["...pt", "curves.png.pt", "a b ü.pt", ".hidden.pt"]
    for name in names:
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(source)
    for run in ("run1", "run2"):  # the same file name in two run folders
        (inputs / run).mkdir()
        (inputs / run / "epoch_001.pt").write_bytes(source)
    checkpoints = [str(inputs / n) for n in names] + [str(inputs / r / "epoch_001.pt") for r in ("run1", "run2")]
    before = _files(tmp_path)
    out = tmp_path / "deep" / "out"
    assert awp_cli.main(["landscape", *checkpoints, "--out", str(out), *L]) == 0
    assert _files(tmp_path) - before == {"deep", "deep/out"} | {f"deep/out/{p}" for p in _files(out)}  # only under out
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == len(checkpoints) and all(not f.startswith(".") for f in folders), folders
    assert {"run1_epoch_001", "run2_epoch_001", "curves.png_checkpoint"} <= set(folders)
    assert (out / "curves.png").is_file()  # the overlay, not a checkpoint's folder
    assert all((out / f / "landscape.json").is_file() for f in folders)


def test_an_output_folder_that_links_outside_is_refused_before_work(bad_files, tmp_path, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "good")
    assert awp_cli.main(["landscape", str(bad_files / "good.pt"), "--out", str(out), *L]) == 1
    assert "outside --out" in _one_line(capsys)
    assert not any(elsewhere.iterdir())


# ------------------------------------------------------------------------ 3. one run per folder
def _start_training(out: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "awp_cli", "train", "--preset", "digits-at", "epochs=40", "save_every=1",
            "eval_steps=1", "train_subset=100", "--out", str(out), "--quiet"]
    return subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, "the training process ended early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_trainings_of_one_folder_and_a_killed_ones_lock(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start_training(out, tmp_path / "log")
    try:
        _wait_for(out / "last.pt", proc)
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in ("config.json", "meta.json")}
        for extra in ([], ["--resume"]):
            code = awp_cli.main(["train", "--preset", "digits-at", "epochs=40", "save_every=1", "eval_steps=1",
                                 "train_subset=100", "--out", str(out), "--quiet", *extra])
            assert code == 1 and "is being written by another `awp train`" in _one_line(capsys)
        assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # the other's files untouched
    finally:
        proc.kill()  # SIGKILL: no cleanup ran, and the kernel released the lock
        proc.wait()
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 40
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert awp_cli.main(["train", "--preset", "digits-at", "epochs=40", "save_every=1", "eval_steps=1",
                         "train_subset=100", "--out", str(out), "--quiet", "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 40 > done


# ---------------------------------------------------------------------------------- 4. archives
def test_records_declaring_more_than_the_file_are_refused(bad_files, tmp_path, capsys):
    data = bytearray((bad_files / "good.pt").read_bytes())
    central = data.index(b"PK\x01\x02")  # the first record's entry in the central directory
    struct.pack_into("<I", data, central + 24, 0x7FFFFFFF)  # its uncompressed size: 2 GB
    (tmp_path / "declared.pt").write_bytes(bytes(data))
    assert awp_cli.main(["eval", str(tmp_path / "declared.pt"), "--out", str(tmp_path / "e.json")]) == 1
    err = _one_line(capsys)
    assert "its records declare 2,147," in err and "bytes of the file" in err, err


def test_a_re_packed_archive_that_torch_would_read_is_refused_everywhere(bad_files, tmp_path, capsys):
    from awp.checkpoint import load_checkpoint, load_run
    from awp.errors import UserError
    from awp.robustbench import _robustbench

    bomb = bad_files / "bomb.pt"
    assert torch.load(bomb, weights_only=True)["arch"] == "smallcnn"  # torch itself unpacks it
    for load in (load_checkpoint, load_run):
        with pytest.raises(UserError, match="is compressed"):
            load(bomb)
    _robustbench()
    zoo = tmp_path / "models" / "cifar10" / "Linf"
    zoo.mkdir(parents=True)
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(16, 3, 3, 3)}}, tmp_path / "plain.pt")
    repack(tmp_path / "plain.pt", zoo / "Wu2020Adversarial_extra.pt")
    with pytest.raises(UserError, match="is compressed"):
        load_run("robustbench:Wu2020Adversarial_extra", model_dir=tmp_path / "models")


def _peak(args: list[str], tmp: Path) -> tuple[int, int, str]:
    """(exit code, peak RSS in KiB, stderr) of ``python args`` in its own process (os.wait4)."""
    with open(tmp / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss, (tmp / "stderr").read_text().strip()


@pytest.mark.slow
def test_a_small_file_that_unpacks_to_gigabytes_costs_less_than_a_healthy_eval(bad_files, tmp_path):
    payload = torch.load(bad_files / "good.pt", weights_only=True)
    big = dict(payload, metrics={"padding": torch.zeros(256 * 2**20, dtype=torch.uint8)})  # 256 MiB of zeros
    torch.save(big, tmp_path / "big.pt")
    repack(tmp_path / "big.pt", tmp_path / "bomb.pt")
    (tmp_path / "big.pt").unlink()
    assert (tmp_path / "bomb.pt").stat().st_size < 2**20  # under a MiB on disk
    code, healthy, err = _peak(["-m", "awp_cli", "eval", str(bad_files / "good.pt"), "--samples", "20",
                                "--attacks", "clean", "--out", str(tmp_path / "good.json")], tmp_path)
    assert code == 0, err
    code, peak, err = _peak(["-m", "awp_cli", "eval", str(tmp_path / "bomb.pt"), "--out", str(tmp_path / "e.json")],
                            tmp_path)
    assert code == 1 and "is compressed" in err and len(err.splitlines()) == 1, err
    assert peak <= healthy, f"{peak // 1024} MiB > healthy eval {healthy // 1024} MiB"


# ---------------------------------------------------------------- 5. never save what is broken
def test_weights_that_turn_infinite_without_a_nan_loss_are_never_saved(tmp_path, capsys, monkeypatch):
    import awp.train

    out = tmp_path / "run"
    real = awp.train.train_step
    calls = {"steps": 0}

    def breaking(model, optimizer, *args, **kwargs):  # the last step of epoch 2 leaves an inf weight
        stats = real(model, optimizer, *args, **kwargs)
        calls["steps"] += 1
        if calls["steps"] == 2 * 4:  # 100 images in batches of 32: 4 steps an epoch
            with torch.no_grad():
                next(p for p in model.parameters() if p.dim() > 1).view(-1)[0] = float("inf")
        return stats

    monkeypatch.setattr(awp.train, "train_step", breaking)
    assert awp_cli.main(["train", "--preset", "digits-at", "epochs=3", "save_every=1", "eval_steps=1",
                         "batch_size=32", "train_subset=100", "--out", str(out), "--quiet"]) == 1
    err = _one_line(capsys)
    assert "non-finite weights after epoch 2" in err and "the last good checkpoint is" in err and "(epoch 1)" in err
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(t).all() for t in last["model"].values())
    assert not (out / "epoch_002.pt").exists()
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1


def test_resuming_from_nan_weights_does_not_suggest_a_flag_train_lacks(bad_files, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(bad_files / "runs" / "tiny", run)
    last = torch.load(run / "last.pt", weights_only=True)
    last["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in last["model"].items()}
    torch.save(last, run / "last.pt")
    assert awp_cli.main(["train", *TINY, "--out", str(run), "--resume"]) == 1
    err = _one_line(capsys)
    assert "NaN or infinite" in err and "new --out" in err and "--allow-nonfinite" not in err


# ---------------------------------------------------------------------------- 10. a full disk
def test_a_full_disk_inside_torch_save_is_one_line_and_loses_nothing(tmp_path, capsys, monkeypatch):
    import awp.io

    out, straight = tmp_path / "run", tmp_path / "straight"
    argv = ["train", "--preset", "digits-at", "epochs=3", "save_every=1", "eval_steps=1", "train_subset=100",
            "--quiet"]
    assert awp_cli.main([*argv, "--out", str(straight)]) == 0
    real, saves = tempfile.mkstemp, {"n": 0}

    def full_disk(*args, **kwargs):  # from the 7th checkpoint on (epoch 3) every write meets ENOSPC
        fd, path = real(*args, **kwargs)
        if ".pt." in kwargs.get("prefix", ""):  # the temporary of a checkpoint: .last.pt.HOST-PID.XXXX.tmp
            saves["n"] += 1
            if saves["n"] >= 7:
                os.close(fd)
                return os.open("/dev/full", os.O_WRONLY), path
        return fd, path

    monkeypatch.setattr(awp.io.tempfile, "mkstemp", full_disk)
    assert awp_cli.main([*argv, "--out", str(out)]) == 1
    err = _one_line(capsys)
    assert "No space left on device" in err and "MiB free on" in err and str(out) in err, err
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2  # the old file, whole
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert awp_cli.main([*argv, "--out", str(out), "--resume"]) == 0
    ours, theirs = (torch.load(f / "last.pt", weights_only=True)["model"] for f in (out, straight))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # resumed bit for bit
