"""The measures of one checkpoint as one library call, cached and resumable like a landscape.

``compute_measures(checkpoint_or_run, MeasureConfig(...), out)`` computes the measures of
:mod:`landscape.measures` on the same fixed seeded subset of a split and under the same attack as
:func:`landscape.compute_landscape` (the data set's evaluation threat model unless the config says
otherwise), and writes ``out/measures.json``: every value with the settings that produced it and
its cache key (checkpoint sha256 + measure + settings + attack + samples + precision). The file is
rewritten after every measure, so an interrupted call resumes with the measures still missing, and
a second call with the same settings computes nothing. Under torchrun the measures are split across
the group (each rank computes whole measures; rank 0 writes).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from awp import distributed
from awp.loaded import LoadedCheckpoint, load_run
from awp.data import SPLITS
from awp.checks import check_int, check_seed
from awp.errors import UsageError
from awp.registry import check_choice
from awp.io import atomic_write_json
from awp.runtime import PRECISIONS, resolve_runtime
from awp.threat import check_threat
from landscape import io as lio
from landscape.compute import landscape_attack, landscape_samples
from landscape.evaluate import shard
from landscape.measures import MEASURES, get_measure, measure

FILE = "measures.json"


def parse_measure_names(text: str) -> tuple[str, ...]:
    """``all`` -> () (every measure); ``a,b`` -> ('a', 'b')."""
    if text.strip() == "all":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UsageError("--measures needs 'all' or at least one measure name")
    return names


@dataclass(frozen=True)
class MeasureConfig:
    """Which measures, on which samples, under which attack; checked on construction.

    ``measures``: names from :data:`landscape.measures.MEASURES` (empty: all of them). ``clean``:
    measure on the clean loss (attack None) where a measure allows it. ``eps`` / ``step_size`` None:
    the data set's evaluation threat model (:func:`awp.threat.eval_threat`). ``settings``:
    per-measure overrides of its defaults,
    e.g. ``{"pac_bayes_sharpness": {"draws": 3}}``.
    """

    measures: tuple[str, ...] = field(default=(), metadata={"parse": parse_measure_names})
    split: str = "train"
    samples: int = 256                      # images of the split (a fixed seeded subset)
    sample_seed: int = 0
    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    seed: int = 0
    clean: bool = False
    batch_size: int = 256
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = tuple(self.measures) or tuple(MEASURES)
        object.__setattr__(self, "measures", tuple(MEASURES.resolve(n) for n in names))  # an unknown name: one line
        # each measure's overrides typed and checked now (an unknown setting: one line), under current names
        object.__setattr__(self, "settings", {MEASURES.resolve(name): get_measure(name).overrides(**dict(values))
                                              for name, values in self.settings.items()})
        if self.clean:
            needing = [n for n in self.measures if get_measure(n).needs_attack]
            if needing:
                raise UsageError(f"measure {needing[0]!r} needs an attack; drop it or measure on the "
                                 "adversarial loss (clean=False)")
        for key, low in (("samples", 1), ("steps", 0), ("batch_size", 1)):
            check_int(getattr(self, key), key, low)
        check_seed(self.seed, "seed")
        check_seed(self.sample_seed, "sample_seed")
        check_threat(eps=self.eps, step_size=self.step_size)
        check_choice("split", self.split, SPLITS)
        check_choice("precision", self.precision, PRECISIONS)


@dataclass
class MeasuresResult:
    """``values`` (measure -> float), ``info`` (what ``measures.json`` holds) and ``path`` (None in memory)."""

    values: dict[str, float]
    info: dict[str, Any]
    path: Path | None = None


def _previous(path: Path | None) -> dict[str, Any]:
    """The entries of an earlier measures.json (nothing when absent, torn or foreign)."""
    if path is None:
        return {}
    try:
        info = json.loads(path.read_text())
        return dict(info.get("measures") or {}) if isinstance(info, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _one(name: str, run: LoadedCheckpoint, settings: dict[str, Any], data: tuple, attack: Any,
         runtime: Any) -> dict[str, Any]:
    started = time.perf_counter()
    value = measure(name, run.model, data, attack, runtime=runtime, **settings)
    return {"value": value, "seconds": round(time.perf_counter() - started, 3)}


def compute_measures(checkpoint: str | Path | LoadedCheckpoint, config: MeasureConfig | None = None,
                     out: str | Path | None = None, *, device: str | torch.device = "auto",
                     data_dir: str | None = None, log: Any = None, **load: Any) -> MeasuresResult:
    """The measures of a checkpoint: compute the missing ones, reuse the cached ones, save.

    ``checkpoint``: a path, ``'robustbench:NAME'`` (``load`` passes ``dataset``, ``threat``,
    ``model_dir``) or a :class:`~awp.loaded.LoadedCheckpoint`. ``out``: the folder of ``measures.json``
    (None: in memory). ``log(message)`` is told about each measure. The model is left bit-identical.
    """
    config = MeasureConfig() if config is None else config
    runtime = distributed.localize(resolve_runtime(device, config.precision, config.channels_last, config.compile))
    run = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_run(checkpoint, runtime.device,
                                                                               data_dir=data_dir, **load)
    run.model = runtime.prepare_model(run.model)
    data = landscape_samples(run, config)
    attack = None if config.clean else landscape_attack(run, config)
    common = {"attack": None if attack is None else attack.describe(), "split": config.split,
              "samples": len(data[0]), "sample_seed": config.sample_seed, "batch_size": config.batch_size,
              "device_type": runtime.device.type, "precision": runtime.precision}
    settings = {n: get_measure(n).settings(**config.settings.get(n, {})) for n in config.measures}
    keys = {n: _key(run, common, n, settings[n]) for n in config.measures}
    path = None if out is None else Path(out) / FILE
    entries = _still_valid(_previous(path), keys, run, common)
    todo = [n for n in config.measures if n not in entries]
    world = distributed.world() if distributed.initialized() else 1
    mine = shard(todo, distributed.rank(), world) if world > 1 else todo
    for r in range(-(-len(todo) // world)):
        done = {mine[r]: _one(mine[r], run, settings[mine[r]], data, attack, runtime)} if r < len(mine) else {}
        for got in distributed.all_gather_objects(done):
            for name, entry in got.items():
                entries[name] = {**entry, "cache_key": keys[name], "computed": True, "settings": settings[name]}
                if log is not None:
                    log(f"{name} = {entry['value']:.6g} ({entry['seconds']:.1f} s)")
        if path is not None and distributed.is_main():
            atomic_write_json(path, _info(run, common, entries, config, complete=False))
    info = _info(run, common, entries, config, complete=True)
    if path is not None and distributed.is_main():
        atomic_write_json(path, info)
    # a value that was not finite comes back from measures.json as null: it stays NaN
    values = {n: float("nan") if entries[n]["value"] is None else float(entries[n]["value"]) for n in config.measures}
    return MeasuresResult(values=values, info=info, path=path)


def _key(run: LoadedCheckpoint, common: dict[str, Any], name: str, settings: dict[str, Any]) -> str:
    """The cache key of one measure: checkpoint sha256, the measure, its settings, samples, attack, precision."""
    return lio.cache_key(run.sha256, {"measure": name, **common, "settings": settings})


def _still_valid(previous: dict[str, Any], keys: dict[str, str], run: LoadedCheckpoint,
                 common: dict[str, Any]) -> dict[str, Any]:
    """The entries of an earlier measures.json that still hold: those asked for now under the same
    key, and every other one whose key its own settings still give (same checkpoint, samples and
    attack), so measuring one more measure never drops the others."""
    kept = {}
    for name, entry in previous.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
            continue
        key = keys[name] if name in keys else _key(run, common, name, entry["settings"])
        if entry.get("cache_key") == key:
            kept[name] = {**entry, "computed": False}
    return kept


def _info(run: LoadedCheckpoint, common: dict[str, Any], entries: dict[str, Any], config: MeasureConfig,
          complete: bool) -> dict[str, Any]:
    meta = run.meta
    # the measures asked for, in their order, then those kept from earlier calls
    ordered = {n: entries[n] for n in (*config.measures, *entries) if n in entries}
    return {"checkpoint": run.source, "checkpoint_sha256": run.sha256, "arch": meta.get("arch"),
            "dataset": meta.get("dataset"), "method": meta.get("method"), "awp_gamma": meta.get("awp_gamma"),
            "epoch": meta.get("epoch"), **common, "complete": complete,
            "measures_computed": sum(1 for n in config.measures if n in entries and entries[n].get("computed")),
            "measures_reused": sum(1 for n in config.measures if n in entries and not entries[n].get("computed")),
            "measures": ordered,
            # weights that --allow-nonfinite let through: every value above is suspect
            **({"nonfinite_weights": meta["nonfinite_weights"]} if meta.get("nonfinite_weights") else {})}
