"""awp: adversarial training with Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020).

The names a notebook needs, from one import (``import awp``; timm's ``create_model`` /
``list_models`` is the model): configs and presets, training, models, data sets, methods,
attacks, weight perturbations, checkpoints, evaluation, threat models, and the registry every
table of choices is made of. Each name keeps its home module too (``awp.train.fit``,
``awp.checkpoint.load_run``, ...), which is where its documentation lives.

Layers (each imports only those before it): errors, registry, checks, settings, io, weights,
threat, runtime, distributed; data, models, attacks, metrics, methods, perturbation, schedule;
config; safety (weights from strangers), checkpoint_file (our format), foreign and robustbench
(other people's); build, epoch_metrics, run_folder, train; loaded (a checkpoint ready to measure,
and pseudo-labelling); evaluate, recipe; cli.
"""
from awp.attacks import cw_inf, fgsm, pgd
from awp.checkpoint_file import load_checkpoint, save_checkpoint
from awp.config import PRESETS, TrainConfig, list_presets, load_preset
from awp.data import DATASETS, build_dataset, list_datasets
from awp.errors import UsageError, UserError
from awp.evaluate import EVAL_ATTACKS, evaluate, evaluate_checkpoint
from awp.foreign import FORMATS, export_checkpoint, import_checkpoint
from awp.loaded import LoadedCheckpoint, load_run, pseudo_label_checkpoint
from awp.methods import METHODS, get_method, list_methods
from awp.metrics import AttackSpec
from awp.models import MODELS, build_model, list_models
from awp.perturbation import (PERTURBATIONS, AdversarialWeightPerturbation, RandomWeightPerturbation,
                              WeightPerturbation)
from awp.recipe import recipe_card
from awp.registry import Registry
from awp.runtime import Runtime, resolve_runtime
from awp.threat import Threat, eval_threat
from awp.train import fit, train_step
from awp.version import __version__

__all__ = [
    "__version__",
    # configs and training
    "TrainConfig", "PRESETS", "list_presets", "load_preset", "recipe_card", "fit", "train_step",
    # models, data, methods, attacks, weight perturbations
    "MODELS", "build_model", "list_models", "DATASETS", "build_dataset", "list_datasets",
    "METHODS", "get_method", "list_methods", "pgd", "fgsm", "cw_inf",
    "PERTURBATIONS", "AdversarialWeightPerturbation", "RandomWeightPerturbation", "WeightPerturbation",
    # checkpoints (ours, others', RobustBench) and evaluation
    "save_checkpoint", "load_checkpoint", "load_run", "LoadedCheckpoint", "pseudo_label_checkpoint",
    "FORMATS", "import_checkpoint", "export_checkpoint",
    "EVAL_ATTACKS", "evaluate", "evaluate_checkpoint", "AttackSpec", "Threat", "eval_threat",
    # device and precision, errors, the registry type
    "Runtime", "resolve_runtime", "UserError", "UsageError", "Registry",
]
