"""Checkpoints from strangers cannot make the toolkit allocate what they like, a broken one is
refused before any work, every JSON is strict, and every command checks its output first.

- Shape before memory: the model is built on the meta device and compared (names, shapes, size)
  with the stored weights before anything real is allocated; a crafted ``arch_kwargs`` asking for
  360 GB is one line, in seconds, with less peak memory than evaluating a healthy checkpoint.
- Finite weights: a NaN anywhere in the weights is refused by every command that reads weights,
  naming the tensor; ``--allow-nonfinite`` loads it and every output says so; NaN results are
  written as such (null in strict JSON) and the command exits non-zero.
- Strict JSON: what ``awp.io.atomic_write_json`` writes parses with a parser that rejects NaN.
- Outputs first: a file where an output folder should be (or a folder where a file should be)
  fails before the first computation.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import awp_cli
from awp import io as aio
from awp.checkpoint import (DEFAULT_MAX_PARAMS, check_size, load_checkpoint, meta_skeleton, nonfinite_tensors,
                            read_checkpoint, save_checkpoint)
from awp.config import TrainConfig
from awp.errors import UserError
from awp.models import build_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
       "OMP_NUM_THREADS": "1"}
HUGE = [100000, 100000, 10]  # smallcnn stage widths: the 100000 x 100000 x 3 x 3 conv alone is 360 GB
LAND = ["--directions", "1", "--alphas", "-0.5,0,0.5", "--samples", "16", "--steps", "1", "--quiet"]
MEAS = ["--measures", "weight_norm,logit_margin", "--samples", "16", "--steps", "1", "--quiet"]


def strict_loads(text: str):
    """json.loads that rejects NaN, Infinity and -Infinity, as jq and RFC 8259 do."""
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def _expanded(shapes: dict[str, torch.Size], dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """Tensors of any size stored in a few bytes: one value expanded with stride 0."""
    return {k: torch.zeros((), dtype=dtypes[k]).expand(shape) for k, shape in shapes.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    config = TrainConfig(dataset="digits", model="smallcnn", train_subset=300, eps=0.2).to_dict()
    save_checkpoint(d / "good.pt", model, arch="smallcnn", arch_kwargs=model.arch_kwargs, dataset="digits",
                    method="at", awp_gamma=0.0, epoch=1, metrics={}, config=config)
    payload = torch.load(d / "good.pt", weights_only=True)
    # 1. arch_kwargs asking for a huge model next to the small weights (a shape mismatch)
    huge_kwargs = {**payload["arch_kwargs"], "channels": HUGE}
    torch.save({**payload, "arch_kwargs": huge_kwargs}, d / "huge.pt")
    # 2. the same, with stored weights of exactly the huge shapes, stride 0 (a file of a few KB)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in _smallcnn_meta(huge_kwargs).state_dict().items()}
    stored = _expanded({k: s for k, (s, _) in shapes.items()}, {k: t for k, (_, t) in shapes.items()})
    torch.save({**payload, "arch_kwargs": huge_kwargs, "model": stored}, d / "huge_expanded.pt")
    # 3. one NaN in the classifier
    nan_state = {k: v.clone() for k, v in payload["model"].items()}
    nan_state["fc.weight"][3, 5] = float("nan")
    torch.save({**payload, "model": nan_state}, d / "nan.pt")
    torch.save({k: v for k, v in nan_state.items()}, d / "nan_foreign.pt")
    # 4. a foreign state dict whose classifier holds 2e9 classes (stride 0: a file of a few KB)
    rgb = build_model("smallcnn").state_dict()
    rgb.update(_expanded({"fc.weight": torch.Size([2_000_000_000, 64]), "fc.bias": torch.Size([2_000_000_000])},
                         {"fc.weight": torch.float32, "fc.bias": torch.float32}))
    torch.save(rgb, d / "huge_foreign.pt")
    # 5. an exportable architecture (a WRN-10-1) with a NaN
    wrn = build_model("wrn-34-10", depth=10, widen_factor=1)
    with torch.no_grad():
        wrn.fc.weight[3, 5] = float("nan")
    save_checkpoint(d / "nan_wrn.pt", wrn, arch="wrn-34-10", arch_kwargs=wrn.arch_kwargs, dataset="cifar10",
                    method="at", awp_gamma=0.0, epoch=1, metrics={}, config={})
    (d / "a_file").write_text("x")
    (d / "a_folder").mkdir()
    return d


def _smallcnn_meta(kwargs):
    # The reference skeleton, built here with PyTorch alone (meta device: nothing allocated).
    from awp.models import SmallCNN

    return SmallCNN(**kwargs)


# ------------------------------------------------------------------------ 1. shape before memory
def test_huge_architecture_is_refused_by_load_checkpoint_in_seconds(files):
    started = time.perf_counter()
    with pytest.raises(UserError) as mismatch:
        load_checkpoint(files / "huge.pt")
    with pytest.raises(UserError) as size:
        load_checkpoint(files / "huge_expanded.pt")
    assert time.perf_counter() - started < 10
    assert "\n" not in str(mismatch.value) and "\n" not in str(size.value)
    # the first tensor that differs: the first conv, stored 16 x 1 x 3 x 3, asked 100000 x 1 x 3 x 3
    assert "wrong shape (features.0.weight: stored [16, 1, 3, 3], the architecture's [100000, 1, 3, 3]" \
        in str(mismatch.value)
    # sizes by hand: conv 100000*1*9, BN 4*100000 (+1), conv 100000^2*9, BN, conv 100000*10*9, BN 4*10 (+1), fc 10*10+10
    total = 100000 * 9 + 400001 + 100000 ** 2 * 9 + 400001 + 100000 * 10 * 9 + 41 + 110
    assert f"it has {total:,} parameters and buffers, over the limit of {DEFAULT_MAX_PARAMS:,}" in str(size.value)
    # running sum: 900000 + 400001 < 1e9, and adding the 9e10 conv (index 4 of features) crosses it
    assert str(size.value).endswith("the first tensor past the limit is features.4.weight [100000, 100000, 3, 3]")


def test_size_limit_is_a_keyword_and_an_environment_variable(files, monkeypatch):
    model, _ = load_checkpoint(files / "good.pt")
    tensors = list(itertools.chain(model.named_parameters(), model.named_buffers()))
    limit = 1000
    running = np.cumsum([t.numel() for _, t in tensors])
    first = tensors[int(np.argmax(running > limit))][0]
    with pytest.raises(UserError, match=f"limit of 1,000 .* past the limit is {first} "):
        load_checkpoint(files / "good.pt", max_params=limit)
    monkeypatch.setenv("AWP_MAX_PARAMS", "1e3")
    with pytest.raises(UserError, match=f"past the limit is {first} "):
        load_checkpoint(files / "good.pt")
    monkeypatch.setenv("AWP_MAX_PARAMS", f"{int(running[-1])}")  # exactly the model's size: allowed
    load_checkpoint(files / "good.pt")
    monkeypatch.setenv("AWP_MAX_PARAMS", "many")
    with pytest.raises(UserError, match="AWP_MAX_PARAMS"):
        load_checkpoint(files / "good.pt")


def test_default_limit_covers_the_largest_robust_wrns():
    # WRN-70-16 (Gowal et al. 2020, ~267M) and WRN-94-16 (RobustBench's largest CIFAR-10 entry, ~366M)
    for depth in (70, 94):
        skeleton = meta_skeleton(lambda: build_model("wrn-34-10", depth=depth, widen_factor=16))
        assert all(p.is_meta for p in skeleton.parameters())
        assert 2.6e8 < check_size(skeleton, f"WRN-{depth}-16") < DEFAULT_MAX_PARAMS


def test_deep_architecture_request_stops_while_building(files):
    payload = torch.load(files / "good.pt", weights_only=True)
    crafted = files / "deep.pt"
    torch.save({**payload, "arch": "wrn-34-10", "arch_kwargs": {"depth": 6 * 10 ** 6 + 4, "widen_factor": 1}}, crafted)
    started = time.perf_counter()
    with pytest.raises(UserError, match="more than .* parameter tensors"):
        load_checkpoint(crafted)
    assert time.perf_counter() - started < 10


def test_huge_architecture_is_refused_by_the_commands(files, tmp_path, capsys):
    for argv in (["eval", files / "huge.pt", "--out", tmp_path / "e.json"],
                 ["eval", files / "huge_expanded.pt", "--out", tmp_path / "e.json"],
                 ["landscape", files / "huge_expanded.pt", "--out", tmp_path / "land", *LAND],
                 ["import-checkpoint", files / "huge_foreign.pt", "--format", "mart", "--arch", "smallcnn",
                  "--dataset", "cifar10", "--out", tmp_path / "imported.pt"]):
        assert awp_cli.main([str(a) for a in argv]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "do not fit the architecture" in err or "over the limit" in err, err
    # the data set says 10 classes: the stored 2e9-class classifier is refused before anything is allocated
    assert "wrong shape (fc.weight: stored [2000000000, 64], the architecture's [10, 64]" in err
    assert not list(tmp_path.iterdir())


def _peak(args: list[str], tmp: Path) -> tuple[int, int, float, str]:
    """(exit code, peak RSS in KiB, seconds, stderr) of ``python args`` in its own process."""
    started = time.perf_counter()
    with open(tmp / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss, time.perf_counter() - started, \
        (tmp / "stderr").read_text().strip()


@pytest.mark.slow
def test_huge_architecture_costs_less_memory_than_a_healthy_evaluation(files, tmp_path):
    code, healthy, _, err = _peak(["-m", "awp_cli", "eval", str(files / "good.pt"), "--samples", "20",
                                   "--attacks", "clean", "--out", str(tmp_path / "good.json")], tmp_path)
    assert code == 0, err
    load = f"from awp.checkpoint import load_checkpoint; load_checkpoint({str(files / 'huge_expanded.pt')!r})"
    crafted = [["-c", load],
               ["-m", "awp_cli", "eval", str(files / "huge.pt"), "--out", str(tmp_path / "e.json")],
               ["-m", "awp_cli", "eval", str(files / "huge_expanded.pt"), "--out", str(tmp_path / "e.json")],
               ["-m", "awp_cli", "landscape", str(files / "huge_expanded.pt"), "--out", str(tmp_path / "l"), *LAND],
               ["-m", "awp_cli", "import-checkpoint", str(files / "huge_foreign.pt"), "--format", "mart", "--arch",
                "smallcnn", "--dataset", "cifar10", "--out", str(tmp_path / "i.pt")]]
    for args in crafted:
        code, peak, seconds, err = _peak(args, tmp_path)
        assert code == 1 and ("over the limit" in err or "do not fit" in err), err
        assert peak <= healthy, f"{args[1:3]}: {peak // 1024} MiB > healthy eval {healthy // 1024} MiB"
        assert seconds < 60, f"{args[1:3]} took {seconds:.0f} s"


# ------------------------------------------------------------------------------ 2. finite weights
def test_nonfinite_tensors_reads_each_stored_value_once():
    base = torch.arange(12.0).view(3, 4)
    assert nonfinite_tensors({"a": base, "t": base.t(), "i": torch.arange(3)}) == []
    holed = base.clone()
    holed[2, 1] = float("inf")
    assert nonfinite_tensors({"a": base, "t": holed.t(), "half": holed[:, ::2], "e": holed[2:, 1:2].expand(9, 7)}) \
        == ["t", "e"]  # holed[:, ::2] skips column 1: finite
    assert nonfinite_tensors({"huge": torch.tensor(float("nan")).expand(10 ** 6, 10 ** 6)}) == ["huge"]


@pytest.mark.parametrize("argv", [
    ["eval", "{d}/nan.pt", "--out", "{t}/e.json"],
    ["landscape", "{d}/nan.pt", "--out", "{t}/land", *LAND],
    ["measures", "{d}/nan.pt", "--out", "{t}/m", *MEAS],
    ["pseudo-label", "{d}/nan.pt", "--out", "{t}/pl.npz"],
    ["export", "{d}/nan.pt", "--out", "{t}/rb.pt"],
    ["import-checkpoint", "{d}/nan_foreign.pt", "--format", "mart", "--arch", "smallcnn", "--dataset", "digits",
     "--out", "{t}/i.pt"],
], ids=lambda argv: argv[0])
def test_nan_weights_are_refused_by_every_command(files, tmp_path, capsys, argv):
    argv = [a.format(d=files, t=tmp_path) for a in argv]
    assert awp_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weight tensor fc.weight holds NaN" in err and "--allow-nonfinite" in err
    assert not list(tmp_path.iterdir())


def test_nan_weights_are_refused_by_the_loaders(files):
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(UserError, match="fc.weight holds NaN"):
            load(files / "nan.pt")
    model, meta = load_checkpoint(files / "nan.pt", allow_nonfinite=True)
    assert meta["nonfinite_weights"] == ["fc.weight"] and torch.isnan(model.fc.weight[3, 5])


def test_allow_nonfinite_eval_says_so_everywhere_and_exits_non_zero(files, tmp_path, capsys):
    out = tmp_path / "e.json"
    code = awp_cli.main(["eval", str(files / "nan.pt"), "--samples", "12", "--attacks", "clean,fgsm",
                         "--allow-nonfinite", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("awp: warning:") and "fc.weight" in err[0] and "--allow-nonfinite" in err[0]
    assert err[1].startswith("awp: error:") and "not finite" in err[1] and str(out) in err[1]
    result = strict_loads(out.read_text())
    assert result["nonfinite_weights"] == ["fc.weight"]
    for name in ("clean", "fgsm"):  # logit 3 is NaN for every image: no prediction, no accuracy
        assert result["results"][name]["accuracy"] is None
        assert result["nonfinite_values"][f"results.{name}.accuracy"] == "nan"


def test_allow_nonfinite_landscape_says_so_everywhere_and_exits_non_zero(files, tmp_path, capsys):
    code = awp_cli.main(["landscape", str(files / "nan.pt"), "--out", str(tmp_path), "--allow-nonfinite", *LAND])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("awp: warning:") and "fc.weight" in err[0]
    assert err[-1].startswith("awp: error: non-finite values") and "flatness.sharpness is nan" in err[-1]
    info = strict_loads((tmp_path / "nan" / "landscape.json").read_text())
    assert info["nonfinite_weights"] == ["fc.weight"] and info["nonfinite_points"] == 3
    assert info["flatness"]["sharpness"] is None and info["nonfinite_values"]["flatness.sharpness"] == "nan"
    assert info["flatness"]["curvature"] is None and info["nonfinite_values"]["flatness.curvature"] == "nan"
    table = pd.read_csv(tmp_path / "nan" / "landscape.csv")
    assert table["loss"].isna().all() and table["acc"].isna().all()
    # Resuming reads the nulls of the stored table back as NaN: nothing is recomputed.
    assert awp_cli.main(["landscape", str(files / "nan.pt"), "--out", str(tmp_path), "--allow-nonfinite", *LAND]) == 1
    assert strict_loads((tmp_path / "nan" / "landscape.json").read_text())["points_computed"] == 0


def test_allow_nonfinite_measures_say_so_everywhere_and_exit_non_zero(files, tmp_path, capsys):
    code = awp_cli.main(["measures", str(files / "nan.pt"), "--out", str(tmp_path), "--allow-nonfinite", *MEAS])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("awp: warning:") and "fc.weight" in err[0]
    assert err[-1].startswith("awp: error: non-finite values") and "weight_norm is nan" in err[-1], err
    info = strict_loads((tmp_path / "nan" / "measures.json").read_text())
    assert info["nonfinite_weights"] == ["fc.weight"]
    for name in ("weight_norm", "logit_margin"):
        assert info["measures"][name]["value"] is None
        assert info["nonfinite_values"][f"measures.{name}.value"] == "nan"
    # Cached nulls come back as NaN: nothing recomputed, the same verdict.
    assert awp_cli.main(["measures", str(files / "nan.pt"), "--out", str(tmp_path), "--allow-nonfinite", *MEAS]) == 1
    assert strict_loads((tmp_path / "nan" / "measures.json").read_text())["measures_computed"] == 0


def test_allow_nonfinite_pseudo_label_and_export_say_so(files, tmp_path, capsys):
    from awp.data import ImageSet, save_unlabeled_npz

    pool = ImageSet(torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.long))
    save_unlabeled_npz(tmp_path / "pool.npz", pool)
    for argv in (["pseudo-label", files / "nan.pt", "--source", tmp_path / "pool.npz", "--out", tmp_path / "pl.npz"],
                 ["export", files / "nan_wrn.pt", "--format", "robustbench", "--out", tmp_path / "rb.pt"]):
        assert awp_cli.main([str(a) for a in argv] + ["--allow-nonfinite"]) == 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("awp: warning:") and "fc.weight" in err and len(err.splitlines()) == 1
    assert (tmp_path / "pl.npz").exists()
    # The labels are what the NaN-holding weights predict (torch's argmax takes NaN as the largest), one per image.
    payload = torch.load(files / "nan.pt", weights_only=True)
    model = build_model(payload["arch"], **payload["arch_kwargs"])
    model.load_state_dict(payload["model"])
    with torch.no_grad():
        expected = model.eval()(pool.images).argmax(dim=1)
    with np.load(tmp_path / "pl.npz", allow_pickle=False) as archive:
        assert np.array_equal(archive["images"], pool.images.numpy())
        assert archive["labels"].tolist() == expected.tolist()
    assert strict_loads((tmp_path / "rb.pt.provenance.json").read_text())["nonfinite_weights"] == ["fc.weight"]


def test_allow_nonfinite_import_records_the_names(files, tmp_path):
    from awp.foreign import import_checkpoint

    messages = []
    out = import_checkpoint(files / "nan_foreign.pt", format="mart", arch="smallcnn", dataset="digits",
                            arch_kwargs={"in_channels": 1}, out=tmp_path / "i.pt", allow_nonfinite=True,
                            log=messages.append)
    assert read_checkpoint(out, allow_nonfinite=True)["provenance"]["nonfinite_weights"] == ["fc.weight"]
    assert len(messages) == 1 and "fc.weight" in messages[0]


# -------------------------------------------------------------- NaN losses: recorded, not averaged
def test_flatness_scalars_keep_nan_and_inf():
    from landscape.curve import curve_spread
    from landscape.flatness import curvature, sharpness

    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    good = pd.DataFrame({"direction": 0, "alpha": alphas, "loss": [a * a for a in alphas], "acc": 1.0})
    assert sharpness(good, 0.5) == pytest.approx(0.25) and curvature(good) == pytest.approx(1.0)
    bad = good.copy()
    bad.loc[1, "loss"] = np.nan
    assert math.isnan(sharpness(bad, 0.5)) and math.isnan(curvature(bad))
    # a resumed duplicate row does not average the NaN away
    twice = pd.concat([good, bad.iloc[[1]]], ignore_index=True)
    assert math.isnan(sharpness(twice, 0.5))
    inf = good.copy()
    inf.loc[2, "loss"] = np.inf
    assert not math.isfinite(sharpness(inf, 0.5)) and math.isnan(curvature(inf))
    spread = curve_spread(pd.concat([good, bad.assign(direction=1)], ignore_index=True)).set_index("alpha")
    assert math.isnan(spread.loc[-0.5, "loss_mean"]) and spread.loc[-0.5, "n"] == 2
    assert spread.loc[1.0, "loss_mean"] == 1.0 and spread.loc[1.0, "loss_std"] == 0.0


class _NanForSome(nn.Module):
    """Logits NaN for the images whose first pixel is above 0.5, else a fixed linear map."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return torch.where((x.flatten(1)[:, :1] > 0.5), torch.full_like(out, float("nan")), out)


