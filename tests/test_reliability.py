"""Reliability and safety: interruptions lose nothing, untrusted files cannot run code, every bad
input gets a clear answer (the README's "Files").

- Crash-safe writes: every file goes through :mod:`awp.io` (temporary file in the same folder,
  then ``os.replace``); a process killed at any instant leaves the old or the new file, never a
  torn one, and its temporary files can never be taken for real outputs.
- Exact resume: ``awp train`` and ``awp landscape`` killed with SIGKILL at seeded-random moments
  and resumed end bit-identical to an uninterrupted run; landscape points already done are reused.
- Safe loading: a crafted checkpoint (or RST pickle) whose unpickling would run code is refused
  and the code never runs.
- Numerical faults: a NaN loss stops training with epoch and step, keeps the last good
  checkpoint, and ``--resume`` continues.
- Clear errors: the table of bad inputs of every command is tests/test_bad_inputs.py.

Subprocesses run ``sys.executable -m awp_cli`` with ``OMP_NUM_THREADS=1`` (deterministic CPU kernels).
"""
from __future__ import annotations

import ast
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import awp_cli
from awp import io as aio
from awp.checkpoint import load_checkpoint
from awp.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
       "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "--preset", "digits-at", "epochs=6", "save_every=1", "eval_steps=2", "awp_gamma=0.01", "--quiet"]
LANDSCAPE = ["--alphas", "-1:1:9", "--directions", "2", "--samples", "64", "--steps", "3", "--quiet"]
TMP_NAME = re.compile(r"^\..+\.tmp$")


