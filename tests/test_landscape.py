"""Tests of the landscape package: invariants and independent references, no copied numbers."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import awp_cli
from awp.checkpoint import load_checkpoint, save_checkpoint
from awp.config import TrainConfig
from awp.data import build_dataset
from awp.metrics import AttackSpec, clean_and_robust
from awp.models import build_model
from awp.weights import is_weight
from landscape.curve import curve_spread, weight_loss_curve
from landscape.directions import interpolation_direction, orthogonalize, random_direction
from landscape.flatness import average_sharpness, curvature, sharpness, worst_case_sharpness
from landscape.surface import weight_loss_surface

ATTACK = AttackSpec(eps=0.2, step_size=0.05, steps=3, seed=7)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a shared 2-core machine two intra-op threads spin against each other
    # and other processes (measured 100x slower than one thread), so this module uses one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=[8, 16, 16])
    with torch.no_grad():  # non-trivial BN affine and statistics, so "ignored" and "d = w" mean something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def data():
    splits = build_dataset("digits", val_size=0, train_subset=300)
    return splits.train.tensors(limit=48)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = _model()
    config = TrainConfig(dataset="digits", model="smallcnn", train_subset=300, val_size=0, eps=0.2,
                         model_kwargs={"channels": [8, 16, 16]}).to_dict()
    save_checkpoint(path, model, arch="smallcnn", arch_kwargs={"num_classes": 10, "in_channels": 1,
                                                               "channels": [8, 16, 16]},
                    dataset="digits", method="at", awp_gamma=0.0, epoch=1, metrics={}, config=config)
    return path


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _ce_by_hand(model, direction, coef, x, y):
    """Independent reference: a deep copy with w + coef * d written into its parameters."""
    other = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in other.named_parameters():
            p.add_(coef * direction[name])
        logits = other(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


# ----------------------------------------------------------------------------- directions

def test_filter_normalization_matches_weight_filters():
    model = _model()
    d = random_direction(model, seed=3)
    params = dict(model.named_parameters())
    assert list(d) == list(params)  # every parameter, no buffer
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in d)
    n_weights = 0
    for name, p in params.items():
        assert d[name].shape == p.shape and d[name].device == p.device
        if is_weight(name, p):
            n_weights += 1
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                                       rtol=1e-5, atol=1e-6)
        else:
            assert torch.count_nonzero(d[name]) == 0
    assert n_weights == 4  # three convs and the linear layer


def test_direction_seeds():
    model = _model()
    a, b, c = (random_direction(model, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if torch.count_nonzero(a[k]))


def test_layer_and_none_normalization_and_ignore_none():
    model = _model()
    params = dict(model.named_parameters())
    layer = random_direction(model, seed=0, normalization="layer")
    none = random_direction(model, seed=0, normalization="none")
    keep = random_direction(model, seed=0, ignore="none")
    for name, p in params.items():
        if is_weight(name, p):
            torch.testing.assert_close(layer[name].norm(), p.detach().norm(), rtol=1e-5, atol=0)
            # same Gaussian draw, different scaling: 'none' is the raw draw, 'layer' a multiple of it
            cos = F.cosine_similarity(layer[name].flatten(), none[name].flatten(), dim=0)
            assert cos > 0.9999
        else:
            assert torch.equal(keep[name], p.detach())  # Li et al.: d = w for biases and BN


def test_orthogonalize_and_interpolation():
    model, other = _model(0), _model(1)
    d1, d2 = random_direction(model, seed=0), random_direction(model, seed=1)
    o1, o2 = orthogonalize([d1, d2])
    assert all(torch.equal(o1[k], d1[k]) for k in d1)  # the first is kept as it is
    dot = sum((o1[k].double() * o2[k].double()).sum() for k in d1)
    norm1 = sum((o1[k].double() ** 2).sum() for k in d1).sqrt()
    norm2 = sum((o2[k].double() ** 2).sum() for k in d1).sqrt()
    assert abs(dot / (norm1 * norm2)) < 1e-5
    torch.testing.assert_close(norm2, sum((d2[k].double() ** 2).sum() for k in d2).sqrt())
    d = interpolation_direction(model, other)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach() + d[name], dict(other.named_parameters())[name].detach())


# ----------------------------------------------------------------------------- curves and surfaces

def test_curve_at_zero_is_the_robust_loss_and_model_is_untouched(data):
    x, y = data
    model = _model()
    model.train()  # the caller's flags must come back
    model.features[1].eval()
    flags = [m.training for m in model.modules()]
    state = _state(model)
    ds = [random_direction(model, seed=s) for s in (0, 1)]
    df = weight_loss_curve(model, ds, [-0.5, 0.0, 0.5], (x, y), attack=ATTACK, batch_size=20)
    assert list(df.columns) == ["direction", "alpha", "loss", "acc"] and len(df) == 6
    assert _same(model, state) and [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    direct = clean_and_robust(model, x, y, ATTACK, batch_size=20)
    at0 = df[df.alpha == 0.0]
    np.testing.assert_allclose(at0.loss, direct["robust_loss"], rtol=1e-6)
    np.testing.assert_allclose(at0.acc, direct["robust_acc"], rtol=1e-6)
    fixed = weight_loss_curve(model, ds[:1], [0.0, 0.5], (x, y), loss="fixed", attack=ATTACK, batch_size=20)
    assert fixed.loss.iloc[0] == pytest.approx(at0.loss.iloc[0], rel=1e-6)
    assert _same(model, state)


def test_clean_curve_matches_hand_computation(data):
    x, y = data
    model = _model()
    d = random_direction(model, seed=5)
    alphas = [-1.0, -0.25, 0.0, 0.75]
    df = weight_loss_curve(model, [d], alphas, (x, y), loss="clean", batch_size=16)
    for alpha, loss, acc in zip(df.alpha, df.loss, df.acc):
        ref_loss, ref_acc = _ce_by_hand(model, d, alpha, x, y)
        assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == pytest.approx(ref_acc)


def test_non_square_surface_puts_values_at_their_coordinates(data):
    x, y = data
    model = _model()
    state = _state(model)
    d1, d2 = random_direction(model, seed=0), random_direction(model, seed=1)
    alphas, betas = [-0.6, 0.0, 0.4], [-0.3, 0.9]
    df = weight_loss_surface(model, d1, d2, alphas, betas, (x, y), loss="clean")
    assert list(df.columns) == ["alpha", "beta", "loss", "acc"] and len(df) == 6
    for row in df.itertuples():
        combined = {k: row.alpha * d1[k] + row.beta * d2[k] for k in d1}
        assert row.loss == pytest.approx(_ce_by_hand(model, combined, 1.0, x, y)[0], rel=1e-5)
    assert _same(model, state)


def test_points_subset_and_callback(data):
    x, y = data
    model = _model()
    ds = [random_direction(model, seed=s) for s in (0, 1)]
    seen = []
    df = weight_loss_curve(model, ds, [-0.5, 0.0, 0.5], (x, y), loss="clean",
                           points=[(1, 0.5), (0, -0.5)], on_point=seen.append)
    assert sorted(zip(df.direction, df.alpha)) == [(0, -0.5), (1, 0.5)]
    assert len(seen) == 2 and set(seen[0]) == {"direction", "alpha", "loss", "acc"}
    full = weight_loss_curve(model, ds, [-0.5, 0.0, 0.5], (x, y), loss="clean")
    assert df.set_index(["direction", "alpha"]).loss.to_dict() == pytest.approx(
        full.set_index(["direction", "alpha"]).loss[[(0, -0.5), (1, 0.5)]].to_dict())
    spread = curve_spread(full)
    assert list(spread.alpha) == [-0.5, 0.0, 0.5] and (spread.n == 2).all()
    np.testing.assert_allclose(spread.loss_mean, full.groupby("alpha").loss.mean().to_numpy())


# ----------------------------------------------------------------------------- flatness

def _synthetic(c: float, b: float = 0.0, e: float = 0.0):
    alphas = np.linspace(-1, 1, 9)
    rows = [{"direction": k, "alpha": a, "loss": (c + k) * a * a + b * a + e, "acc": 0.0}
            for k in range(2) for a in alphas]
    return pd.DataFrame(rows)


def test_sharpness_and_curvature_on_a_parabola():
    c = 1.7
    df = _synthetic(c, b=0.3, e=2.0)  # direction k has curvature c + k
    mean_c = c + 0.5
    assert sharpness(df, radius=0.5) == pytest.approx(mean_c * 0.25)  # 0.5 is on the grid
    assert curvature(df) == pytest.approx(mean_c)
    # off the grid: linear interpolation of the samples, computed independently
    alphas = np.linspace(-1, 1, 9)
    ref = np.mean([(np.interp(0.6, alphas, (c + k) * alphas ** 2) + np.interp(-0.6, alphas, (c + k) * alphas ** 2)) / 2
                   for k in range(2)])
    assert sharpness(_synthetic(c), radius=0.6) == pytest.approx(ref)


def test_worst_case_is_above_average_case(data):
    x, y = data
    model = _model()
    state = _state(model)
    worst = worst_case_sharpness(model, (x, y), ATTACK, xi=0.05, steps=3)
    average = average_sharpness(model, (x, y), ATTACK, xi=0.05, draws=3)
    assert worst >= average >= -0.05
    assert _same(model, state) and not model.training


# ----------------------------------------------------------------------------- command line

def _run(args):
    return awp_cli.main(["landscape", *map(str, args)])


def test_cli_writes_results_and_resumes(checkpoint, tmp_path):
    out = tmp_path / "ls"
    args = [checkpoint, "--out", out, "--alphas", "-0.5:0.5:3", "--directions", "2", "--samples", "32",
            "--steps", "2", "--seed", "4", "--quiet", "--device", "cpu"]
    assert _run(args) == 0
    folder = out / checkpoint.stem
    table = pd.read_csv(folder / "landscape.csv")
    assert list(table.columns) == ["direction", "alpha", "loss", "acc"]
    assert sorted(set(table.direction)) == [4, 5] and sorted(set(table.alpha)) == [-0.5, 0.0, 0.5]
    info = json.loads((folder / "landscape.json").read_text())
    assert info["points_computed"] == 6 and info["settings"]["direction_seeds"] == [4, 5]
    assert info["settings"]["samples"] == 32 and info["settings"]["bn_mode"] == "eval"
    assert (folder / "landscape.png").stat().st_size > 0 and (out / "curves.png").exists()
    # alpha = 0 is the checkpoint's robust loss under the same attack and seed (on the same samples)
    model, _ = load_checkpoint(checkpoint)
    train = build_dataset("digits", val_size=0, train_subset=300).train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))  # documented subset rule
    x, y = train.batch(order[:32].sort().values)
    direct = clean_and_robust(model, x, y, AttackSpec(eps=0.2, step_size=0.05, steps=2, seed=4))
    np.testing.assert_allclose(table[table.alpha == 0].loss, direct["robust_loss"], rtol=1e-6)
    assert info["checkpoint_sha256"] and info["flatness"]["sharpness"] is not None
    # a second run recomputes nothing
    assert _run(args) == 0
    info2 = json.loads((folder / "landscape.json").read_text())
    assert info2["points_computed"] == 0 and info2["points_reused"] == 6
    pd.testing.assert_frame_equal(pd.read_csv(folder / "landscape.csv"), table)
    # a changed setting changes the key: everything is recomputed
    assert _run([*args[:-2], "--device", "cpu", "--loss", "clean"]) == 0
    assert json.loads((folder / "landscape.json").read_text())["points_computed"] == 6


def test_cli_resumes_a_partial_table(checkpoint, tmp_path, monkeypatch):
    import landscape.evaluate as ev

    out = tmp_path / "ls"
    args = [checkpoint, "--out", out, "--alphas", "-0.5,0.5", "--directions", "1", "--samples", "16",
            "--loss", "clean", "--quiet", "--device", "cpu"]
    real = ev.PointEvaluator.point
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ev.PointEvaluator, "point", failing)
    assert _run(args) == 130
    assert (out / checkpoint.stem / "landscape.partial.json").exists()
    monkeypatch.setattr(ev.PointEvaluator, "point", real)
    assert _run(args) == 0
    info = json.loads((out / checkpoint.stem / "landscape.json").read_text())
    assert info["points_computed"] == 1 and info["points_reused"] == 1
    assert not (out / checkpoint.stem / "landscape.partial.json").exists()


# ----------------------------------------------------------------------------- library call

def test_compute_landscape_equals_the_cli_byte_for_byte_and_caches(checkpoint, tmp_path):
    """A notebook's compute_landscape(...) writes the files `awp landscape` writes, and reuses them."""
    from awp.checkpoint import load_run
    from landscape import LandscapeConfig, compute_landscape

    cli_out = tmp_path / "cli"
    assert _run([checkpoint, "--out", cli_out, "--alphas", "-0.5:0.5:3", "--directions", "2", "--samples", "24",
                 "--steps", "2", "--seed", "1", "--quiet", "--device", "cpu"]) == 0
    config = LandscapeConfig(directions=2, seed=1, alphas=(-0.5, 0.0, 0.5), samples=24, steps=2)
    run = load_run(checkpoint)
    lib = tmp_path / "lib"
    result = compute_landscape(run, config, lib, device="cpu")
    for name in ("landscape.csv", "landscape.json"):
        assert (lib / name).read_bytes() == (cli_out / checkpoint.stem / name).read_bytes(), name
    assert result.info["points_computed"] == 6 and len(result.table) == 6
    assert result.flatness["sharpness"] == json.loads((lib / "landscape.json").read_text())["flatness"]["sharpness"]
    again = compute_landscape(checkpoint, config, lib, device="cpu")
    assert again.info["points_computed"] == 0 and again.info["points_reused"] == 6
    pd.testing.assert_frame_equal(again.table, result.table)
    # in memory (out=None): the same numbers, no files
    memory = compute_landscape(run, config, device="cpu")
    pd.testing.assert_frame_equal(memory.table, result.table)
    assert memory.folder is None


