"""benchmarks/gpu.py, the prepared GPU check: `--tiny` writes a gpu.json with every key filled and
consistent numbers; without CUDA it says so in one line; its budget and timing helpers hold."""
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu, gpu_report
from benchmarks.budget import Budget, SectionTimeout, time_limit
from benchmarks.common import timed_calls

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, path + (key,))
    else:
        yield path, tree


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_tiny(out: Path, device: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--tiny", "--device", device, "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), proc.stdout


def check_training(doc: dict, device: str) -> None:
    batch, steps = gpu.TINY.batch, gpu.TINY.steps
    compiled = [label for label, _, _ in gpu.TINY.models[:gpu.TINY.compile_models]]
    assert list(doc["training"]) == [label for label, _, _ in gpu.TINY.models]
    for model, settings in doc["training"].items():
        assert list(settings) == list(gpu_report.SETTINGS)
        for setting, rows in settings.items():
            if gpu_report.SETTINGS[setting][2] and model not in compiled:  # the one documented skip
                assert all(str(v).split("not available: ")[-1].startswith("skipped in --tiny")
                           for _, v in leaves(rows)), rows
                continue
            for variant in gpu_report.variants(setting):
                row = rows[variant]
                assert set(row) == set(gpu_report.variant_keys(variant, setting))
                assert is_number(row["images_per_s"]) and row["images_per_s"] > 0
                assert is_number(row["step_ms"]) and row["step_ms"] > 0
                assert row["images_per_s"] * row["step_ms"] / 1e3 == pytest.approx(batch, rel=1e-9)
                assert row["timed_steps"] == steps and is_number(row["warmup_s"]) and row["warmup_s"] > 0
                if device == "cpu":
                    assert row["peak_memory_mb"].startswith("n/a")
                else:
                    assert is_number(row["peak_memory_mb"]) and row["peak_memory_mb"] > 0
                if variant in gpu_report.OURS:  # a cross-entropy of 10 classes, adversarial: > 0
                    assert is_number(row["first_step_loss"]) and row["first_step_loss"] > 0
                if "compile_s" in row:
                    assert is_number(row["compile_s"]) and row["compile_s"] >= 0
            ratio = rows["AT-AWP"]["step_ms"] / rows["AT"]["step_ms"]
            assert rows["awp_overhead"] == pytest.approx(ratio) and rows["awp_overhead"] > 0


def check_derived(doc: dict) -> None:
    for model, settings in doc["training"].items():
        fp32 = settings["fp32"]
        for method, original in gpu_report.ORIGINAL.items():
            got = doc["original_vs_ours"][model][method]["original_over_ours"]
            assert got == pytest.approx(fp32[original]["step_ms"] / fp32[method]["step_ms"]) and got > 0
        for setting in gpu_report.FAST:
            for method in gpu_report.OURS:
                got = doc["sameness"][model][setting][method]
                fast = settings[setting][method]["first_step_loss"]
                if isinstance(fast, str):
                    assert got.startswith("not available: skipped in --tiny")
                    continue
                ref = fp32[method]["first_step_loss"]
                assert got == pytest.approx(abs(fast - ref) / abs(ref))
                # bf16 rounds the loss by ~1e-3 here; AT and AT-AWP losses differ by ~3e-2, so a
                # fast path that ran another step (or another model) would not pass.
                assert is_number(got) and got <= 2e-2


def check_attacks_and_landscape(doc: dict) -> None:
    pgd = doc["pgd"]
    assert is_number(pgd["ours_ms"]) and pgd["ours_ms"] > 0 and pgd["ours_in_eps_ball"] is True
    assert pgd["ours_images_per_s"] == pytest.approx(gpu.TINY.pgd_batch / (pgd["ours_ms"] / 1e3))
    if importlib.util.find_spec("torchattacks") is None:
        assert pgd["torchattacks_ms"].startswith("not installed")
        assert pgd["torchattacks_over_ours"].startswith("not available: not installed")
    else:
        assert pgd["torchattacks_in_eps_ball"] is True
        assert pgd["torchattacks_over_ours"] == pytest.approx(pgd["torchattacks_ms"] / pgd["ours_ms"])
    assert list(doc["landscape"]) == list(gpu_report.LANDSCAPE)
    for row in doc["landscape"].values():
        assert is_number(row["points_per_s"]) and row["points_per_s"] > 0
        assert row["points_per_s"] * row["curve_s"] == pytest.approx(gpu.TINY.landscape_points)
        assert row["timed_curves"] == gpu.TINY.landscape_curves and is_number(row["mean_loss"])


def check_tiny(doc: dict, stdout: str, device: str) -> None:
    assert [p for p, v in leaves(doc) if v is None or v == ""] == []
    assert all(is_number(v) or isinstance(v, (bool, str)) for _, v in leaves(doc))
    assert doc["complete"] is True and doc["mode"] == "tiny"
    assert doc["environment"]["device"] == device and doc["environment"]["torch"] == torch.__version__
    assert list(doc["sections"]) == list(doc["plan"])
    assert all(s["status"] == "ok" for s in doc["sections"].values()), doc["sections"]
    assert 0 < doc["wall_s"] < doc["budget_s"]
    check_training(doc, device)
    check_derived(doc)
    check_attacks_and_landscape(doc)
    assert "sameness" in stdout and all(label in stdout for label, _, _ in gpu.TINY.models)


