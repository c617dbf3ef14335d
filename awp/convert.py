"""Other people's checkpoints: import the official AWP, TRADES, MART and RST releases, load
RobustBench models, export ours for RobustBench (the README's "Command line").

Wu, Xia & Wang (NeurIPS 2020) build on the code of Rice et al. 2020 (AT, PreActResNet-18),
TRADES (Zhang et al. 2019), MART (Wang et al. 2020) and RST (Carmon et al. 2019); the published
checkpoints of each keep that code's conventions:

=============  ==========================================  ===================================
format         file layout                                 inputs the network expects
=============  ==========================================  ===================================
official-awp   ``model.state_dict()`` of nn.DataParallel    the at-awp scripts normalize with
               (``module.`` keys)                           the data set's mean/std first
trades         bare state dict, maybe ``module.``; the      raw [0, 1] images
               WRN carries the unused ``sub_block1``
mart           bare state dict, maybe ``module.``           raw [0, 1] images
rst            ``{'state_dict': ..., 'epoch': ...}``,       raw [0, 1] images
               ``module.`` keys
=============  ==========================================  ===================================

(TRADES-AWP, MART-AWP and RST-AWP checkpoints follow the trades / mart / rst rows.) Our models
normalize inside (``awp.models.Normalize``), so importing puts that repository's mean/std into
``arch_kwargs`` where its training loop normalized outside. Every foreign file is read with
``torch.load(weights_only=True)``; a file that needs arbitrary unpickling is refused with one
line, never retried unsafely. Imports and exports record their ``provenance`` (source path,
sha256, format) next to the weights.

RobustBench is an optional extra (``pip install 'awp-landscape[robustbench]'``): its own
``load_model`` builds and loads the model (:func:`awp.checkpoint.load_run` is the one entry point
for our checkpoints and ``robustbench:NAME``). This module only converts.

Every way in checks the weights as :mod:`awp.checkpoint` does before anything real is allocated:
finite values (``allow_nonfinite`` to look anyway), then names, shapes and size against the
architecture built on the meta device (size limit: ``max_params`` or ``$AWP_MAX_PARAMS``).
RobustBench builds its own models: there the skeleton of the zoo's class is checked (size always;
shapes of the keys its loader keeps as they are, for CIFAR entries of one file), and RobustBench's
strict load does the rest.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from awp.checkpoint import (FORMAT_VERSION, ROBUSTBENCH_PREFIX, check_finite, check_size, load_checkpoint,
                            load_state_strict, meta_skeleton, model_from_state, nonfinite_warning, read_checkpoint,
                            safe_load, strip_prefix)
from awp.errors import UsageError, UserError
from awp.io import atomic_torch_save, atomic_write_json, check_output_file, sha256_file

__all__ = ["FORMATS", "EXPORT_FORMATS", "ROBUSTBENCH_PREFIX", "RobustBenchModel", "import_checkpoint",
           "load_foreign_state", "load_robustbench", "export_checkpoint", "threat_config"]
INSTALL_HINT = "pip install 'awp-landscape[robustbench]'"
EXPORT_FORMATS = ("robustbench",)


@dataclass(frozen=True)
class _Format:
    source: str            # the repository whose layout this is
    normalized: bool       # did its training loop normalize the inputs before the network?
    description: str


FORMATS: dict[str, _Format] = {
    "official-awp": _Format("csdongxian/AWP (at-awp)", True,
                            "AT-AWP: DataParallel state dict; inputs normalized with the data set's mean/std"),
    "trades": _Format("yaodongyu/TRADES", False,
                      "TRADES / TRADES-AWP: state dict, WRN with unused sub_block1; raw [0, 1] inputs"),
    "mart": _Format("YisenWang/MART", False, "MART / MART-AWP: state dict; raw [0, 1] inputs"),
    "rst": _Format("yaircarmon/semisup-adv", False,
                   "RST / RST-AWP: {'state_dict': ...} with module. keys; raw [0, 1] inputs"),
}

# The constants of the at-awp scripts (inherited from locuslab/robust_overfitting), digit for
# digit: our data module rounds CIFAR-100's, and a rounded mean would shift every logit.
OFFICIAL_AWP_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                 (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)),
    "svhn": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

# The threat models RobustBench ranks, as our attack settings (pixel units, step eps/4 as `awp eval`).
_THREATS = {"linf": ("linf", 8 / 255), "l2": ("l2", 0.5)}
_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet": 1000}


# --------------------------------------------------------------------------------------------
# Safe reading


def _safe_load(path: Path) -> Any:
    """A foreign file read like our checkpoints (:func:`awp.checkpoint.safe_load`), with a hint on
    how to turn a trusted file that needs unpickling into a plain state dict."""
    return safe_load(path, what="file", trusted_hint=(
        "if you trust its source, convert it once: obj = torch.load(path, weights_only=False); "
        "torch.save({k: v for k, v in obj.get('state_dict', obj).items() if torch.is_tensor(v)}, "
        "'plain.pt'), then import plain.pt"))


def _check_format(format: str) -> _Format:
    if format not in FORMATS:
        raise UsageError(f"unknown checkpoint format {format!r}; choose from: {', '.join(FORMATS)}")
    return FORMATS[format]


def load_foreign_state(src: str | Path, format: str) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint, ``module.`` prefixes removed (nothing else changed).

    Accepts a bare state dict or a dict holding one under ``state_dict`` (RST also stores
    ``epoch`` and the optimizer there). A checkpoint of this toolkit, or a dict without weights,
    is refused with one line naming what the file holds.
    """
    _check_format(format)
    path = Path(src)
    obj = _safe_load(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if "arch" in obj and "model" in obj and "arch_kwargs" in obj:
        raise UsageError(f"{path} is already a checkpoint of this toolkit; no import needed")
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    others = [str(k) for k, v in obj.items() if not torch.is_tensor(v)]
    if not tensors or others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise UserError(f"{path} is not a {format} state dict: it holds {len(tensors)} tensors and "
                        f"non-tensor entries ({shown or 'none'}); expected parameter names -> tensors "
                        f"or {{'state_dict': ...}}")
    return strip_prefix(tensors, prefixes=("module.",))


# --------------------------------------------------------------------------------------------
# Import


def threat_config(dataset: str, threat: str = "Linf") -> dict[str, Any]:
    """The training-config fields a foreign model needs for ``awp eval`` / ``awp landscape``:
    its data set and the standard threat model (Linf 8/255 or L2 0.5, PGD step eps/4)."""
    key = str(threat).lower()
    if key not in _THREATS:
        raise UsageError(f"unknown threat model {threat!r}; choose from: Linf, L2")
    norm, eps = _THREATS[key]
    return {"dataset": dataset, "eps": eps, "step_size": eps / 4, "norm": norm}


def _num_classes(dataset: str, state: dict[str, torch.Tensor]) -> int:
    if dataset in _CLASSES:
        return _CLASSES[dataset]
    # Unknown data set: the classifier is the last 2-D weight of the state dict.
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(last[-1].shape[0]) if last else 10


def import_checkpoint(src: str | Path, *, format: str, arch: str, dataset: str, out: str | Path,
                      arch_kwargs: dict[str, Any] | None = None, normalize: bool | None = None,
                      threat: str = "Linf", method: str | None = None, awp_gamma: float | None = None,
                      allow_nonfinite: bool = False, max_params: int | None = None,
                      log: Callable[[str], None] | None = None) -> Path:
    """Convert a published checkpoint into this toolkit's format; returns ``out``.

    ``format`` is a key of :data:`FORMATS`; ``arch`` one of ``awp.models.list_models()``
    ('preactresnet18', 'wrn-34-10', 'wrn-28-10'; depth/width can be overridden in
    ``arch_kwargs``). ``normalize`` (default: the format's convention) puts the repository's
    mean/std for ``dataset`` into the model; ``arch_kwargs['mean'/'std']`` win over both.
    TRADES' unused ``sub_block1.*`` entries are dropped (listed in the provenance); anything
    else that does not fit fails with one line naming the keys. The weights are checked (finite,
    names, shapes, size: :func:`awp.checkpoint.model_from_state`) before the model is allocated,
    and loaded strictly before anything is written; ``allow_nonfinite`` records non-finite
    tensors in the provenance instead of refusing them (and tells ``log``).
    """
    spec = _check_format(format)
    src, out = Path(src), check_output_file(out, "--out")
    state = load_foreign_state(src, format)
    nonfinite = check_finite(state, str(src), allow=allow_nonfinite)
    if nonfinite and log is not None:
        log(nonfinite_warning(str(src), nonfinite))
    kwargs = dict(arch_kwargs or {})
    num_classes = int(kwargs.pop("num_classes", _num_classes(dataset, state)))
    if normalize is None:
        normalize = spec.normalized
    if normalize and "mean" not in kwargs and "std" not in kwargs:
        if dataset not in OFFICIAL_AWP_NORMALIZATION:
            raise UsageError(f"no known input normalization of {spec.source} for data set {dataset!r}; "
                             f"pass arch_kwargs mean/std or normalize=False")
        mean, std = OFFICIAL_AWP_NORMALIZATION[dataset]
        kwargs["mean"], kwargs["std"] = list(mean), list(std)
    dropped = sorted(k for k in state if k.startswith("sub_block1.")) if arch.startswith("wrn") else []
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    model = model_from_state(arch, {**kwargs, "num_classes": num_classes}, state, str(src), max_params=max_params)
    provenance = {"source": str(src.resolve()), "sha256": sha256_file(src), "format": format,
                  "repository": spec.source, "normalized_inputs": bool(normalize),
                  "dropped_keys": dropped, **({"nonfinite_weights": nonfinite} if nonfinite else {})}
    payload = {"format_version": FORMAT_VERSION,
               "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               "arch": arch, "arch_kwargs": dict(model.arch_kwargs), "dataset": dataset,
               "method": method or "unknown", "awp_gamma": None if awp_gamma is None else float(awp_gamma),
               "epoch": None, "metrics": {}, "config": {**threat_config(dataset, threat), "model": arch},
               "provenance": provenance}
    atomic_torch_save(payload, out)
    return out


# --------------------------------------------------------------------------------------------
# RobustBench


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


def _zoo_entry(name: str, dataset: str, threat: str):
    utils, model_dicts, BenchmarkDataset, ThreatModel = _robustbench()
    try:
        ds, tm = BenchmarkDataset(dataset), ThreatModel(threat)
    except ValueError:
        raise UsageError(f"RobustBench has no data set {dataset!r} / threat model {threat!r} "
                         f"(data sets: cifar10, cifar100, imagenet; threats: Linf, L2, corruptions)") from None
    zoo = model_dicts[ds].get(tm, {})
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=4)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"RobustBench has no model {name!r} for {dataset} {threat}{hint}")
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
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise UserError(f"RobustBench model {name} is not in {folder} and downloading it failed "
                                f"({reason}); place {file.name} there") from None
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
        obj = _safe_load(file)
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
    utils, entry, ds, tm = _zoo_entry(name, dataset, threat)
    root = Path(model_dir) if model_dir is not None else Path("./models")
    folder = root / ds.value / tm.value
    files = _zoo_files(utils, entry, name, folder)
    nonfinite = _check_zoo_files(entry, files, ds.value == "imagenet", allow_nonfinite=allow_nonfinite,
                                 max_params=max_params)
    try:
        net = utils.load_model(model_name=name, model_dir=str(root), dataset=ds.value, threat_model=tm.value)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(f"RobustBench could not load {name} from {folder}: {first}") from None
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


