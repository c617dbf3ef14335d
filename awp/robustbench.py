"""RobustBench models as checkpoints of this toolkit: ``robustbench:NAME`` (Croce et al. 2021).

RobustBench is an optional extra (``pip install 'awp-landscape[robustbench]'``): its own
``load_model`` builds and loads the model, from its own model folder (downloading a missing file
with its own downloader). Before RobustBench builds anything, the entry's files are read here with
``torch.load(weights_only=True)`` (nothing is ever unpickled unsafely) and checked as
:mod:`awp.safety` checks every stranger's weights: finite values (``allow_nonfinite`` to look
anyway), then the zoo class's size on the meta device (size always; shapes of the keys its loader
keeps as they are, for CIFAR entries of one file); RobustBench's strict load does the rest.
:func:`awp.loaded.load_run` is the entry point that turns ``robustbench:NAME`` into a measurable
checkpoint.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from awp.errors import UserError, one_line
from awp.io import sha256_file
from awp.registry import unknown_name
from awp.safety import check_finite, check_size, meta_skeleton, read_foreign
from awp.threat import threat_config

__all__ = ["INSTALL_HINT", "ROBUSTBENCH_PREFIX", "RobustBenchModel", "load_robustbench", "zoo_entry"]
ROBUSTBENCH_PREFIX = "robustbench:"
INSTALL_HINT = "pip install 'awp-landscape[robustbench]'"


def _alias_autoattack() -> None:
    """robustbench imports the reference AutoAttack as ``autoattack`` (its GitHub layout); the
    package index ships the same code as ``pyautoattack``. Alias it so robustbench imports (only
    its model loading is used here, never its own AutoAttack evaluation)."""
    import importlib.util
    import sys

    if "autoattack" in sys.modules or importlib.util.find_spec("autoattack") is not None:
        return
    try:
        import pyautoattack
    except ImportError:
        return
    sys.modules["autoattack"] = pyautoattack


def _robustbench():
    _alias_autoattack()
    try:
        import robustbench.utils  # noqa: F401  (heavy: timm; imported only when asked for)
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as exc:
        if getattr(exc, "name", None) in (None, "robustbench") or str(exc).startswith("import of robustbench"):
            raise UserError(f"RobustBench models need the optional extra: {INSTALL_HINT}") from None
        # Installed but broken, e.g. robustbench 1.1 imports pkg_resources, gone from setuptools >= 81.
        raise UserError(f"robustbench is installed but cannot be imported ({exc}); "
                        f"reinstall the extra: {INSTALL_HINT}") from None
    return robustbench.utils, model_dicts, BenchmarkDataset, ThreatModel


def zoo_entry(name: str, dataset: str, threat: str):
    """(robustbench.utils, the zoo's entry for ``name``, data set enum, threat enum); unknown data
    sets, threat models and names are one line naming the closest of RobustBench's own."""
    utils, model_dicts, BenchmarkDataset, ThreatModel = _robustbench()
    try:
        ds = BenchmarkDataset(dataset)
    except ValueError:
        raise unknown_name("RobustBench data set", dataset, [d.value for d in BenchmarkDataset]) from None
    try:
        tm = ThreatModel(threat)
    except ValueError:
        raise unknown_name("RobustBench threat model", threat, [t.value for t in ThreatModel]) from None
    zoo = model_dicts[ds].get(tm, {})
    if name not in zoo:
        raise unknown_name(f"RobustBench {ds.value} {tm.value} model", name, list(zoo),
                           listing="robustbench.model_zoo lists them")
    return utils, zoo[name], ds, tm


class RobustBenchModel(nn.Module):
    """A RobustBench network as our code expects a model: [0, 1] inputs (RobustBench's convention
    too), eval mode, ``arch`` set, and no in-place ReLU (it would rewrite what a forward hook on
    the layer before captured; the outputs are unchanged)."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net
        self.arch = f"{ROBUSTBENCH_PREFIX}{name}"
        self.arch_kwargs: dict[str, Any] = {}
        for module in self.net.modules():
            activation = isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.SiLU, nn.ELU))
            if activation and getattr(module, "inplace", False):
                module.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _zoo_files(utils, entry: dict[str, Any], name: str, folder: Path) -> list[Path]:
    """The file(s) of a zoo entry in ``folder`` (an ensemble has several), downloaded by
    RobustBench's own downloader when missing, so that they can be checked before loading."""
    path = folder / f"{name}.pt"
    gdrive = entry.get("gdrive_id")
    files = [path] if not isinstance(gdrive, list) else [Path(f"{path}_m{i}.pt") for i in range(len(gdrive))]
    ids = [gdrive] if not isinstance(gdrive, list) else list(gdrive)
    for file, gid in zip(files, ids):
        if not file.is_file() and gid is not None:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                utils.download_gdrive_new(gid, str(file))
            except Exception as exc:
                raise UserError(f"RobustBench model {name} is not in {folder} and downloading it failed "
                                f"({one_line(exc, 160)}); place {file.name} there") from None
    return files


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a loaded file, by dotted path (state dicts nest under 'state_dict', 'last'...)."""
    if torch.is_tensor(obj):
        return {prefix or "tensor": obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found.update(_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _zoo_key(key: str) -> str:
    for prefix in ("module.", "model."):
        key = key[len(prefix):] if key.startswith(prefix) else key
    return key


def _check_zoo_files(entry: dict[str, Any], files: list[Path], imagenet: bool, *, allow_nonfinite: bool,
                     max_params: int | None) -> list[str]:
    """Check a zoo entry's files before RobustBench allocates its model: every tensor finite, the
    zoo class's size (built on the meta device), and, for one-file CIFAR entries, the shape of
    every stored tensor whose name the class has. Returns the non-finite names (allowed)."""
    nonfinite, state = [], {}
    for file in (f for f in files if f.is_file()):
        obj = read_foreign(file)
        nonfinite += check_finite(_tensors(obj), str(file), allow=allow_nonfinite)
        if isinstance(obj, dict):
            obj = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
            state = {_zoo_key(str(k)): v for k, v in obj.items() if torch.is_tensor(v)}
    try:
        skeleton = meta_skeleton(entry["model"])
    except Exception:  # a class that needs real values to build (timm's drop-path schedules...)
        return nonfinite  # nothing the file controls: RobustBench's strict load checks it
    source = str(files[0])
    check_size(skeleton, source, max_params)
    if len(files) == 1 and not imagenet:
        own = {_zoo_key(k): v for k, v in skeleton.state_dict().items()}
        wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise UserError(f"weights in {source} do not fit RobustBench's architecture: {len(wrong)} wrong shape "
                            f"({wrong[0]}: stored {list(state[wrong[0]].shape)}, the architecture's "
                            f"{list(own[wrong[0]].shape)}{', ...' if len(wrong) > 1 else ''})")
    return nonfinite


def load_robustbench(name: str, *, dataset: str = "cifar10", threat: str = "Linf",
                     model_dir: str | Path | None = None, allow_nonfinite: bool = False,
                     max_params: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) of RobustBench's ``name`` through ``robustbench.utils.load_model``.

    The weights come from ``{model_dir}/{dataset}/{threat}/{name}.pt`` (``model_dir`` defaults
    to RobustBench's './models'); RobustBench downloads the file only when it is missing. The file
    is first read by us with ``weights_only=True`` so that nothing is ever unpickled unsafely, and
    checked before RobustBench builds anything (:func:`_check_zoo_files`). ``meta`` is shaped like
    :func:`awp.checkpoint.load_checkpoint`'s: ``arch`` 'robustbench:NAME', ``dataset``, ``config``
    (threat model: Linf 8/255 or L2 0.5), ``path``, ``sha256``, ``provenance`` (and
    ``nonfinite_weights`` when ``allow_nonfinite`` let some through).
    """
    utils, entry, ds, tm = zoo_entry(name, dataset, threat)
    root = Path(model_dir) if model_dir is not None else Path("./models")
    folder = root / ds.value / tm.value
    files = _zoo_files(utils, entry, name, folder)
    nonfinite = _check_zoo_files(entry, files, ds.value == "imagenet", allow_nonfinite=allow_nonfinite,
                                 max_params=max_params)
    try:
        net = utils.load_model(model_name=name, model_dir=str(root), dataset=ds.value, threat_model=tm.value)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UserError(f"RobustBench could not load {name} from {folder}: {one_line(exc, 300)}") from None
    model = RobustBenchModel(net.float(), name).eval()
    existing = [f for f in files if f.is_file()]
    digests = [sha256_file(f) for f in existing]
    # An ensemble is several files: its identity is the hash of their hashes, in order.
    digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    meta = {"arch": model.arch, "arch_kwargs": {}, "dataset": ds.value, "method": "unknown",
            "awp_gamma": None, "epoch": None, "metrics": {}, "config": threat_config(ds.value, tm.value),
            "path": str(existing[0]) if existing else str(files[0]), "sha256": digest,
            "provenance": {"source": str(existing[0].resolve()) if existing else None, "sha256": digest,
                           "format": "robustbench", "model_name": name, "threat": tm.value},
            **({"nonfinite_weights": nonfinite} if nonfinite else {})}
    return model, meta

