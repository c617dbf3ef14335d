"""One prepared GPU check: the numbers a GPU user cares about, from one command, within a budget.

One process, synthetic CIFAR-shaped data (3x32x32, 10 classes, fixed seed); it prints a table and
writes gpu.json (every key filled: a number, or a string saying why not; see gpu_report.py):
  1. training-step throughput (images/s: batch / median of the timed steps) of AT and AT-AWP
     (awp.train.train_step; PGD-10 eps 8/255 step 2/255 in train mode; AWP gamma 0.01) on
     PreActResNet-18 and WRN-34-10 at batch 128, in fp32, bf16 autocast + channels_last and
     bf16 + channels_last + torch.compile (awp.runtime.Runtime), and AT-AWP / AT in each;
  2. the same two steps through the original repositories' code paths (benchmarks/step_speed.py:
     Rice et al.'s attack_pgd with loss.backward(), csdongxian/AWP's proxy-model AdvWeightPerturb)
     in fp32, as that code runs: original / ours step time and peak memory;
  3. our PGD-10 (awp.attacks.pgd) against torchattacks.PGD on PreActResNet-18, batch 512, fp32,
     eval mode (both checked to stay in the eps-ball); points per second of a 256-sample adversarial
     weight-loss curve (landscape.curve.weight_loss_curve) in fp32 and bf16 + channels_last;
  4. the peak device memory of every training variant; device name, torch, CUDA and cuDNN versions;
  5. sameness: each fast path's first-step loss against fp32's, from the same initial weights,
     batch and seed (relative difference), so a fast path that computes something else shows.

Timing: each call is bracketed by a device synchronization; the warm-up calls (default 3) are not
timed, and what they took beyond as many timed steps is the compile time of the compiled setting,
reported on its own. The variants run one after another, not interleaved as the CPU scripts do: a
dedicated GPU does not drift like a shared CPU, and run alone each variant's peak memory is its own.
Budget (--budget, default 300 s for the whole process): one forward+backward per model is timed
first and a plan of every section's passes and predicted seconds is printed (compiled sections
last); each section may then use what is left minus the later sections' predictions (benchmarks/
budget.py), stops timing steps before that limit, and is stopped at it (a compilation included).
A section that fails or stops records why in gpu.json and the run goes on; gpu.json is rewritten
after every section.

Without CUDA it prints one line and exits 0 (1 with --require-cuda). --tiny runs every path on
small shapes (a small CNN and WRN-10-1, batch 4, 16x16, 1 warm-up and 2 timed steps): about 30 s
on a 2-core CPU once torch.compile's cache is warm. It compiles the first model only: with a cold
cache, inductor took 60-95 s for the first and 55 s more for the second on that CPU.

    python -m benchmarks.gpu [--out DIR] [--budget 300] [--require-cuda]
    python -m benchmarks.gpu --tiny --device cpu --out /tmp/gpucheck     # what the tests run
"""
from __future__ import annotations

import time

START = time.perf_counter()  # before torch's import: the budget counts the whole process
# ruff: noqa: E402 (the imports below come after START on purpose)

import argparse
import copy
import dataclasses
import gc
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp.attacks import pgd
from awp.errors import UserError
from awp.io import atomic_write_json
from awp.methods import get_method
from awp.metrics import AttackSpec
from awp.models import build_model
from awp.perturbation import AdversarialWeightPerturbation
from awp.runtime import Runtime, resolve_device, resolve_runtime
from awp.train import train_step
from benchmarks import gpu_report as report
from benchmarks.budget import Budget, SectionTimeout, time_limit
from benchmarks.common import synchronizer, timed_calls
from benchmarks.step_speed import EPS, GAMMA, STEP, STEPS, AdvWeightPerturb, make_optimizer, original_at_step
from landscape.curve import weight_loss_curve
from landscape.directions import random_direction

SEED, LR = 0, 0.01
# Forward+backward passes per step (the plan): PGD-10 is 10, the training step 1, AWP's ascent 1,
# attack_pgd's restart-selection forward 1/3; PGD's input-only backward makes a step 2/3 of a pass.
PASSES = {"AT": 11.0, "AT-AWP": 12.0, "original AT": 11 + 1 / 3, "original AT-AWP": 12 + 1 / 3}
BF16_SPEEDUP = 2.0  # the plan's guess; the measured numbers replace it