# --------------------------------------------------------------------------------------------
# Export


def _robustbench_state(payload: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Our weights in RobustBench's naming: WRN and PreActResNet keys are already the same;
    built-in normalization becomes RobustBench's ``mu`` / ``sigma`` buffers (as in its
    Rice2020OverfittingNet and CIFAR-100 Wu2020AdversarialNet)."""
    arch, kw = payload["arch"], payload["arch_kwargs"]
    if not (arch.startswith("wrn") or arch == "preactresnet18"):
        raise UserError(f"{source}: RobustBench has no architecture for {arch!r} (exportable: "
                        f"preactresnet18, wrn-34-10, wrn-28-10)")
    state = {k: v.detach().cpu().clone() for k, v in strip_prefix(payload["model"]).items()}
    mean, std = kw.get("mean"), kw.get("std")
    if mean is not None or std is not None:
        channels = int(kw.get("in_channels", 3))
        state["mu"] = torch.tensor(mean if mean is not None else [0.0] * channels).view(1, -1, 1, 1)
        state["sigma"] = torch.tensor(std if std is not None else [1.0] * channels).view(1, -1, 1, 1)
    return state


def _fit_to_zoo(state: dict[str, torch.Tensor], name: str, dataset: str, threat: str,
                source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit ``state`` to RobustBench's registered architecture ``name``: add the unused
    ``sub_block1`` (a copy of block1, never run) where it has one, check its mu/sigma."""
    _, entry, _, _ = _zoo_entry(name, dataset, threat)
    target = entry["model"]().state_dict()
    added = []
    if any(k.startswith("sub_block1.") for k in target) and not any(k.startswith("sub_block1.") for k in state):
        for key in [k for k in target if k.startswith("sub_block1.")]:
            twin = "block1." + key[len("sub_block1."):]
            if twin in state:
                state[key] = state[twin].clone()
                added.append(key)
    ours_norm, theirs_norm = "mu" in state, "mu" in target
    if ours_norm and not theirs_norm:
        raise UserError(f"{source} normalizes its inputs inside the model, but RobustBench's {name} takes "
                        f"unnormalized [0, 1] inputs with no mean/std: the export would compute something else")
    if theirs_norm and not ours_norm:
        raise UserError(f"RobustBench's {name} normalizes its inputs with mu/sigma, but {source} does not")
    if ours_norm and not all(torch.allclose(state[k].float(), target[k].float(), atol=1e-6) for k in ("mu", "sigma")):
        raise UserError(f"{source} normalizes with mean {state['mu'].flatten().tolist()}, RobustBench's {name} "
                        f"with {target['mu'].flatten().tolist()}")
    return state, added


