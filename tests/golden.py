"""Golden outputs: what the commands write for fixed inputs, recorded once and compared ever after.

The record (``tests/golden/record.json``) was written by ``python tests/golden.py`` with the code as
it stood before the redesign of issue 19 (one registry, ``awp/`` in layers), so that the redesign
can be shown to change nothing a user sees. :func:`produce` runs the same commands into a folder of
the caller's (the test's own files) and reduces what they wrote to comparable values: the numbers
of ``metrics.csv`` (not its wall-clock ``time``), a digest of the weights and optimizer state of
``last.pt``, the landscape and measures files of one checkpoint (without paths and timings), every
preset's ``awp presets NAME --json`` card and, for the slow part, ``awp demo --quick``'s
``summary.json`` (without its duration). Where a later issue changes a number on purpose, it
re-records and says so in its note.

    python tests/golden.py [--demo]     # re-record (the demo part takes about 90 s)
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).resolve().parent / "golden" / "record.json"
QUIET = ["--quiet"]
RUNS = {  # name -> awp train arguments: AWP, the random baseline, and TRADES
    "at-awp": ["--preset", "digits-at-awp", "epochs=3", "save_every=1", "train_subset=120", "eval_steps=2",
               "eval_train_samples=64", "eval_test_samples=64"],
    "trades-random": ["--preset", "digits-trades-awp", "awp_kind=random", "awp_warmup=1", "epochs=2",
                      "save_every=1", "train_subset=96", "eval_steps=1", "eval_train_samples=64",
                      "eval_test_samples=64"],
}
LANDSCAPE = ["--directions", "2", "--alphas", "-0.5,0,0.5", "--samples", "32", "--steps", "2", "--xi", "0.01",
             "--xi-steps", "2", "--xi-samples", "2"]
SURFACE = ["--grid2d", "--alphas", "-0.5,0,0.5", "--betas", "-0.25,0.25", "--samples", "16", "--steps", "1"]
MEASURES = ["--samples", "32", "--steps", "2", "--set", "pac_bayes_sharpness.draws=2",
            "--set", "hessian_top_eigenvalue.iters=5", "--set", "hessian_trace.samples=3"]


def _awp(argv: list[str]) -> str:
    """Run the console command in this process; its stdout (a non-zero exit fails loudly)."""
    import awp_cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = awp_cli.main(argv)
    if code != 0:
        raise RuntimeError(f"awp {' '.join(argv)} exited {code}")
    return buffer.getvalue()


def tensor_digest(obj: Any) -> str:
    """sha256 over every tensor in ``obj`` (nested dicts/lists), with its path, dtype and shape."""
    digest = hashlib.sha256()

    def walk(value: Any, path: str) -> None:
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous()
            digest.update(f"{path}|{t.dtype}|{list(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key], f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(obj, "")
    return digest.hexdigest()


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]


def _without(obj: Any, drop: set[str]) -> Any:
    """``obj`` with every key in ``drop`` removed at any depth (paths, timings)."""
    if isinstance(obj, dict):
        return {k: _without(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_without(v, drop) for v in obj]
    return obj


def _runs(folder: Path) -> dict[str, Any]:
    record = {}
    for name, argv in RUNS.items():
        run = folder / "runs" / name
        _awp(["train", *argv, "--out", str(run), *QUIET])
        last = torch.load(run / "last.pt", weights_only=True)
        record[name] = {"metrics": _metrics(run / "metrics.csv"),
                        "last_model": tensor_digest(last["model"]),
                        "last_optimizer": tensor_digest(last["optimizer"]),
                        "best_epoch": last["best_epoch"], "epoch": last["epoch"],
                        "files": sorted(p.name for p in run.iterdir() if not p.name.startswith("."))}
    return record


def _landscape(folder: Path, checkpoint: Path) -> dict[str, Any]:
    record = {}
    for kind, argv in (("curve", LANDSCAPE), ("surface", SURFACE)):
        out = folder / f"landscape-{kind}"
        _awp(["landscape", str(checkpoint), "--out", str(out), *argv, *QUIET])
        result = out / checkpoint.stem
        info = json.loads((result / "landscape.json").read_text())
        record[kind] = {"csv": (result / "landscape.csv").read_text(),
                        "json": _without(info, {"checkpoint"})}
    return record


def _measures(folder: Path, checkpoint: Path) -> dict[str, Any]:
    out = folder / "measures"
    _awp(["measures", str(checkpoint), "--out", str(out), *MEASURES, *QUIET])
    info = json.loads((out / checkpoint.stem / "measures.json").read_text())
    return _without(info, {"checkpoint", "seconds"})


def _presets() -> dict[str, Any]:
    from awp.config import list_presets

    return {name: json.loads(_awp(["presets", name, "--json"])) for name in list_presets()}


def _demo(folder: Path) -> dict[str, Any]:
    out = folder / "demo"
    _awp(["demo", "--quick", "--out", str(out), "--work", str(folder / "demo-work")])
    return _without(json.loads((out / "summary.json").read_text()), {"duration_s"})


def produce(folder: str | Path, *, demo: bool = False) -> dict[str, Any]:
    """Run the golden commands into ``folder``; the comparable record of what they wrote."""
    folder = Path(folder)
    record = {"runs": _runs(folder)}
    checkpoint = folder / "runs" / "at-awp" / "epoch_002.pt"
    record["landscape"] = _landscape(folder, checkpoint)
    record["measures"] = _measures(folder, checkpoint)
    record["presets"] = _presets()
    if demo:
        record["demo_summary"] = _demo(folder)
    return record


def load_record() -> dict[str, Any]:
    return json.loads(RECORD.read_text())


# Names changed on purpose since the record was made (issue 19: one word per concept), each with
# its reason. Every number stays compared bit for bit; only these keys are renamed in the record.
RENAMED_SETTINGS = {"average_sharpness": {"samples": "draws"},  # random perturbations, not images
                    "hessian_trace": {"samples": "draws"}}      # Rademacher vectors, not images
ADDED_SETTINGS = {"worst_case_sharpness": {"step_size": None}}   # one definition: flatness's signature
RENAMED_FLATNESS = {"xi_samples": "xi_draws"}                    # landscape.json, same reason


def as_now(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the renames above applied, and the cache keys those settings now give
    (:func:`landscape.io.cache_key` of the same checkpoint, samples and attack)."""
    from landscape.io import cache_key

    record = json.loads(json.dumps(record))
    flatness = record["landscape"]["curve"]["json"]["flatness"]
    for old, new in RENAMED_FLATNESS.items():
        flatness[new] = flatness.pop(old)
    info = record["measures"]
    common = {k: info[k] for k in ("attack", "split", "samples", "sample_seed", "batch_size", "device_type",
                                   "precision")}
    for name, entry in info["measures"].items():
        renamed = RENAMED_SETTINGS.get(name, {})
        settings = {renamed.get(k, k): v for k, v in entry["settings"].items()}
        settings.update(ADDED_SETTINGS.get(name, {}))
        if settings != entry["settings"]:
            entry["settings"] = dict(sorted(settings.items()))
            entry["cache_key"] = cache_key(info["checkpoint_sha256"], {"measure": name, **common, "settings": settings})
    return record


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        fresh = produce(tmp, demo="--demo" in sys.argv)
    if RECORD.exists() and "--demo" not in sys.argv:
        fresh["demo_summary"] = load_record().get("demo_summary")
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")
