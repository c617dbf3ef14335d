"""Every registry of the leaf modules of awp/ (models, methods, BN sequences, data sets, splits,
augmentations, padding modes, evaluation attacks, attack modes, random starts, attack losses,
norms, schedules, lr updates, precisions) keeps the registry contract: each entry has a one-line
description, ``get(name)`` returns what was registered, a typo is one line that names the closest
entry, and adding an entry is one registration (no table elsewhere changes).

Each registry also gets an invariant of its own kind, checked against an independent reference
(the published formula, torch's own dtypes, the entries' own fields), never a recorded number.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from awp import attacks, eval_attacks, methods, models, modes, runtime, schedule, threat
from awp.data import DATASETS, SPLITS, DatasetSpec, ImageSet, augment, build_dataset, dataset_spec, list_datasets
from awp.errors import UsageError, UserError

REGISTRIES = {
    "models": models.MODELS,
    "methods": methods.METHODS,
    "bn_sequences": methods.BN_SEQUENCES,
    "datasets": DATASETS,
    "splits": SPLITS,
    "augmentations": augment.TRANSFORMS,
    "padding_modes": augment.PADDING_MODES,
    "eval_attacks": eval_attacks.EVAL_ATTACKS,
    "modes": modes.MODES,
    "random_starts": attacks.STARTS,
    "attack_losses": attacks.LOSSES,
    "norms": threat.NORMS,
    "schedules": schedule.SCHEDULES,
    "lr_updates": schedule.LR_UPDATES,
    "precisions": runtime.PRECISIONS,
}
ENTRIES = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


def _typos(name: str) -> list[str]:
    """Misspellings a user makes: the last letter dropped, and (long names) two letters swapped."""
    typos = [name[:-1]]
    if len(name) >= 5:
        i = len(name) // 2
        swapped = name[:i - 1] + name[i] + name[i - 1] + name[i + 1:]
        if swapped != name:
            typos.append(swapped)
    return typos


@pytest.mark.parametrize("kind, name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_entry_has_a_description_and_get_returns_it(kind, name):
    registry = REGISTRIES[kind]
    description = registry.description(name)
    assert description and "\n" not in description and description == description.strip()
    assert registry.get(name) is dict(registry.items())[name]
    assert registry.resolve(name) == name and name in registry


@pytest.mark.parametrize("kind, name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_a_typo_names_the_entry(kind, name):
    registry = REGISTRIES[kind]
    for typo in _typos(name):
        if typo in registry:  # e.g. a shorter name that is itself registered
            continue
        with pytest.raises(UsageError) as info:
            registry.get(typo)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"unknown {registry.kind} {typo!r}; did you mean ")
        hint = message.split("did you mean ", 1)[1].split("?", 1)[0]
        assert name in hint.split(" or "), (typo, message)
        assert "choose from: " + ", ".join(registry.names()) in message


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_names_are_unique_and_non_strings_are_refused(kind):
    registry = REGISTRIES[kind]
    assert len(set(registry.names())) == len(registry) > 0
    with pytest.raises(UsageError, match=f"unknown {registry.kind} 3"):
        registry.get(3)


# --------------------------------------------------------------------------------------------
# Models: each entry's kwargs spec


@pytest.mark.parametrize("name", models.MODELS.names())
def test_model_kwargs_spec_defaults_pass_their_own_checks(name):
    spec = models.MODELS.get(name)
    for key, kwarg in {**models.registry.COMMON, **spec.kwargs}.items():
        checked = kwarg.check(f"{name}: {key}", kwarg.default)
        # The check returns JSON types: what json round-trips is what it returned.
        assert json.loads(json.dumps(checked)) == checked


@pytest.mark.parametrize("name", models.MODELS.names())
def test_every_model_builds_on_the_meta_device(name):
    # Checkpoint loading builds the skeleton on the meta device before allocating anything.
    with torch.device("meta"):
        model = models.build_model(name, num_classes=3, mean=[0.5] * 3, std=[0.25] * 3)
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    optional = {k for k, a in models.MODELS.get(name).kwargs.items() if a.optional}
    expected = set(models.registry.COMMON) | set(models.MODELS.get(name).kwargs) - optional
    assert model.arch == name and set(model.arch_kwargs) == expected


def test_an_optional_kwarg_is_recorded_only_when_it_differs():
    assert "batchnorm" not in models.build_model("smallcnn").arch_kwargs
    model = models.build_model("smallcnn", batchnorm=False)
    assert model.arch_kwargs["batchnorm"] is False
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(UsageError, match="smallcnn: batchnorm must be true or false, got 1"):
        models.build_model("smallcnn", batchnorm=1)


def test_a_new_model_is_one_registration(monkeypatch):
    monkeypatch.setattr(models.MODELS, "_entries", dict(models.MODELS._entries))
    models.MODELS.register("tiny", models.ModelSpec(
        lambda num_classes, in_channels, mean, std, width: nn.Sequential(
            models.Normalize(mean, std), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, width),
            nn.Linear(width, num_classes)),
        {"width": models.Kwarg(4, models.registry.whole(1))}), description="a test model")
    model = models.build_model("tiny", num_classes=2, width=np.int64(5))
    assert "tiny" in models.list_models() and model.arch_kwargs == {
        "num_classes": 2, "in_channels": 3, "mean": None, "std": None, "width": 5}
    with pytest.raises(UsageError, match="tiny: width must be >= 1, got 0"):
        models.build_model("tiny", width=0)
    with pytest.raises(UsageError, match="unknown argument 'depth' for model 'tiny'; accepted: "):
        models.build_model("tiny", depth=3)
    assert model(torch.rand(3, 3, 4, 4)).shape == (3, 2)


# --------------------------------------------------------------------------------------------
# Methods and BN sequences


@pytest.mark.parametrize("name", methods.METHODS.names())
def test_method_classes_carry_their_registry_name(name):
    method = methods.get_method(name)
    assert method.name == name and isinstance(method, methods.METHODS.get(name))
    # Every method can use the minimal sequence and the sequences written for it.
    takes = methods.BN_SEQUENCES.where(lambda s: s.method in (None, name))
    assert "minimal" in takes
    for sequence in takes:
        methods.get_method(name, bn_sequence=sequence)


@pytest.mark.parametrize("sequence", methods.BN_SEQUENCES.names())
def test_bn_sequences_belong_to_registered_methods(sequence):
    owner = methods.BN_SEQUENCES.get(sequence).method
    assert owner is None or owner in methods.METHODS
    others = [m for m in methods.METHODS if owner is not None and m != owner]
    for other in others:
        with pytest.raises(UsageError, match=f"bn_sequence '{sequence}' is {owner}'s; method '{other}' takes: ") as info:
            methods.check_bn_sequence(other, sequence)
        listed = str(info.value).split("takes: ", 1)[1].split(", ")
        assert listed == methods.BN_SEQUENCES.where(lambda s: s.method in (None, other))


@pytest.mark.parametrize("hparams, fragment", [
    (dict(eps=float("nan")), "eps must be a finite number"),
    (dict(eps=-0.1), "eps must be a finite number >= 0"),
    (dict(step_size=-1.0), "step_size must be a finite number >= 0"),
    (dict(steps=2.5), "steps must be a whole number"),
    (dict(norm="l1"), "unknown norm 'l1'; choose from: linf, l2"),
    (dict(attack_mode="evl"), "unknown attack mode 'evl'; did you mean eval?"),
    (dict(beta=float("inf")), "beta must be a finite number >= 0"),
    (dict(bn_sequence="minmal"), "unknown bn_sequence 'minmal'; did you mean minimal?"),
])
def test_method_settings_are_checked_in_one_line(hparams, fragment):
    with pytest.raises(UsageError, match=fragment.replace("?", r"\?")) as info:
        methods.get_method("trades", **hparams)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Data sets


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_specs_are_consistent(name, tmp_path):
    spec = dataset_spec(name)
    assert len(spec.mean) == len(spec.std) == spec.image_shape[0] and all(s > 0 for s in spec.std)
    assert 0 < spec.default_val_size < spec.train_images
    augment.Augmentation.parse(spec.augment)  # the default augmentation is a valid spec
    if spec.expected_files is None:  # read from memory: no data folder involved
        return
    folder, files, described = spec.expected_files(tmp_path)
    assert files and all(tmp_path in f.parents for f in files) and (folder == tmp_path or tmp_path in folder.parents)
    with pytest.raises(UserError, match=f"{spec.label} not found in ") as info:  # nothing downloaded
        build_dataset(name, data_dir=tmp_path)
    assert described in str(info.value)


def test_digits_sizes_add_up_to_its_spec():
    spec = dataset_spec("digits")
    splits = build_dataset("digits", train_subset=100)
    assert len(splits.train) + len(splits.val) + len(splits.pool) == spec.train_images
    assert (splits.num_classes, splits.image_shape, splits.mean, splits.std) == \
        (spec.num_classes, spec.image_shape, spec.mean, spec.std)


def test_a_new_dataset_is_one_spec_and_one_registration(monkeypatch):
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    seen = {}

    def load(spec, data_dir, download, split_seed):
        seen.update(data_dir=data_dir, download=download, split_seed=split_seed)
        labels = torch.arange(40) % 4
        images = (labels.view(-1, 1, 1, 1).float() / 4).expand(40, 1, 2, 2).contiguous()
        return ImageSet(images, labels), ImageSet(images[:8], labels[:8])

    DATASETS.register("squares", DatasetSpec("squares", 4, (1, 2, 2), (0.4,), (0.3,), "none", 8, 40, load=load),
                      description="a test data set")
    splits = build_dataset("squares", data_dir="somewhere", split_seed=5, train_subset=20)
    assert seen == {"data_dir": "somewhere", "download": False, "split_seed": 5}
    assert (len(splits.train), len(splits.val), len(splits.test), len(splits.pool)) == (20, 8, 8, 12)
    # Stratified: the validation hold-out keeps the four classes' equal shares.
    assert torch.bincount(splits.val.labels, minlength=4).tolist() == [2, 2, 2, 2]
    assert "squares" in list_datasets()


def test_split_names_come_from_the_registry():
    splits = build_dataset("digits", val_size=0)
    with pytest.raises(UsageError, match="unknown split 'tset'; did you mean test\\? choose from: train, val, test"):
        splits.split("tset")
    with pytest.raises(UsageError, match="no 'val' split; use 'train' or 'test'"):
        splits.split("val")


# --------------------------------------------------------------------------------------------
# Evaluation attacks, attack modes, starts and losses


@pytest.mark.parametrize("name", eval_attacks.EVAL_ATTACKS.names())
def test_eval_attack_entries_attack_one_way(name):
    attack = eval_attacks.EVAL_ATTACKS.get(name)
    assert (attack.craft is None) != (attack.accuracy is None)
    assert set(attack.norms) <= set(threat.NORMS)
    settings = eval_attacks.EvalSettings(eps=0.1, step=0.025, norm=attack.norms[0], seed=7, batch_size=4,
                                         runtime=runtime.CPU)
    if attack.requires is None:  # AutoAttack's description names the installed pyautoattack
        described = attack.describe(settings)
        assert "eval mode" in described and (name == "clean" or "eps=0.1" in described)
        assert name in ("clean", "fgsm") or "seed 7" in described


def test_attacks_tuple_is_the_registry_and_natural_is_clean():
    from awp.evaluate import ATTACKS

    assert ATTACKS == tuple(eval_attacks.EVAL_ATTACKS.names())
    assert eval_attacks.EVAL_ATTACKS.resolve("natural") == "clean" and "natural" not in ATTACKS


@pytest.mark.parametrize("mode", modes.MODES.names())
def test_model_mode_restores_each_flag_even_on_error(mode):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model[1].eval()  # mixed modes: only restoring each submodule's flag keeps them
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="inside"):
        with modes.model_mode(model, mode):
            inside = [m.training for m in model.modules()]
            raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == before
    assert inside == (before if mode == "keep" else [mode == "train"] * len(before))
    assert attacks.model_mode is modes.model_mode  # one home, re-exported


def test_random_starts_and_losses_are_registry_names():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    for start in attacks.STARTS.names():
        for loss in attacks.LOSSES.names():
            x_adv = attacks.pgd(model, x, y, eps=0.1, step_size=0.05, steps=2, random_start=start, loss=loss,
                                generator=torch.Generator().manual_seed(0))
            assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with pytest.raises(UsageError, match="unknown random start 'unifrom'; did you mean uniform"):
        attacks.pgd(model, x, y, eps=0.1, step_size=0.05, steps=1, random_start="unifrom")
    with pytest.raises(UsageError, match="unknown attack loss 'c'; did you mean"):
        attacks.pgd(model, x, y, eps=0.1, step_size=0.05, steps=1, loss="c")
    # The CW entry is the margin loss itself.
    logits = torch.randn(5, 3)
    torch.testing.assert_close(attacks.LOSSES.get("cw")(y, 2.0)(logits), attacks.margin_loss(logits, y, 2.0))


# --------------------------------------------------------------------------------------------
# Schedules and precisions


@pytest.mark.parametrize("name", schedule.SCHEDULES.names())
def test_schedules_start_at_the_base_lr_and_never_rise(name):
    lrs = [schedule.learning_rate(0.1, p / 4, 10, name, (0.5, 0.75), 0.1) for p in range(0, 41)]
    assert lrs[0] == 0.1
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_schedules_against_their_formulas():
    assert schedule.learning_rate(0.2, 5, 10, "cosine") == pytest.approx(0.1)
    assert schedule.learning_rate(0.2, 7.5, 10, "cosine") == pytest.approx(0.2 * 0.5 * (1 + math.cos(0.75 * math.pi)))
    assert schedule.learning_rate(0.2, 7.5, 10, "piecewise") == pytest.approx(0.2 * 0.1 ** 2)
    assert schedule.learning_rate(0.2, 4.99, 10, "piecewise") == 0.2
    assert schedule.learning_rate(0.2, 9, 10, "constant") == 0.2
    with pytest.raises(UsageError, match="unknown schedule 'cosin'; did you mean cosine"):
        schedule.learning_rate(0.2, 1, 10, "cosin")


@pytest.mark.parametrize("name", runtime.PRECISIONS.names())
def test_precisions_autocast_and_scale_as_named(name):
    run = runtime.resolve_runtime("cpu", name)
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    with run.autocast():
        out = nn.Linear(4, 4)(torch.rand(2, 4))
    assert out.dtype == expected
    assert run.grad_scaler().is_enabled() == (name == "fp16")
    with pytest.raises(UsageError, match=f"unknown precision '{name}x'; did you mean {name}"):
        runtime.resolve_runtime("cpu", name + "x")