def export_checkpoint(ckpt: str | Path, *, format: str = "robustbench", out: str | Path,
                      model_name: str | None = None, dataset: str | None = None,
                      threat: str = "Linf", allow_nonfinite: bool = False,
                      log: Callable[[str], None] | None = None) -> Path:
    """Write our checkpoint's weights as a bare state dict for RobustBench; returns ``out``.

    Without ``model_name`` the keys fit RobustBench's ``WideResNet(depth, widen_factor,
    num_classes)`` or ``PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)`` (plus
    ``mu``/``sigma`` buffers when the model normalizes inside). With ``model_name`` (needs the
    robustbench extra) they fit that registered model (e.g. ``sub_block1`` added for the WRNs
    RobustBench registers with it), are loaded into it strictly and must give our model's
    outputs, so the file can go to ``{model_dir}/{dataset}/{threat}/{model_name}.pt``. The
    provenance goes next to it as ``<out>.provenance.json`` (a state dict holds only tensors).
    Non-finite weights are refused unless ``allow_nonfinite`` (then listed in the provenance and
    told to ``log``).
    """
    if format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose from: {', '.join(EXPORT_FORMATS)}")
    ckpt, out = Path(ckpt), check_output_file(out, "--out")
    check_output_file(out.with_name(out.name + ".provenance.json"))
    payload = read_checkpoint(ckpt, allow_nonfinite=allow_nonfinite)
    if payload.get("nonfinite_weights") and log is not None:
        log(nonfinite_warning(str(ckpt), payload["nonfinite_weights"]))
    state = _robustbench_state(payload, str(ckpt))
    added: list[str] = []
    if model_name is not None:
        dataset = dataset or payload.get("dataset") or "cifar10"
        state, added = _fit_to_zoo(state, model_name, dataset, threat, str(ckpt))
        _, entry, _, _ = _zoo_entry(model_name, dataset, threat)
        target = entry["model"]()
        load_state_strict(target, state, f"the export of {ckpt}")
        ours, _ = load_checkpoint(ckpt, allow_nonfinite=allow_nonfinite)
        x = torch.rand(2, int(payload["arch_kwargs"].get("in_channels", 3)), 32, 32,
                       generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            same = torch.allclose(target.eval()(x.clone()), ours.eval()(x), rtol=1e-4, atol=1e-5, equal_nan=True)
        if not same:
            raise UserError(f"RobustBench's {model_name} loads the weights of {ckpt} but computes other "
                            f"outputs: it is a different architecture")
    atomic_torch_save(state, out)
    atomic_write_json(out.with_name(out.name + ".provenance.json"),
                      {"source": str(ckpt.resolve()), "sha256": sha256_file(ckpt), "format": format,
                       "arch": payload["arch"], "arch_kwargs": payload["arch_kwargs"],
                       "model_name": model_name, "dataset": dataset or payload.get("dataset"),
                       "threat": threat, "added_keys": added, "output_sha256": sha256_file(out),
                       **{k: payload[k] for k in ("nonfinite_weights",) if k in payload}})
    return out