class Evil:
    """Unpickling this calls os.system: what a malicious checkpoint from the internet would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------------- helpers
def _awp(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "awp_cli", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(args: list[str]) -> float:
    """Run a command to completion; its wall time in seconds."""
    started = time.perf_counter()
    proc = _awp(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.perf_counter() - started


def _kill(proc: subprocess.Popen, after: float, sig: int = signal.SIGKILL) -> int:
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    proc.communicate(timeout=60)
    return proc.returncode


def _reject(constant: str):
    raise AssertionError(f"{constant} in a JSON file: not JSON")


def _check_files(folder: Path) -> list[Path]:
    """Every real file under ``folder`` loads; returns the temporary files (hidden, ``.tmp``)."""
    temps = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if TMP_NAME.match(path.name):
            temps.append(path)
            continue
        assert not path.name.startswith("."), f"hidden file that is not a temporary: {path}"
        data = path.read_bytes()
        if path.suffix == ".pt":
            assert isinstance(torch.load(path, weights_only=True), dict), path
        elif path.suffix == ".csv":
            assert len(pd.read_csv(path).columns) > 1, path
        elif path.suffix == ".json":  # strict JSON: NaN and Infinity are not JSON
            json.loads(data, parse_constant=_reject)
        elif path.suffix == ".png":
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), path
        elif path.suffix == ".pdf":
            assert data.rstrip().endswith(b"%%EOF"), path
        else:
            raise AssertionError(f"unexpected file {path}")
    return temps


def _assert_same(a, b, where: str = "") -> None:
    """Recursive bit-for-bit equality of checkpoint payloads (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"keys differ at {where}: {list(a)} vs {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# --------------------------------------------------------------------------- 1. atomic writes
def test_every_write_in_the_packages_goes_through_awp_io():
    """No module writes a file directly: open(..., 'w'), write_text, torch.save, savefig, to_csv(path)."""
    offenders = []
    for package in ("awp", "landscape", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "awp/io.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None)
                mode = next((k.value.value for k in node.keywords if k.arg == "mode"
                             and isinstance(k.value, ast.Constant)), mode)
                bad = (name in ("write_text", "write_bytes", "savefig", "dump")
                       or (name == "save" and owner in ("torch", "np", "numpy"))
                       or (name in ("savez", "savez_compressed") and node.args and not _is_buffer(node.args[0]))
                       or (name == "open" and isinstance(mode, str) and any(c in mode for c in "wax+"))
                       or (name in ("to_csv", "to_json", "to_parquet") and node.args))
                if bad:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, f"writes that bypass awp.io's atomic writes: {offenders}"


def _is_buffer(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and "buf" in node.id


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    aio.write_csv(target, [{"a": 1, "b": 2.5}])
    before = target.read_bytes()

    def torn(handle):
        handle.write(b"a,b\n1,")
        raise KeyboardInterrupt  # killed half way through writing

    with pytest.raises(KeyboardInterrupt):
        aio._atomic_write(target, torn)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_written_files_have_plain_permissions_and_exact_floats(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    rows = [{"x": 0.1 + 0.2, "y": 1 / 3}]
    aio.write_csv(tmp_path / "t.csv", rows)
    aio.atomic_write_json(tmp_path / "t.json", rows)
    for name in ("t.csv", "t.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert [float(v) for v in aio.read_csv_rows(tmp_path / "t.csv")[0].values()] == list(rows[0].values())
    assert json.loads((tmp_path / "t.json").read_text()) == rows


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer exists (reaped)
    stale = tmp_path / f".last.pt.{aio._HOST}-{proc.pid}.abcd1234.tmp"
    alive = tmp_path / f".last.pt.{aio._HOST}-{os.getppid()}.abcd1234.tmp"  # a live writer
    other = tmp_path / ".last.pt.otherhost-1.abcd1234.tmp"  # another machine's writer
    for p in (stale, alive, other):
        p.write_bytes(b"half a checkpoint")
    aio.atomic_write_text(tmp_path / "x.json", "{}")
    assert not stale.exists() and alive.exists() and other.exists()
    # what the toolkit's globs look for never matches a temporary file
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("epoch_*"))


WRITER = """
import sys, torch
from awp.io import atomic_torch_save
i = 0
while True:
    i += 1
    atomic_torch_save({"i": i, "w": torch.full((512, 512), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_readers_and_kills_never_see_a_torn_file(tmp_path):
    """A process rewriting a 1 MB checkpoint in a loop: concurrent reads and a SIGKILL see whole files."""
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline()  # the first version is in place
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            payload = torch.load(target, weights_only=True)
            assert torch.all(payload["w"] == payload["i"])
            seen.add(payload["i"])
        assert len(seen) > 1  # the file really was being rewritten under the reader
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    payload = torch.load(target, weights_only=True)
    assert torch.all(payload["w"] == payload["i"])
    assert all(TMP_NAME.match(p.name) for p in tmp_path.iterdir() if p.name != "last.pt")
    aio.atomic_torch_save({"i": 0}, target)  # the next write removes what the killed writer left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_write_into_a_file_path_is_one_clear_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        aio.atomic_write_json(tmp_path / "f" / "sub" / "x.json", {})


# ------------------------------------------------------------------------- 2. exact resume
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted small digits run (AT-AWP, 6 epochs) and its wall time."""
    run = tmp_path_factory.mktemp("reference") / "run"
    duration = _finish(TRAIN + ["--out", run])
    return run, duration


@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_bit_identical(reference, tmp_path):
    ref, duration = reference
    run = tmp_path / "run"
    rng = random.Random(2020)
    resumed = False
    epochs_seen = []
    for k in range(3):
        proc = _awp(TRAIN + ["--out", run] + (["--resume"] if resumed else []))
        resumed = True
        if k == 0:  # one kill surely mid-run, so that resuming from last.pt is exercised
            deadline = time.monotonic() + 120
            while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            code = _kill(proc, rng.uniform(0, duration / 10))
        else:
            code = _kill(proc, rng.uniform(0.3, duration))
        if code == 0:
            break  # it finished before the kill came
        assert code == -signal.SIGKILL
        if run.exists():
            _check_files(run)
            epochs_seen.append(len(pd.read_csv(run / "metrics.csv")) if (run / "metrics.csv").exists() else 0)
    print("epochs done after each kill:", epochs_seen)
    assert epochs_seen == sorted(epochs_seen) and epochs_seen[0] >= 1  # nothing finished is ever lost
    _finish(TRAIN + ["--out", run, "--resume"])
    assert not _check_files(run), "temporary files of killed processes were not cleaned up"

    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in run.iterdir()) == names
    for name in names:
        if name.endswith(".pt"):  # model, optimizer, RNG states, metrics: bit for bit
            _assert_same(torch.load(ref / name, weights_only=True), torch.load(run / name, weights_only=True), name)
    assert json.loads((ref / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    a, b = (pd.read_csv(p / "metrics.csv").drop(columns="time") for p in (ref, run))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resume_continues(tmp_path):
    """Schedulers send SIGTERM first: one line, exit 143, finished files kept, no temporaries."""
    run = tmp_path / "run"
    args = ["train", "--preset", "digits-at", "epochs=30", "eval_steps=1", "train_subset=100", "--quiet", "--out", run]
    proc = _awp(args)
    deadline = time.monotonic() + 60
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert len(err.strip().splitlines()) == 1 and "terminated" in err and "Traceback" not in err
    assert not _check_files(run)
    done = torch.load(run / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 30 and len(pd.read_csv(run / "metrics.csv")) >= done


def test_landscape_table_and_settings_never_pair_wrongly(tmp_path, monkeypatch):
    """Killed between writing landscape.csv and landscape.json: the new table beside the old settings
    must not be reused as the old result (a stale cache), and the partial table carries the new run."""
    from landscape import io as lio

    columns = ["direction", "alpha", "loss", "acc"]
    old = [{"direction": 0, "alpha": a, "loss": 1.0 + a * a, "acc": 0.5} for a in (-1.0, 0.0, 1.0)]
    new = [{"direction": 0, "alpha": a, "loss": 2.0 + a * a, "acc": 0.25} for a in (-1.0, 0.0, 1.0)]
    lio.save_result(tmp_path, old, columns, {"cache_key": "K", "points_total": 3})
    assert lio.load_done(tmp_path, "K") == old
    lio.save_partial(tmp_path, "K2", new)

    def killed(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(lio, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        lio.save_result(tmp_path, new, columns, {"cache_key": "K2", "points_total": 3})
    monkeypatch.undo()
    assert lio.load_done(tmp_path, "K") == []  # the old settings no longer describe the table
    assert lio.load_done(tmp_path, "K2") == new  # resumed from the partial table
    with pytest.raises(UserError, match="does not match"):
        lio.read_result(tmp_path)
    lio.save_result(tmp_path, new, columns, {"cache_key": "K2", "points_total": 3})
    df, info = lio.read_result(tmp_path)
    assert info["cache_key"] == "K2" and df["loss"].tolist() == [r["loss"] for r in new]
    assert not (tmp_path / lio.PARTIAL).exists()


@pytest.mark.slow
def test_landscape_killed_at_random_moments_resumes_without_recomputing(reference, tmp_path):
    ckpt = reference[0] / "last.pt"
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    duration = _finish(["landscape", ckpt, "--out", ref_out] + LANDSCAPE)
    partial = out / "last" / "landscape.partial.json"
    final = out / "last" / "landscape.json"

    def done() -> int:
        if final.exists() and not partial.exists():
            return json.loads(final.read_text())["points_total"]
        return len(json.loads(partial.read_text())["rows"]) if partial.exists() else 0

    rng = random.Random(7)
    history = []
    for k in range(3):
        proc = _awp(["landscape", ckpt, "--out", out] + LANDSCAPE)
        if k == 0:  # one kill surely mid-computation: as soon as the first point is saved
            deadline = time.monotonic() + 60
            while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            code = _kill(proc, 0)
        else:
            code = _kill(proc, rng.uniform(0.3, duration))
        if code == 0:
            break
        assert code == -signal.SIGKILL
        if out.exists():
            _check_files(out)
        history.append(done())
    print("points done after each kill:", history)
    assert history == sorted(history) and history[0] >= 1  # points done are kept
    before = done()
    _finish(["landscape", ckpt, "--out", out] + LANDSCAPE)
    assert not _check_files(out) and not partial.exists()

    info = json.loads(final.read_text())
    total = 2 * 9
    assert info["points_total"] == total
    assert info["points_reused"] == before and info["points_computed"] + before == total  # none recomputed
    assert (out / "last" / "landscape.csv").read_text() == (ref_out / "last" / "landscape.csv").read_text()
    ref_info = json.loads((ref_out / "last" / "landscape.json").read_text())
    assert info["flatness"] == ref_info["flatness"] and info["cache_key"] == ref_info["cache_key"]


# --------------------------------------------------------------------------- 3. safe loading


@pytest.mark.parametrize("name", ["evil.pt", "evil_legacy.pt"])
def test_crafted_checkpoint_is_refused_and_its_code_never_runs(bad_files, tmp_path, capsys, name):
    marker, path = bad_files / "MARKER", bad_files / name
    with pytest.raises(UserError, match="refusing to load") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "weights_only=False" in message and "save_checkpoint" in message
    for argv in (["eval", path, "--samples", "10"], ["landscape", path, "--out", tmp_path / "l"] + LANDSCAPE,
                 ["pseudo-label", path, "--out", tmp_path / "pl.npz"]):
        assert awp_cli.main([str(a) for a in argv]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refusing to load" in err and "Traceback" not in err
    assert not marker.exists()
    assert not list(tmp_path.iterdir())


def test_crafted_rst_pickle_is_refused(bad_files, tmp_path, capsys):
    from awp.data import load_unlabeled

    with pytest.raises(UserError, match="refusing to unpickle"):
        load_unlabeled(bad_files / "evil.pickle")
    argv = ["pseudo-label", bad_files / "good.pt", "--source", bad_files / "evil.pickle", "--out", tmp_path / "pl.npz"]
    assert awp_cli.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing to unpickle" in err
    assert not (bad_files / "MARKER").exists() and not (tmp_path / "pl.npz").exists()


def test_wrong_weights_name_missing_and_unexpected_keys(bad_files):
    with pytest.raises(UserError) as info:
        load_checkpoint(bad_files / "wrong_keys.pt")
    message = str(info.value)
    assert "missing (features.0" in message and "unexpected (head.features.0" in message, message


# ------------------------------------------------------------------------ 4. numerical faults
def test_nan_loss_stops_with_epoch_and_step_and_resume_works(tmp_path, capsys, monkeypatch):
    import awp.epoch_metrics
    import awp.methods
    import awp.train

    run = tmp_path / "run"
    argv = ["train", "--preset", "digits-at", "epochs=4", "save_every=1", "eval_steps=1", "train_subset=100",
            "--out", str(run), "--quiet"]
    measured, steps = [0], [0]
    forward, measure = awp.methods.AT.forward, awp.epoch_metrics.epoch_metrics

    def counting_measure(*args, **kwargs):
        measured[0] += 1
        return measure(*args, **kwargs)

    def faulty_forward(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if measured[0] >= 2:  # epoch 3 onwards
            steps[0] += 1
            if steps[0] >= 2:  # from its second step on
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(awp.train, "epoch_metrics", counting_measure)
    monkeypatch.setattr(awp.methods.AT, "forward", faulty_forward)
    assert awp_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "epoch 3" in err and "step 2" in err and "last.pt" in err, err
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and all(torch.isfinite(v).all() for v in last["model"].values()
                                      if v.is_floating_point())
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2]
    assert not (run / "epoch_003.pt").exists()
    assert not _check_files(run)

    monkeypatch.setattr(awp.methods.AT, "forward", forward)  # the fault is fixed
    assert awp_cli.main(argv + ["--resume"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 4
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2, 3, 4]