@pytest.mark.slow  # ~30 s with a warm torch.compile cache, 1.5-2 min cold (2-core CPU)
def test_tiny_run_on_cpu_fills_every_key(tmp_path):
    doc, stdout = run_tiny(tmp_path, "cpu")
    check_tiny(doc, stdout, "cpu")


@pytest.mark.gpu
@pytest.mark.slow
def test_tiny_run_on_cuda_measures_memory(tmp_path):
    doc, stdout = run_tiny(tmp_path, "cuda")
    check_tiny(doc, stdout, "cuda")


@pytest.mark.parametrize("argv", [[], ["--device", "cpu"]])
def test_without_cuda_one_line_and_exit_0(argv, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(argv + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 1 and "no CUDA device" in out.out and out.err == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, code", [(["--require-cuda"], 1), (["--tiny", "--device", "cpu", "--require-cuda"], 1),
                                        (["--device", "cuda"], 2)])
def test_without_cuda_errors_are_one_line(argv, code, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(argv + ["--out", str(tmp_path)]) == code
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and "CUDA" in out.err


def test_require_cuda_exit_status_of_the_command():
    env = {**ENV, "CUDA_VISIBLE_DEVICES": ""}  # no device visible, whatever the machine has
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--require-cuda"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "no CUDA device" in proc.stderr


def test_budget_gives_later_sections_their_prediction():
    start = time.perf_counter() - 40.0  # 60 of 100 s left
    budget = Budget(100.0, {"a": 10.0, "b": 30.0, "c": 20.0}, start=start)
    assert budget.limit("a") == pytest.approx(60 - 50, abs=0.5)       # what b and c need stays
    assert budget.limit("b") == pytest.approx(60 - 20, abs=0.5)
    assert budget.limit("c") == pytest.approx(60, abs=0.5)
    over = Budget(10.0, {"a": 10.0, "b": 30.0})                        # predictions do not fit:
    assert over.limit("a") == pytest.approx(10 * 10 / 40, abs=0.5)     # a proportional share


def test_time_limit_stops_a_long_call():
    start = time.perf_counter()
    with pytest.raises(SectionTimeout):
        with time_limit(0.3):
            time.sleep(5)
    assert time.perf_counter() - start < 2.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with time_limit(5.0):  # a section inside its limit is not touched
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_timed_calls_synchronize_every_call_and_stop_at_the_deadline():
    calls, syncs = [], []

    def fn():
        calls.append(len(calls))
        time.sleep(0.2 if len(calls) == 1 else 0.02)  # the first call is slow, like a compilation
        return len(calls)

    timing = timed_calls(fn, warmup=2, steps=1000, sync=lambda: syncs.append(1),
                         deadline=time.perf_counter() + 0.5)
    assert timing.first == 1 and len(timing.warmup) == 2
    assert 1 <= len(timing.timed) < 30 and len(calls) == 2 + len(timing.timed)
    assert len(syncs) == 2 * len(calls)
    assert timing.warmup_excess == pytest.approx(sum(timing.warmup) - 2 * timing.median)
    assert timing.warmup_excess > 0.1
    assert len(timed_calls(fn, warmup=1, steps=3, deadline=0.0).timed) == 1  # past deadline: one


def tiny_run(tmp_path) -> "gpu.Run":
    args = gpu.parse_args(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    args.argv = []
    return gpu.prepare(args, torch.device("cpu"), time.perf_counter())


def test_a_failing_section_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    run = tiny_run(tmp_path)

    def boom(run, deadline):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(gpu, "pgd_section", boom)
    gpu.run_section(run, "pgd", Budget(60.0, {"pgd": 1.0, "landscape": 1.0}))
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["sections"]["pgd"]["status"] == "failed: RuntimeError: boom second line"
    assert {v for _, v in leaves(doc["pgd"])} == {"failed: RuntimeError: boom second line",
                                                  "not available: failed: RuntimeError: boom second line"}
    assert {v for _, v in leaves(doc["landscape"])} == {gpu_report.PENDING}
    assert doc["complete"] is False and [p for p, v in leaves(doc) if v is None] == []


def test_a_section_past_its_limit_is_stopped(tmp_path, monkeypatch):
    run = tiny_run(tmp_path)
    monkeypatch.setattr(gpu, "landscape_section", lambda run, deadline: time.sleep(30))
    start = time.perf_counter()
    gpu.run_section(run, "landscape", Budget(1.5, {"landscape": 1.0}))
    assert time.perf_counter() - start < 5.0
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["sections"]["landscape"]["status"].startswith("stopped at its time limit")
    assert all(str(v).startswith("stopped at its time limit") for _, v in leaves(doc["landscape"]))
