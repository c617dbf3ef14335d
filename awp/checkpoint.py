"""Checkpoints, one import for a notebook: the public names of the checkpoint layers.

Checkpoint handling is four layers, each importing only those before it:

1. :mod:`awp.safety`: weights from strangers (``safe_load``, ``check_finite``, ``meta_skeleton``,
   ``check_state``, the size limit);
2. :mod:`awp.checkpoint_file`: this toolkit's format (``save_checkpoint``, ``read_checkpoint``,
   ``load_checkpoint``, ``model_from_state``);
3. :mod:`awp.foreign` (official AWP / TRADES / MART / RST releases, export for RobustBench) and
   :mod:`awp.robustbench` (``robustbench:NAME``);
4. :mod:`awp.loaded`: a checkpoint ready to measure (``load_run`` -> :class:`LoadedCheckpoint`
   with model, config, data and attack) and RST's pseudo-labels from one.

This module re-exports their public names, so ``from awp.checkpoint import load_run`` keeps
working; code inside the toolkit imports from the layer itself, and nothing imports this module
but notebooks, tests and the command line.
"""
from awp.checkpoint_file import (FORMAT_VERSION, REQUIRED, load_checkpoint, model_from_state, model_state,
                                 read_checkpoint, save_checkpoint)
from awp.loaded import LoadedCheckpoint, Run, load_run, pseudo_label_checkpoint
from awp.robustbench import ROBUSTBENCH_PREFIX
from awp.safety import (DEFAULT_MAX_PARAMS, MAX_PARAMS_ENV, NONFINITE_HINT, TRUSTED_HINT, check_finite, check_size,
                        check_state, check_tensors, load_state_strict, meta_skeleton, nonfinite_tensors,
                        nonfinite_warning, safe_load, size_limit, strip_prefix)

__all__ = ["DEFAULT_MAX_PARAMS", "FORMAT_VERSION", "LoadedCheckpoint", "MAX_PARAMS_ENV", "NONFINITE_HINT",
           "REQUIRED", "ROBUSTBENCH_PREFIX", "Run", "TRUSTED_HINT", "check_finite", "check_size", "check_state",
           "check_tensors", "load_checkpoint", "load_run", "load_state_strict", "meta_skeleton", "model_from_state",
           "model_state", "nonfinite_tensors", "nonfinite_warning", "pseudo_label_checkpoint", "read_checkpoint",
           "safe_load", "save_checkpoint", "size_limit", "strip_prefix"]