def test_evaluation_and_landscape_points_report_nan_instead_of_an_accuracy():
    from awp.evaluate import evaluate
    from awp.metrics import loss_and_correct
    from landscape.evaluate import PointEvaluator

    x = torch.rand(30, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    model = _NanForSome()
    bad = x.flatten(1)[:, 0] > 0.5
    assert 0 < int(bad.sum()) < 30
    # one NaN image in the second batch of 7 is enough: no accuracy, and the loss is NaN too
    assert math.isnan(evaluate(model, x, y, attacks=["clean"], eps=0.0, batch_size=7)["results"]["clean"]["accuracy"])
    loss, correct = loss_and_correct(model, [(x[i:i + 7], y[i:i + 7]) for i in range(0, 30, 7)]).tolist()
    assert math.isnan(loss) and math.isnan(correct)
    evaluator = PointEvaluator(model, (x, y), loss="clean", batch_size=7)
    with evaluator.session():
        assert all(math.isnan(v) for v in evaluator.point())
    keep = ~bad
    clean = evaluate(model, x[keep], y[keep], attacks=["clean"], eps=0.0)["results"]["clean"]
    with torch.no_grad():
        assert clean["accuracy"] == int((model(x[keep]).argmax(1) == y[keep]).sum()) / int(keep.sum())


# -------------------------------------------------------------------------------- 3. strict JSON
def test_json_writer_is_strict_and_says_what_was_not_finite(tmp_path):
    obj = {"a": 1.5, "b": float("nan"), "c": [1, float("inf"), {"d": -float("inf")}],
           "e": np.float32("nan"), "f": np.int64(3), "g": np.float64(0.25), "h": (float("nan"),), "i": "NaN"}
    aio.atomic_write_json(tmp_path / "x.json", obj)
    back = strict_loads((tmp_path / "x.json").read_text())
    assert back == {"a": 1.5, "b": None, "c": [1, None, {"d": None}], "e": None, "f": 3, "g": 0.25, "h": [None],
                    "i": "NaN", "nonfinite_values": {"b": "nan", "c[1]": "inf", "c[2].d": "-inf", "e": "nan",
                                                     "h[0]": "nan"}}
    aio.atomic_write_json(tmp_path / "y.json", {"all": [1.0, 2]})  # nothing to say: no extra key
    assert strict_loads((tmp_path / "y.json").read_text()) == {"all": [1.0, 2]}
    with pytest.raises(ValueError):
        aio.atomic_write_json(tmp_path / "z.json", [float("nan")])
    assert not (tmp_path / "z.json").exists()


def test_every_json_write_goes_through_the_strict_writer():
    """No module turns json.dumps into a file by itself (atomic_write_text(path, json.dumps(...)))."""
    offenders = []
    for package in ("awp", "landscape", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "awp/io.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                        "atomic_write_text", "atomic_write_bytes", "write_text", "write_bytes"):
                    inner = [n for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Call)
                             and getattr(n.func, "attr", "") in ("dumps", "dump")]
                    if inner:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"JSON written without awp.io.atomic_write_json: {offenders}"


# ------------------------------------------------------------------------------ 4. outputs first
def _boom(*args, **kwargs):
    raise AssertionError("work started before the output was checked")


OUTPUT_CASES = [
    # (argv, the first piece of work, expected text); {t}/good is a file where good.pt's landscape would go
    (["landscape", "{d}/good.pt", "--out", "{d}/a_file", *LAND], "landscape.evaluate:PointEvaluator.point",
     "is a file"),
    (["landscape", "{d}/good.pt", "--out", "{t}", *LAND], "landscape.compute:load_run", "is a file"),
    (["measures", "{d}/good.pt", "--out", "{d}/a_file", *MEAS], "landscape.measure_run:load_run", "is a file"),
    (["measures", "{d}/good.pt", "--out", "{t}", *MEAS], "landscape.measure_run:load_run", "is a file"),
    (["eval", "{d}/good.pt", "--out", "{d}/a_folder"], "awp.evaluate:evaluate_checkpoint", "is a folder"),
    (["eval", "{d}/good.pt", "--out", "{d}/a_file/e.json"], "awp.evaluate:evaluate_checkpoint", "is a file"),
    (["pseudo-label", "{d}/good.pt", "--out", "{d}/a_folder"], "awp.loaded:load_run", "is a folder"),
    (["import-checkpoint", "{d}/nan_foreign.pt", "--format", "mart", "--arch", "smallcnn", "--dataset", "digits",
      "--out", "{d}/a_file/i.pt"], "awp.foreign:load_foreign_state", "is a file"),
    (["export", "{d}/good.pt", "--out", "{d}/a_folder"], "awp.foreign:read_checkpoint", "is a folder"),
    (["train", "--preset", "digits-at", "epochs=1", "--out", "{d}/a_file/run"], "awp.train:build_dataset", "is a file"),
    (["correlate", "--runs", "{d}", "--out", "{d}/a_folder"], "analysis.catalog:collect_runs", "is a folder"),
    (["figures", "--runs", "{d}", "--out", "{d}/a_file"], "analysis.catalog:collect_runs", "is a file"),
    (["correlate", "--runs", "{d}", "--measures", "{d}", "--ranking-dir", "{d}/a_file"],
     "analysis.catalog:collect_runs", "is a file"),
    (["demo", "--quick", "--out", "{d}/a_file", "--work", "{t}/work"], "analysis.demo:_parallel", "is a file"),
    (["demo", "--quick", "--out", "{t}/fig", "--work", "{d}/a_file/work"], "analysis.demo:_parallel", "is a file"),
]


@pytest.mark.parametrize("argv, work, text", OUTPUT_CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(OUTPUT_CASES)])
def test_output_location_is_checked_before_any_work(files, tmp_path, capsys, monkeypatch, argv, work, text):
    import importlib

    module, attr = work.split(":")
    owner = importlib.import_module(module)
    if "." in attr:
        cls, attr = attr.split(".")
        owner = getattr(owner, cls)
    monkeypatch.setattr(owner, attr, _boom)
    (tmp_path / "good").write_text("a file where the landscape of good.pt would go")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert awp_cli.main([a.format(d=files, t=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("awp: error:") and text in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_output_checks_create_nothing(tmp_path):
    assert aio.check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert aio.check_output_file(tmp_path / "a" / "f.json") == tmp_path / "a" / "f.json"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"cannot write .*/f/x/y: .*/f is a file, not a folder"):
        aio.check_output_folder(tmp_path / "f" / "x" / "y")
    with pytest.raises(UserError, match="--out .* is a file, not a folder"):
        aio.check_output_folder(tmp_path / "f", "--out")
    with pytest.raises(UserError, match="is a folder, not a file"):
        aio.check_output_file(tmp_path)


# ---------------------------------------------------------------------------------- RobustBench
@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A RobustBench model folder, with RobustBench's own loading forbidden (it allocates)."""
    from awp.robustbench import _robustbench

    utils = _robustbench()[0]
    monkeypatch.setattr(utils, "load_model", _boom)
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    return folder


def test_robustbench_file_with_wrong_shapes_or_nan_is_refused_before_robustbench_builds(zoo):
    from awp.checkpoint import load_run

    name = "Wu2020Adversarial_extra"  # WideResNet-28-10 (with sub_block1): conv1 is 16 x 3 x 3 x 3
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(16, 3, 5, 5)}}, zoo / f"{name}.pt")
    with pytest.raises(UserError, match=r"wrong shape \(conv1.weight: stored \[16, 3, 5, 5\], the architecture's "
                                        r"\[16, 3, 3, 3\]"):
        load_run(f"robustbench:{name}", model_dir=zoo.parents[1])
    torch.save({"state_dict": {"module.conv1.weight": torch.full((16, 3, 3, 3), float("nan"))}}, zoo / f"{name}.pt")
    with pytest.raises(UserError, match="weight tensor state_dict.module.conv1.weight holds NaN"):
        load_run(f"robustbench:{name}", model_dir=zoo.parents[1])


def test_robustbench_size_limit_names_the_first_tensor_past_it(zoo):
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from awp.robustbench import load_robustbench

    name = "Wu2020Adversarial_extra"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(16, 3, 3, 3)}}, zoo / f"{name}.pt")
    real = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][name]["model"]()  # RobustBench's class
    tensors = list(itertools.chain(real.named_parameters(), real.named_buffers()))
    running = np.cumsum([t.numel() for _, t in tensors])
    first = tensors[int(np.argmax(running > 5000))][0]
    with pytest.raises(UserError, match=f"limit of 5,000 .* past the limit is {first} "):
        load_robustbench(name, model_dir=zoo.parents[1], max_params=5000)