@dataclass(frozen=True)
class Shapes:
    """What one run measures: models (label, registered name, kwargs), batch, steps, sizes."""

    name: str
    models: tuple[tuple[str, str, dict], ...]
    batch: int
    size: int
    warmup: int
    steps: int
    pgd_batch: int
    landscape_samples: int
    landscape_points: int
    landscape_curves: int
    compile_models: int
    compile_allowance_s: float  # the plan's guess of one model's compile time

    def describe(self) -> dict[str, Any]:
        """The "settings" of gpu.json."""
        first = self.models[0][0]
        return {"shapes": f"batch {self.batch} of 3x{self.size}x{self.size}, {self.warmup} warm-up + {self.steps} "
                          f"timed steps, PGD-{STEPS} eps 8/255 step 2/255, AWP gamma {GAMMA}",
                "models": {label: f"{name} {kwargs or ''}".strip() for label, name, kwargs in self.models},
                "pgd": f"{first} batch {self.pgd_batch}, fp32, eval mode",
                "landscape": f"{first}, {self.landscape_samples} samples, {self.landscape_points} points, "
                             f"PGD-{STEPS} at every point"}


FULL = Shapes("full", (("preactresnet18", "preactresnet18", {}), ("wrn-34-10", "wrn-34-10", {})),
              batch=128, size=32, warmup=3, steps=10, pgd_batch=512, landscape_samples=256, landscape_points=5,
              landscape_curves=3, compile_models=2, compile_allowance_s=60.0)
TINY = Shapes("tiny", (("smallcnn-8-16-32", "smallcnn", {"channels": [8, 16, 32]}),
                       ("wrn-10-1", "wrn-34-10", {"depth": 10, "widen_factor": 1})),
              batch=4, size=16, warmup=1, steps=2, pgd_batch=8, landscape_samples=8, landscape_points=3,
              landscape_curves=2, compile_models=1, compile_allowance_s=40.0)
TINY_COMPILE_SKIP = ("skipped in --tiny: with a cold compile cache, torch.compile (inductor) of this model took "
                     "55 s more on a 2-core CPU; the first model runs the same compiled code path, and a GPU run "
                     "compiles both")


