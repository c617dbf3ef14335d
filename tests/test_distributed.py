"""Distributed training and sharded landscapes on CPU with gloo (2 processes), against one process.

The reference is always a single process on the same global batch. Equality needs computations
that are mathematically the same in both: the models have no BatchNorm (each example's output
depends on that example alone) or SyncBatchNorm (statistics of the global batch), and the attacks
have no random start (``random_start='none'`` in the step test, ``eps=0`` in the end-to-end
``awp train`` test, where the preset's attack keeps its uniform start) -- a random start is
drawn per process and cannot match the single-process draw.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from awp import distributed
from awp.methods import get_method
from awp.models import build_model
from awp.perturbation import AdversarialWeightPerturbation
from awp.train import train_step

ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, 16, 9)  # global batches; the last one splits 5 + 4 across two ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in SIZES]


def _model(batchnorm: bool):
    torch.manual_seed(3)
    return build_model("smallcnn", num_classes=10, in_channels=1, channels=[8, 8, 8], batchnorm=batchnorm)


def _train(model, rank: int = 0, world: int = 1):
    """Three AT-AWP steps on the global batches of SIZES; this rank's share of each."""
    method = get_method("at", eps=0.1, step_size=0.05, steps=2, random_start="none")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    awp = AdversarialWeightPerturbation(model, gamma=0.02)
    wrapped = DistributedDataParallel(model) if world > 1 else model
    losses = []
    for x, y in _data():
        xs, ys = x[rank::world], y[rank::world]
        stats = train_step(wrapped, optimizer, method, xs, ys, awp, loss_scale=len(ys) * world / len(y))
        losses.append(stats["loss"])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, losses


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        plain, _ = _train(_model(batchnorm=False), rank, world)
        sync_model = distributed.convert_sync_batchnorm(_model(batchnorm=True))
        synced, _ = _train(sync_model, rank, world)
        torch.save({"plain": plain, "sync": synced}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_awp_steps_equal_single_process(tmp_path):
    """AT-AWP steps under DDP (2 x gloo) give the single-process weights; SyncBN: close, stats too."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for kind in ("plain", "sync"):  # the ranks hold the same weights, bit for bit
        for name, value in ranks[0][kind].items():
            assert torch.equal(value, ranks[1][kind][name]), (kind, name)
    reference, _ = _train(_model(batchnorm=False))
    for name, value in reference.items():
        torch.testing.assert_close(ranks[0]["plain"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    start = _model(batchnorm=False).state_dict()
    assert any(not torch.equal(start[n], reference[n]) for n in reference)  # the steps did move
    reference_bn, _ = _train(_model(batchnorm=True))
    for name, value in reference_bn.items():  # weights and BN running statistics
        torch.testing.assert_close(ranks[0]["sync"][name].double(), value.double(), rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_single_process_session_does_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session() as on:
        assert not on and not dist.is_initialized()
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    x = torch.ones(3)
    assert distributed.all_reduce_sum(x) is x and torch.equal(x, torch.ones(3))
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]


def test_sync_batchnorm_alone_is_batchnorm():
    """Without a process group the CPU SyncBatchNorm is plain BatchNorm (same keys, same outputs)."""
    model = _model(batchnorm=True)
    converted = distributed.convert_sync_batchnorm(_model(batchnorm=True))
    assert list(model.state_dict()) == list(converted.state_dict())
    assert any(isinstance(m, distributed.SyncBatchNorm) for m in converted.modules())
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[name], value, rtol=0, atol=0)


# ------------------------------------------------------------------------- torchrun, end to end


def _torchrun(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "awp_cli", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


TRAIN = ["model=smallcnn", 'model_kwargs={"channels": [8, 8, 8], "batchnorm": false}', "train_subset=40",
         "val_size=20", "batch_size=16", "epochs=2", "eps=0", "attack_steps=2", "eval_steps=2",
         "eval_train_samples=40", "eval_test_samples=40", "save_every=1", "device=cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same AT-AWP run, once in this process and once with torchrun (2 gloo processes)."""
    from awp.config import load_preset, parse_overrides
    from awp.train import fit

    root = tmp_path_factory.mktemp("ddp")
    fit(load_preset("digits-at-awp", parse_overrides(TRAIN)), root / "single", progress=False)
    done = _torchrun("train", "--preset", "digits-at-awp", *TRAIN, "--out", str(root / "ddp"), "--quiet")
    return root, done


@pytest.mark.slow
def test_torchrun_train_equals_single_process(runs):
    from awp.io import read_csv_rows

    root, done = runs
    single, ddp = (torch.load(root / r / "last.pt", weights_only=True) for r in ("single", "ddp"))
    assert ddp["epoch"] == single["epoch"] == 2 and len(ddp["rng_ranks"]) == 2
    for name, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    rows = [read_csv_rows(root / r / "metrics.csv") for r in ("single", "ddp")]
    assert [r["epoch"] for r in rows[1]] == ["1", "2"]  # rank 0 alone wrote: one row per epoch
    for a, b in zip(*rows):  # eps=0: every metric is deterministic, so the reduced ones match
        for key in ("train_batch_loss", "train_clean_acc", "test_clean_loss", "val_robust_acc"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
    assert sorted(p.name for p in (root / "ddp").iterdir()) == sorted(p.name for p in (root / "single").iterdir())


@pytest.mark.slow
def test_torchrun_landscape_equals_single_process(runs):
    import awp_cli

    root, _ = runs
    args = [str(root / "single" / "last.pt"), "--directions", "2", "--alphas", "-0.5,0,0.5,1",
            "--samples", "24", "--steps", "2", "--eps", "0.1", "--device", "cpu", "--quiet"]
    assert awp_cli.main(["landscape", *args, "--out", str(root / "ls1")]) == 0
    _torchrun("landscape", *args, "--out", str(root / "ls2"))
    one, two = (root / f / "last" for f in ("ls1", "ls2"))
    assert (two / "landscape.csv").read_text() == (one / "landscape.csv").read_text()
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not (two / "landscape.partial.json").exists() or (one / "landscape.partial.json").exists()


@pytest.mark.slow
def test_torchrun_resume_after_kill_is_bit_identical(tmp_path):
    """A 2-process run killed mid-training and resumed with --resume ends bit-identical to an
    uninterrupted 2-process run (every rank restores its own RNG state from last.pt)."""
    import signal
    import time

    args = ["train", "--preset", "digits-at-awp", *[a for a in TRAIN if not a.startswith("epochs=")], "epochs=4"]
    _torchrun(*args, "--out", str(tmp_path / "straight"), "--quiet")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "-m", "awp_cli", *args,
               "--out", str(tmp_path / "killed"), "--quiet"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # two epochs done
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    interrupted_at = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= interrupted_at < 4
    _torchrun(*args, "--out", str(tmp_path / "killed"), "--resume", "--quiet")
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in ("straight", "killed"))
    assert a["epoch"] == b["epoch"] == 4
    for name, value in a["model"].items():
        assert torch.equal(b["model"][name], value), name