@pytest.mark.parametrize("changes, needle", [
    ({"directions": 0}, "directions"), ({"surface": True, "directions": 1}, "surface"),
    ({"alphas": ()}, "alphas"), ({"split": "holdout"}, "split"), ({"xi": 2.0}, "xi"),
    ({"normalization": "unit"}, "normalization"), ({"loss": "kl"}, "loss"), ({"eps": 3.0}, "eps"),
])
def test_landscape_config_rejects_nonsense_in_one_line(changes, needle):
    from awp.errors import UsageError
    from landscape import LandscapeConfig

    with pytest.raises(UsageError, match=needle) as info:
        LandscapeConfig(**changes)
    assert "\n" not in str(info.value)


def test_load_run_rebuilds_model_config_data_and_attack(checkpoint):
    from awp.checkpoint import load_run
    from awp.metrics import metric_attack

    run = load_run(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    assert _same(run.model, model.state_dict()) and not run.model.training
    assert run.config.dataset == "digits" and run.attack == metric_attack(run.config)
    expected = build_dataset("digits", val_size=run.config.val_size, train_subset=run.config.train_subset,
                             split_seed=run.config.split_seed)
    assert torch.equal(run.split("train").images, expected.train.images)
    assert run.meta["epoch"] == meta["epoch"] and len(run.sha256) == 64