@dataclass
class Run:
    """Everything the sections share."""

    shapes: Shapes
    device: torch.device
    bases: dict[str, nn.Module]
    x: Tensor
    y: Tensor
    out: Path
    meta: dict[str, Any]
    measured: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def sync(self) -> Callable[[], None]:
        return synchronizer(self.device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--out", default=".", help="folder for gpu.json (default: the current folder)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run (default 300)")
    parser.add_argument("--tiny", action="store_true", help="small shapes: every path on a CPU in under a minute")
    parser.add_argument("--require-cuda", action="store_true", help="exit 1 when there is no CUDA device")
    parser.add_argument("--warmup", type=int, help="untimed steps per variant (>= 1; default 3, --tiny 1)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (>= 1; default 10, --tiny 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args(argv)
    for name in ("warmup", "steps", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if not args.budget > 0:
        parser.error("--budget must be > 0 seconds")
    return args


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    try:
        torchattacks = metadata.version("torchattacks")
    except metadata.PackageNotFoundError:
        torchattacks = "not installed (pip install -e '.[bench]')"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none (torch built without CUDA)",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torchattacks": torchattacks,
    }


# ------------------------------------------------------------------------------------------------
# Device memory.


def release(device: torch.device) -> None:
    """Free what earlier variants left, so that the next peak is the next variant's own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | str:
    if device.type != "cuda":
        return "n/a: peak memory is measured on CUDA devices only"
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


# ------------------------------------------------------------------------------------------------
# What is timed.


def training_step(variant: str, base: nn.Module, runtime: Runtime, x: Tensor, y: Tensor) -> Callable[[], Any]:
    """One training step of ``variant`` on its own copy of ``base``, optimizer and AWP included.

    Ours is wired as ``awp.train.fit`` wires it: the compiled model runs the attack, the AWP ascent
    and the step; ``sync=False`` (no host sync inside the step). The call returns the loss tensor.
    """
    model = runtime.prepare_model(copy.deepcopy(base))
    optimizer = make_optimizer(model, LR)
    xb, yb = runtime.batch(x), y.to(runtime.device)
    if variant in report.ORIGINAL.values():
        awp = None
        if variant.endswith("AWP"):  # the official code builds its proxy model once
            proxy = copy.deepcopy(model)
            awp = AdvWeightPerturb(model, proxy, torch.optim.SGD(proxy.parameters(), lr=0.01), GAMMA)
        return lambda: original_at_step(model, optimizer, xb, yb, awp)
    forward = runtime.compiled(model)
    method = get_method("at", eps=EPS, step_size=STEP, steps=STEPS)
    awp = AdversarialWeightPerturbation(forward, GAMMA) if variant == "AT-AWP" else None
    scaler = runtime.grad_scaler()
    return lambda: train_step(forward, optimizer, method, xb, yb, awp, runtime=runtime,
                              scaler=scaler if scaler.is_enabled() else None, sync=False)["loss"]


def measure_variant(run: Run, make: Callable[[], Callable[[], Any]], keys: list[str], deadline: float) -> dict:
    """Build the variant, then its warm-up and timed steps from the seed; the row of ``keys``."""
    release(run.device)
    fn = make()
    reset_peak(run.device)
    torch.manual_seed(SEED)
    timing = timed_calls(fn, warmup=run.shapes.warmup, steps=run.shapes.steps, sync=run.sync, deadline=deadline)
    row = {"images_per_s": len(run.y) / timing.median, "step_ms": 1e3 * timing.median,
           "timed_steps": len(timing.timed), "warmup_s": sum(timing.warmup),
           "peak_memory_mb": peak_memory_mb(run.device), "compile_s": timing.warmup_excess,
           "first_step_loss": float(timing.first) if isinstance(timing.first, Tensor) else None}
    return {key: row[key] for key in keys}


def failed(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def training_section(run: Run, model: str, setting: str, deadline: float) -> None:
    precision, channels_last, compile_ = report.SETTINGS[setting]
    runtime = resolve_runtime(run.device, precision, channels_last, compile_)
    rows = run.measured["training"][model][setting]
    try:
        for variant in report.variants(setting):
            make = lambda v=variant: training_step(v, run.bases[model], runtime, run.x, run.y)  # noqa: E731
            try:
                rows[variant].update(measure_variant(run, make, report.variant_keys(variant, setting), deadline))
            except Exception as exc:  # noqa: BLE001 - one variant's failure is recorded, the others run
                report.fill(rows[variant], failed(exc))
    finally:
        if compile_:
            torch.compiler.reset()  # drop the compiled graphs (and the memory they hold)
        release(run.device)


def in_eps_ball(x_adv: Tensor, x: Tensor) -> bool:
    return bool((x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1)


def pgd_section(run: Run, deadline: float) -> None:
    base = next(iter(run.bases.values()))
    runtime = resolve_runtime(run.device)
    model = runtime.prepare_model(copy.deepcopy(base)).eval()
    gen = torch.Generator().manual_seed(SEED + 1)
    x = runtime.batch(torch.rand(run.shapes.pgd_batch, 3, run.shapes.size, run.shapes.size, generator=gen))
    y = torch.randint(0, 10, (run.shapes.pgd_batch,), generator=gen).to(run.device)
    row, shapes = run.measured["pgd"], run.shapes
    variants = {"ours": lambda: pgd(model, x, y, eps=EPS, step_size=STEP, steps=STEPS)}
    try:
        import torchattacks
    except ImportError as exc:
        row.update(torchattacks_ms=f"not installed: {exc}", torchattacks_in_eps_ball="not installed")
    else:
        attack = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)
        variants["torchattacks"] = lambda: attack(x, y)
    for name, fn in variants.items():
        torch.manual_seed(SEED)
        timing = timed_calls(fn, warmup=shapes.warmup, steps=shapes.steps, sync=run.sync, deadline=deadline)
        row[f"{name}_ms"] = 1e3 * timing.median
        row[f"{name}_in_eps_ball"] = in_eps_ball(timing.first, x)
    row["ours_images_per_s"] = shapes.pgd_batch / (row["ours_ms"] / 1e3)


def landscape_section(run: Run, deadline: float) -> None:
    base, shapes = next(iter(run.bases.values())), run.shapes
    gen = torch.Generator().manual_seed(SEED + 2)
    x = torch.rand(shapes.landscape_samples, 3, shapes.size, shapes.size, generator=gen)
    y = torch.randint(0, 10, (shapes.landscape_samples,), generator=gen)
    attack = AttackSpec(eps=EPS, step_size=STEP, steps=STEPS, seed=SEED)
    alphas = torch.linspace(-1, 1, shapes.landscape_points).tolist()
    for key, (precision, channels_last) in report.LANDSCAPE.items():
        row = run.measured["landscape"][key]
        try:
            runtime = resolve_runtime(run.device, precision, channels_last)
            model = runtime.prepare_model(copy.deepcopy(base)).eval()
            direction = random_direction(model, seed=SEED)
            curve = lambda: weight_loss_curve(model, [direction], alphas, (x, y), attack=attack,  # noqa: E731
                                              batch_size=shapes.landscape_samples, runtime=runtime)
            timing = timed_calls(curve, warmup=1, steps=shapes.landscape_curves, sync=run.sync, deadline=deadline)
            row.update(points_per_s=len(alphas) / timing.median, curve_s=timing.median,
                       timed_curves=len(timing.timed), mean_loss=float(timing.first["loss"].mean()))
        except Exception as exc:  # noqa: BLE001 - recorded, the other precision runs
            report.fill(row, failed(exc))


# ------------------------------------------------------------------------------------------------
# The plan and the run.


def probe(run: Run) -> dict[str, float]:
    """Seconds of one fp32 forward+backward (train mode) of each model at the training batch."""
    runtime = resolve_runtime(run.device)
    x, y = run.x.to(run.device), run.y.to(run.device)
    seconds = {}
    for label, base in run.bases.items():
        model = runtime.prepare_model(copy.deepcopy(base)).train()

        def pass_(model: nn.Module = model) -> None:
            F.cross_entropy(model(x), y).backward()

        seconds[label] = timed_calls(pass_, warmup=1, steps=3, sync=run.sync).median
        del model
        release(run.device)
    return seconds


def plan(run: Run, per_pass: dict[str, float]) -> dict[str, dict[str, float]]:
    """Every section in running order: forward+backward passes (in units of one training-batch
    pass of its model) and predicted seconds. The compiled sections go last."""
    s = run.shapes
    calls, first = s.warmup + s.steps, s.models[0][0]
    out: dict[str, dict[str, float]] = {}
    later: dict[str, dict[str, float]] = {}
    for i, (label, _, _) in enumerate(s.models):
        for setting, (precision, _, compiled) in report.SETTINGS.items():
            passes = calls * sum(PASSES[v] for v in report.variants(setting))
            speed = BF16_SPEEDUP if precision == "bf16" else 1.0
            entry = {"passes": passes, "predicted_s": passes * per_pass[label] / speed}
            if compiled and i < s.compile_models:
                entry["predicted_s"] += s.compile_allowance_s
                later[f"{label} {setting}"] = entry
            elif not compiled:
                out[f"{label} {setting}"] = entry
    pgd_passes = calls * 2 * STEPS * 2 / 3 * s.pgd_batch / s.batch
    out["pgd"] = {"passes": pgd_passes, "predicted_s": pgd_passes * per_pass[first]}
    curve = s.landscape_points * (STEPS * 2 / 3 + 1 / 3) * s.landscape_samples / s.batch
    ls_passes = (1 + s.landscape_curves) * curve * 2
    out["landscape"] = {"passes": ls_passes, "predicted_s": ls_passes / 2 * per_pass[first] * (1 + 1 / BF16_SPEEDUP)}
    return {**out, **later}


def section_runner(run: Run, name: str) -> Callable[[float], None]:
    if name == "pgd":
        return lambda deadline: pgd_section(run, deadline)
    if name == "landscape":
        return lambda deadline: landscape_section(run, deadline)
    model, setting = name.split(" ")
    return lambda deadline: training_section(run, model, setting, deadline)


def section_tree(run: Run, name: str) -> dict:
    if name in ("pgd", "landscape"):
        return run.measured[name]
    model, setting = name.split(" ")
    return run.measured["training"][model][setting]


def run_section(run: Run, name: str, budget: Budget) -> None:
    """One section within its limit; whatever it left unmeasured says why; gpu.json rewritten."""
    limit = budget.limit(name)
    start = time.perf_counter()
    status = "ok"
    if limit < 1.0:
        status = f"skipped: the budget was spent ({limit:.1f} s left for this section)"
    else:
        try:
            with time_limit(limit):
                section_runner(run, name)(start + limit)
        except SectionTimeout as exc:
            status = f"{exc} (--budget); the variants not finished were skipped"
        except Exception as exc:  # noqa: BLE001 - a failing section is recorded and the run goes on
            status = failed(exc)
    seconds = time.perf_counter() - start
    report.fill(section_tree(run, name), status if status != "ok" else "failed: not measured (no error raised)")
    run.sections[name] = {"status": status, "seconds": seconds, "limit_s": limit}
    print(f"[{time.perf_counter() - run.meta['start']:6.1f} s] {name}: {status} ({seconds:.1f} s of {limit:.1f} s)",
          flush=True)
    write(run)


def document(run: Run, complete: bool) -> dict[str, Any]:
    derived = report.derive(run.measured)
    report.fill(derived, report.PENDING)
    return report.finite({
        "check": "benchmarks/gpu.py", "complete": complete, "mode": run.shapes.name,
        "command": " ".join(["python -m benchmarks.gpu", *run.meta["argv"]]),
        "wall_s": time.perf_counter() - run.meta["start"], "budget_s": run.meta["budget"],
        "environment": run.meta["environment"],
        "settings": run.shapes.describe(),
        "plan": run.meta["plan"], "sections": run.sections, **derived})


def write(run: Run, complete: bool = False) -> dict[str, Any]:
    doc = document(run, complete)
    atomic_write_json(run.out / "gpu.json", doc)
    return doc


def print_plan(run: Run, per_pass: dict[str, float]) -> None:
    total = sum(entry["predicted_s"] for entry in run.meta["plan"].values())
    print(f"plan (budget {run.meta['budget']:.0f} s; one fp32 forward+backward at batch {run.shapes.batch}: "
          + ", ".join(f"{m} {s * 1e3:.1f} ms" for m, s in per_pass.items())
          + f"; bf16 guessed {BF16_SPEEDUP:g}x faster, compile {run.shapes.compile_allowance_s:.0f} s per model):")
    for name, entry in run.meta["plan"].items():
        print(f"  {name:40s} {entry['passes']:8.0f} passes  {entry['predicted_s']:7.1f} s predicted")
    print(f"  {'total':40s} {'':8s}         {total:7.1f} s predicted; a section may use what the later ones "
          f"are not predicted to need",
          flush=True)


def prepare(args: argparse.Namespace, device: torch.device, start: float) -> Run:
    shapes = TINY if args.tiny else FULL
    shapes = dataclasses.replace(shapes, warmup=args.warmup or shapes.warmup, steps=args.steps or shapes.steps)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    torch.manual_seed(SEED)
    bases = {label: build_model(name, num_classes=10, in_channels=3, **kwargs) for label, name, kwargs in shapes.models}
    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(shapes.batch, 3, shapes.size, shapes.size, generator=gen)
    y = torch.randint(0, 10, (shapes.batch,), generator=gen)
    measured = report.skeleton([label for label, _, _ in shapes.models])
    for label, _, _ in shapes.models[shapes.compile_models:]:
        report.fill(measured["training"][label]["bf16_channels_last_compile"], TINY_COMPILE_SKIP)
    meta = {"start": start, "argv": list(sys.argv[1:] if args.argv is None else args.argv), "budget": args.budget,
            "environment": environment(device), "plan": {}}
    return Run(shapes, device, bases, x, y.to(device), out, meta, measured)


def check(args: argparse.Namespace) -> int:
    start = START if args.argv is None else time.perf_counter()  # in-process calls: from the call
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type != "cuda" and (args.require_cuda or not args.tiny):
        stream = sys.stderr if args.require_cuda else sys.stdout
        print(f"benchmarks.gpu: no CUDA device here (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda or 'not built'}), nothing measured; --tiny --device cpu runs its code paths "
              f"on this CPU", file=stream)
        return 1 if args.require_cuda else 0
    run = prepare(args, device, start)
    write(run)  # an unwritable --out fails now, not after the measurements
    per_pass = probe(run)
    run.meta["plan"] = plan(run, per_pass)
    print_plan(run, per_pass)
    # The reserve covers writing the results and the interpreter's exit (compile workers shut down).
    budget = Budget(args.budget, {k: v["predicted_s"] for k, v in run.meta["plan"].items()}, start=start,
                    reserve_s=min(10.0, 0.05 * args.budget))
    for name in run.meta["plan"]:
        run_section(run, name, budget)
    doc = write(run, complete=True)
    print(report.table(doc))
    print(f"wall time {doc['wall_s']:.1f} s (budget {args.budget:.0f} s); wrote {run.out / 'gpu.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv
    try:
        return check(args)
    except UserError as exc:
        print(f"benchmarks.gpu: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
