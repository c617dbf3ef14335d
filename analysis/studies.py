"""``awp demo --study NAME``: the demo's story and the offline studies beside it, one registry.

The default study, ``paper``, is the demo itself (:mod:`analysis.demo`). Every other study is its
own set of runs on digits with its own figures, ``summary.json`` and ``report.md`` under
``figures/<name>/`` (runs under ``runs/<name>/``), each within 15 minutes on 2 cores. An entry is
``module:function`` with the signature ``run(out, work, *, quick=False, workers=None)``; the
module is imported only when its study runs, so a study may sit anywhere above this one.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from awp.registry import Registry

STUDIES: Registry[str] = Registry("study", listing="awp demo --help")
STUDIES.register("paper", "analysis.demo:run_demo",
                 description="the paper's story: AT, TRADES, MART, RST with and without AWP, landscapes, "
                             "correlation, figures (the default)")
DEFAULT_STUDY = "paper"


def study_function(name: str) -> Callable[..., object]:
    """The function that runs study ``name`` (an unknown name is one line)."""
    module, _, function = STUDIES.get(name).partition(":")
    return getattr(importlib.import_module(module), function)


def study_folders(name: str, out: str | None, work: str | None) -> tuple[Path, Path]:
    """``--out`` / ``--work`` or the study's defaults: figures/ and runs/demo for the paper's,
    figures/<name>/ and runs/<name>/ for the others."""
    name = STUDIES.resolve(name)
    if name == DEFAULT_STUDY:
        return Path(out or "figures"), Path(work or "runs/demo")
    return Path(out or f"figures/{name}"), Path(work or f"runs/{name}")
