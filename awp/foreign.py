"""Other people's checkpoints: import the official AWP, TRADES, MART and RST releases, export ours
for RobustBench (the README's "Command line").

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
``arch_kwargs`` where its training loop normalized outside: the at-awp scripts' constants, which
are the data sets' own (:func:`awp.data.dataset_spec`, digit for digit). Every foreign file is read
with ``torch.load(weights_only=True)`` (:func:`awp.safety.read_foreign`); a file that needs
arbitrary unpickling is refused with one line, never retried unsafely. Imports and exports record
their ``provenance`` (source path, sha256, format) next to the weights. The weights are checked as
:mod:`awp.safety` checks every stranger's (finite, then names, shapes and size on the meta device)
before anything real is allocated.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from awp.checkpoint_file import FORMAT_VERSION, check_fits_data, load_checkpoint, model_from_state, read_checkpoint
from awp.data import dataset_spec
from awp.errors import UsageError, UserError
from awp.io import atomic_torch_save, atomic_write_json, check_output_file, sha256_file
from awp.registry import Registry
from awp.robustbench import zoo_entry
from awp.safety import check_finite, load_state_strict, nonfinite_warning, read_foreign, strip_prefix
from awp.threat import threat_config

__all__ = ["FORMATS", "EXPORT_FORMATS", "import_checkpoint", "load_foreign_state", "export_checkpoint"]


@dataclass(frozen=True)
class ForeignFormat:
    """A published checkpoint layout: the repository it comes from and whether its training loop
    normalized the inputs before the network."""

    source: str
    normalized: bool


FORMATS: Registry[ForeignFormat] = Registry("checkpoint format")
FORMATS.register("official-awp", ForeignFormat("csdongxian/AWP (at-awp)", True),
                 description="AT-AWP: DataParallel state dict; inputs normalized with the data set's mean/std")
FORMATS.register("trades", ForeignFormat("yaodongyu/TRADES", False),
                 description="TRADES / TRADES-AWP: state dict, WRN with unused sub_block1; raw [0, 1] inputs")
FORMATS.register("mart", ForeignFormat("YisenWang/MART", False),
                 description="MART / MART-AWP: state dict; raw [0, 1] inputs")
FORMATS.register("rst", ForeignFormat("yaircarmon/semisup-adv", False),
                 description="RST / RST-AWP: {'state_dict': ...} with module. keys; raw [0, 1] inputs")
EXPORT_FORMATS: Registry[str] = Registry("export format", {
    "robustbench": "a bare state dict that RobustBench's architecture loads strictly"})


def load_foreign_state(src: str | Path, format: str) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint, ``module.`` prefixes removed (nothing else changed).

    Accepts a bare state dict or a dict holding one under ``state_dict`` (RST also stores
    ``epoch`` and the optimizer there). A checkpoint of this toolkit, or a dict without weights,
    is refused with one line naming what the file holds.
    """
    FORMATS.resolve(format)
    path = Path(src)
    obj = read_foreign(path)
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
    spec = FORMATS.get(format)
    data = dataset_spec(dataset)  # an unknown data set: one line naming the closest, before anything is read
    src, out = Path(src), check_output_file(out, "--out")
    state = load_foreign_state(src, format)
    nonfinite = check_finite(state, str(src), allow=allow_nonfinite)
    if nonfinite and log is not None:
        log(nonfinite_warning(str(src), nonfinite))
    kwargs = dict(arch_kwargs or {})
    num_classes = int(kwargs.pop("num_classes", data.num_classes))
    kwargs.setdefault("in_channels", data.image_shape[0])
    if normalize is None:
        normalize = spec.normalized
    if normalize and "mean" not in kwargs and "std" not in kwargs:
        mean, std = data.mean, data.std
        kwargs["mean"], kwargs["std"] = list(mean), list(std)
    dropped = sorted(k for k in state if k.startswith("sub_block1.")) if arch.startswith("wrn") else []
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    model = model_from_state(arch, {**kwargs, "num_classes": num_classes}, state, str(src), max_params=max_params)
    check_fits_data(arch, model.arch_kwargs, dataset, str(src))
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
    _, entry, _, _ = zoo_entry(name, dataset, threat)
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
    EXPORT_FORMATS.resolve(format)
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
        _, entry, _, _ = zoo_entry(model_name, dataset, threat)
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
