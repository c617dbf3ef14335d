"""Every paper-row preset's recipe card against constants read off the official scripts.

The card is computed by the code the training loop runs (awp.recipe), so these tests pin both.
Each expected value cites the repository, file and line it comes from, at these commits:

- csdongxian/AWP             a7acf5d842fccf1bbb4b91644352ce157d370a26
- yaodongyu/TRADES           6e8e11b7c281371c2f027ffadfbaea80361f09de
- YisenWang/MART             2d83e17b381dd2ee52223695e517bf6d5ff09c2c
- yaircarmon/semisup-adv     3f05b280cfa207ec035f27542c8c8b4b2a4e71b2
- locuslab/robust_overfitting c47a25c5e00c8b2bb35488d962c04dd771b7e9af

The official protocol trains on the whole training set and keeps the checkpoint with the best
test PGD-20 (the AT scripts) or the last one (TRADES, MART, RST): ``val_size=0 select_on=test``.
"""
import json
import math

import numpy as np
import pytest

import awp_cli
from awp.config import load_preset
from awp.errors import UsageError
from awp.recipe import recipe_card

# ------------------------------------------------------------------ the official learning rates


def awp_at_lr(lr_max: float, epochs: int, iterations: int) -> list[float]:
    """csdongxian/AWP AT_AWP/train_cifar10.py:261-267 ('piecewise'; the same in train_cifar100.py:235-241
    and train_svhn.py:232-238), evaluated as :321 does, at t = epoch + (i + 1) / len(train_batches),
    here for the first step i = 0 of each 0-based epoch."""
    def lr_schedule(t):
        if t / epochs < 0.5:
            return lr_max
        elif t / epochs < 0.75:
            return lr_max / 10.
        return lr_max / 100.
    return [lr_schedule(epoch + 1 / iterations) for epoch in range(epochs)]


def trades_lr(epoch: int) -> float:
    """yaodongyu/TRADES train_trades_cifar10.py:137-145, 1-based epochs (:155), lr 0.1 (:24)."""
    lr = 0.1
    if epoch >= 75:
        lr = 0.1 * 0.1
    if epoch >= 90:
        lr = 0.1 * 0.01
    if epoch >= 100:
        lr = 0.1 * 0.001
    return lr


def trades_awp_lr(epoch: int) -> float:
    """csdongxian/AWP trades_AWP/train_trades_cifar.py:260-266, 1-based epochs (:294), lr 0.1 (:33)."""
    lr = 0.1
    if epoch >= 100:
        lr = 0.1 * 0.1
    if epoch >= 150:
        lr = 0.1 * 0.01
    return lr


def mart_lr(epoch: int) -> float:
    """YisenWang/MART train_wideresnet.py:109-117, 1-based epochs (:176), lr 0.1 (:29)."""
    lr = 0.1
    if epoch >= 100:
        lr = 0.1 * 0.001
    elif epoch >= 90:
        lr = 0.1 * 0.01
    elif epoch >= 75:
        lr = 0.1 * 0.1
    return lr


def rst_lr(epoch: int) -> float:
    """yaircarmon/semisup-adv robust_self_training.py:412-413 ('cosine', :96), 1-based epochs (:444),
    lr 0.1 (:94), 200 epochs (:76)."""
    return 0.1 * 0.5 * (1 + np.cos((epoch - 1) / 200 * np.pi))


# ------------------------------------------------------------------ the official recipes

CIFAR10_MEAN_STD = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}  # AWP AT_AWP/utils.py:17-18
CIFAR100_MEAN_STD = {"mean": [0.5070751592371323, 0.48654887331495095, 0.4409178433670343],  # train_cifar100.py:21
                     "std": [0.2673342858792401, 0.2564384629170883, 0.27615047132568404]}   # train_cifar100.py:22
SVHN_MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # AWP train_svhn.py:20-21
RAW = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # ToTensor() only, no normalization anywhere

CIFAR_TRAIN = 50000   # torchvision CIFAR10/CIFAR100(train=True), used whole (no --val: AWP logs show val=False)
SVHN_TRAIN = 73257    # torchvision SVHN(split='train'), AWP train_svhn.py:172


def awp_at(dataset: str, gamma: float, warmup: int, model: str = "preactresnet18") -> dict:
    """csdongxian/AWP AT_AWP/train_{cifar10,cifar100,svhn}.py."""
    svhn, c100 = dataset == "svhn", dataset == "cifar100"
    train = SVHN_TRAIN if svhn else CIFAR_TRAIN
    iterations = math.ceil(train / 128)         # batch 128 (train_cifar10.py:133), drop_last=False (:36)
    lr_max = 0.01 if svhn else 0.1              # train_svhn.py:115; train_cifar10.py:138
    step = (1 if svhn else 2) / 255             # --pgd-alpha: train_svhn.py:121; train_cifar10.py:146,214
    return {
        "dataset": dataset, "model": model,     # PreActResNet18 (:217) / WideResNet(34, 10, widen 10) (:220)
        "train_size": train, "val_size": 0, "select_on": "test",  # model_best.pth by test PGD (:467)
        "augmentation": [] if svhn else ["crop", "flip", "rotation"] if c100 else ["crop", "flip"],
        # train_svhn.py:163-166 (ToTensor only); train_cifar100.py:168-170; train_cifar10.py:191
        "padding_mode": None if svhn else "zeros" if c100 else "reflect",
        # RandomCrop(32, padding=4) pads zeros (train_cifar100.py:168); utils.py:27 np.pad(mode='reflect')
        "normalization": SVHN_MEAN_STD if svhn else CIFAR100_MEAN_STD if c100 else CIFAR10_MEAN_STD,
        "method": "at", "train_eps": 8 / 255,   # --epsilon 8 (:142), / 255 (:213)
        "train_step_size": step, "train_attack_steps": 10,  # --attack-iters 10 (:143)
        "attack_bn_mode": "train",              # attack_pgd runs after model.train() (:338, train_cifar100.py:257)
        "bn_sequence": "official-at",
        "train_mode_forwards_per_step": 10 + 1 + 1 + 1,  # attack (:92), its restart forward (:122), :347, :365
        "awp_gamma": gamma, "awp_warmup": warmup if gamma > 0 else None,
        # --awp-gamma / --awp-warmup (train_cifar10.py:162-163, train_svhn.py:134-135), `epoch >= warmup` 0-based (:340)
        "awp_first_epoch": warmup + 1 if gamma > 0 else None,
        "epochs": 200, "batch_size": 128,       # :136, :133
        "iterations_per_epoch": iterations, "total_iterations": 200 * iterations,
        "lr_update": "iteration", "lr_by_epoch": awp_at_lr(lr_max, 200, iterations),
        "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,  # SGD(momentum=0.9, weight_decay=5e-4) (:240)
        "eval_eps": 8 / 255, "eval_step_size": step,  # test PGD-20 with the same epsilon and pgd_alpha (:144,:392)
        "metric_attack": f"pgd20-linf eps={8 / 255:.4g} step={step:.4g} eval-mode",
    }


def trades_like(**values) -> dict:
    """Shared by TRADES, MART, TRADES-AWP and RST: CIFAR-10 with RandomCrop(32, padding=4) (zero
    padding) and RandomHorizontalFlip (TRADES train_trades_cifar10.py:59-63, MART train_wideresnet.py:70-74,
    AWP train_trades_cifar.py:85-89, semisup-adv robust_self_training.py:193-197), ToTensor only,
    attack in eval mode (trades.py:28, mart.py:17, train_trades_cifar.py:107, losses.py:46),
    10 attack steps, momentum 0.9, batch 128, per-epoch lr, the last checkpoint kept (no selection)."""
    base = {"dataset": "cifar10", "train_size": CIFAR_TRAIN, "val_size": 0, "select_on": "test",
            "augmentation": ["crop", "flip"], "padding_mode": "zeros", "normalization": RAW,
            "train_attack_steps": 10, "attack_bn_mode": "eval", "momentum": 0.9, "batch_size": 128,
            "lr_update": "epoch", "eval_eps": 8 / 255, "eval_step_size": 2 / 255}  # auto_attacks/eval.py:56
    base.update(values)
    iterations = math.ceil(base.get("epoch_images", CIFAR_TRAIN) / base["batch_size"])
    base.update(iterations_per_epoch=iterations, total_iterations=iterations * base["epochs"])
    base.pop("epoch_images", None)
    return base


TRADES = trades_like(  # yaodongyu/TRADES train_trades_cifar10.py, trades.py
    model="wrn-34-10", method="trades",            # WideResNet() (:152)
    train_eps=0.031, train_step_size=0.007,        # :30, :34
    beta=6.0, weight_decay=2e-4, epochs=76,        # :36, :22, :20
    nesterov=False, awp_gamma=0.0,
    lr_by_epoch=[trades_lr(e) for e in range(1, 77)],
    bn_sequence="official-trades", train_mode_forwards_per_step=3)  # trades.py:79, 81, 82
TRADES_AWP = trades_like(  # csdongxian/AWP trades_AWP/train_trades_cifar.py, utils_awp.py
    model="wrn-34-10", method="trades",            # --arch WideResNet34 (:19)
    train_eps=8 / 255, train_step_size=2 / 255,    # :41,66; :45,67
    beta=6.0, weight_decay=5e-4, epochs=200,       # :47, :31, :24
    nesterov=False, awp_gamma=0.005,               # :60
    awp_warmup=9, awp_first_epoch=10,              # --awp-warmup 10 (:62), `epoch >= 10` 1-based (:179, :294)
    lr_by_epoch=[trades_awp_lr(e) for e in range(1, 201)],
    bn_sequence="official-trades-awp", train_mode_forwards_per_step=3)  # :187, :189, :192
MART = trades_like(  # YisenWang/MART train_wideresnet.py, mart.py
    model="wrn-34-10", method="mart",              # WideResNet() (:169)
    train_eps=0.031, train_step_size=0.007,        # :35, :39
    beta=6.0, weight_decay=7e-4, epochs=90,        # :41, :27, :25
    nesterov=False, awp_gamma=0.0,
    lr_by_epoch=[mart_lr(e) for e in range(1, 91)],
    bn_sequence="official-mart", train_mode_forwards_per_step=2)  # mart.py:38, 40
RST = trades_like(  # yaircarmon/semisup-adv robust_self_training.py (README: --distance l_inf --epsilon 0.031)
    model="wrn-28-10", method="rst",               # :48
    train_eps=0.031, train_step_size=0.007,        # :115 and the README, :121
    beta=6.0, weight_decay=5e-4, epochs=200,       # :123, :93, :76
    batch_size=256, unsup_fraction=0.5,            # :72, :131
    epoch_images=50000,                            # SemiSupervisedSampler(num_batches=ceil(50000 / 256)) (:237-240)
    nesterov=True, awp_gamma=0.0,                  # :101
    lr_by_epoch=[rst_lr(e) for e in range(1, 201)],
    bn_sequence="official-rst", train_mode_forwards_per_step=2)  # losses.py:80, 81
# MART-AWP and RST-AWP: no official code; the cards say so and use TRADES-AWP's AWP settings.
RECONSTRUCTION = {"awp_gamma": 0.005, "awp_warmup": 9, "awp_first_epoch": 10}  # train_trades_cifar.py:60,62,179

OFFICIAL = {
    "cifar10-at": awp_at("cifar10", 0.0, 0),
    "cifar10-at-awp": awp_at("cifar10", 0.01, 0),
    "cifar10-at-wrn34": awp_at("cifar10", 0.0, 0, "wrn-34-10"),
    "cifar10-at-awp-wrn34": awp_at("cifar10", 0.01, 0, "wrn-34-10"),
    "cifar100-at": awp_at("cifar100", 0.0, 0),
    "cifar100-at-awp": awp_at("cifar100", 0.01, 0),
    "svhn-at": awp_at("svhn", 0.0, 5),
    "svhn-at-awp": awp_at("svhn", 0.01, 5),
    "cifar10-trades": TRADES,
    "cifar10-trades-awp": TRADES_AWP,
    "cifar10-mart": MART,
    "cifar10-mart-awp": {**MART, **RECONSTRUCTION},
    "cifar10-rst": RST,
    "cifar10-rst-awp": {**RST, **RECONSTRUCTION},
}


def _card(name, **overrides):
    extra = {"unlabeled": "ti_500K_pseudo_labeled.pickle"} if "rst" in name else {}
    return recipe_card(name, {**extra, **overrides})


def _same(actual, expected):
    if isinstance(expected, float):
        return actual == pytest.approx(expected, rel=1e-12, abs=0)
    if isinstance(expected, list) and expected and isinstance(expected[0], float):
        return actual == pytest.approx(expected, rel=1e-12, abs=0)
    if isinstance(expected, dict):
        return set(actual) == set(expected) and all(_same(actual[k], v) for k, v in expected.items())
    return actual == expected


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_card_under_the_official_protocol_equals_the_official_script(name):
    card = _card(name, val_size=0, select_on="test")
    wrong = {key: (card.get(key), value) for key, value in OFFICIAL[name].items() if not _same(card.get(key), value)}
    assert not wrong, wrong


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_default_card_only_holds_out_validation_images(name):
    """The default protocol (Rice et al.'s early stopping) changes the training-set size, and with
    it the epoch length of the per-iteration schedules, and nothing else."""
    official, default = _card(name, val_size=0, select_on="test"), _card(name)
    assert (default["val_size"], default["select_on"]) == (1000, "val")
    assert default["train_size"] == official["train_size"] - 1000
    changed = {k for k in official if official[k] != default[k]}
    allowed = {"val_size", "select_on", "train_size", "overrides", "iterations_per_epoch", "total_iterations"}
    if name.startswith("cifar10-rst"):
        allowed -= {"iterations_per_epoch", "total_iterations"}  # always 50000 images per epoch
    assert changed <= allowed, changed - allowed


def test_reconstructions_say_so_and_the_others_name_their_script():
    for name in OFFICIAL:
        card = _card(name)
        assert ("note" in card) == (name in ("cifar10-mart-awp", "cifar10-rst-awp")), name
        assert "RECONSTRUCTION" in card.get("note", "RECONSTRUCTION")
        assert card["source"].split()[0] in ("csdongxian/AWP", "yaodongyu/TRADES", "YisenWang/MART",
                                             "yaircarmon/semisup-adv"), name


def test_paper_card_parameter_counts():
    # The architectures' published sizes (PreActResNet-18 with Rice et al.'s final BN; RobustBench's
    # WRN-34-10 and WRN-28-10), also checked against formulas in tests/test_models.py.
    assert _card("cifar10-at")["parameters"] == 11_171_146 + 2 * 512
    assert _card("cifar100-at")["parameters"] == 11_171_146 + 2 * 512 + 512 * 90 + 90
    assert _card("cifar10-trades")["parameters"] == 46_160_474
    assert _card("cifar10-rst")["parameters"] == 36_479_194


def test_overrides_reach_the_card():
    card = _card("cifar10-at-awp", epochs=10, batch_size=500, lr_milestones=[0.5], lr_update="epoch")
    assert card["overrides"]["epochs"] == 10 and card["iterations_per_epoch"] == math.ceil(49000 / 500)
    assert card["lr_by_epoch"] == pytest.approx([0.1] * 5 + [0.01] * 5)
    assert card["total_iterations"] == 10 * 98


def test_cli_card_text_json_and_bad_input(capsys):
    assert awp_cli.main(["presets", "cifar10-trades-awp", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    for key in ("iterations_per_epoch", "total_iterations", "lr_by_epoch", "train_size", "train_eps",
                "train_step_size", "eval_eps", "eval_step_size", "augmentation", "padding_mode",
                "normalization", "select_on"):
        assert key in card, key
    assert len(card["lr_by_epoch"]) == 200 and card["normalization"] == RAW
    assert awp_cli.main(["presets", "cifar10-rst", "val_size=0"]) == 0
    text = capsys.readouterr().out
    assert "196 iterations" in text and "pass unlabeled=PATH" in text and f"200: {rst_lr(200):.4g}" in text
    assert awp_cli.main(["presets"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 23 and listing[0].startswith("cifar10-at ")
    for argv in (["presets", "NOPE"], ["presets", "cifar10-at", "epochs=abc"], ["presets", "cifar10-at", "nope=1"],
                 ["presets", "cifar10-at", "bn_sequence=official-trades"], ["presets", "--json"]):
        assert awp_cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("awp: error: "), err


def test_bn_sequence_must_belong_to_the_method():
    with pytest.raises(UsageError, match="official-trades"):
        load_preset("cifar10-at", {"bn_sequence": "official-trades"})
    with pytest.raises(UsageError, match="unknown bn_sequence"):
        load_preset("cifar10-at", {"bn_sequence": "official"})
    assert load_preset("cifar10-trades", {"bn_sequence": "official-trades-awp"}).bn_sequence == "official-trades-awp"


# ------------------------------------------------------------------ the card is what training does


def _recorded_fit(monkeypatch, tmp_path, preset, overrides):
    """Run ``fit`` with the training step replaced by a recorder of (lr, batch size) per step."""
    import torch

    import awp.train
    from awp.train import fit

    steps = []

    def record(model, optimizer, method, x, y, awp=None, **kwargs):
        steps.append((optimizer.param_groups[0]["lr"], len(y)))
        zero = torch.zeros(())
        return {"loss": zero, "adv_acc": zero, "awp": zero}

    monkeypatch.setattr(awp.train, "train_step", record)
    config = load_preset(preset, {"eval_steps": 1, "eval_train_samples": 8, "eval_test_samples": 8, **overrides})
    fit(config, None, progress=False)
    return steps


@pytest.mark.parametrize("preset, overrides", [
    ("digits-at", {"epochs": 4}),                                      # per iteration, milestones 0.5, 0.75
    ("digits-at", {"epochs": 5, "lr_update": "epoch", "lr_milestones": [0.4, 0.8], "batch_size": 100}),
    ("digits-trades", {"epochs": 3, "schedule": "cosine", "lr_update": "epoch", "val_size": 0, "train_subset": None}),
    ("digits-rst", {"epochs": 3}),                                     # epoch_images 600: 5 batches of 128
    ("digits-rst", {"epochs": 2, "epoch_images": 256, "unsup_fraction": 0.25}),
])
def test_training_runs_the_cards_epochs_and_learning_rates(monkeypatch, tmp_path, preset, overrides):
    from awp.data import ImageSet, build_dataset, save_unlabeled_npz

    if "rst" in preset:
        import torch

        pool = ImageSet(torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,)))
        save_unlabeled_npz(tmp_path / "pool.npz", pool)
        overrides = {**overrides, "unlabeled": str(tmp_path / "pool.npz")}
    card = recipe_card(preset, overrides)
    steps = _recorded_fit(monkeypatch, tmp_path, preset, overrides)
    n = card["iterations_per_epoch"]
    assert len(steps) == card["total_iterations"] == n * card["epochs"]
    assert [lr for lr, _ in steps[::n]] == pytest.approx(card["lr_by_epoch"], rel=1e-12)
    config = load_preset(preset, overrides)
    data = build_dataset(config.dataset, val_size=config.val_size, train_subset=config.train_subset)
    assert (card["train_size"], card["val_size"]) == (len(data.train), len(data.val) if data.val else 0)
    if "rst" in preset:
        assert {size for _, size in steps} == {config.batch_size}
        assert n == math.ceil(config.epoch_images / config.batch_size)  # Carmon et al.'s definition


def test_per_iteration_schedule_drops_inside_the_epoch_like_the_at_scripts():
    """AWP train_cifar10.py:321 sets the lr from epoch + (i + 1) / len before step i: the last
    step of the epoch that completes 50% of training already runs at lr / 10."""
    from awp.schedule import lr_at

    config = load_preset("cifar10-at", {"val_size": 0})
    assert lr_at(config, 99, 389, 391) == 0.1 and lr_at(config, 99, 390, 391) == pytest.approx(0.01)
    # TRADES (train_trades_cifar10.py:140, 155-157): the whole 1-based epoch 75 at 0.01, all of 74 at 0.1.
    epoch_wise = load_preset("cifar10-trades", {"val_size": 0})
    assert [lr_at(epoch_wise, 74, i, 391) for i in (0, 200, 390)] == pytest.approx([0.01] * 3)
    assert [lr_at(epoch_wise, 73, i, 391) for i in (0, 390)] == [0.1, 0.1]


# ------------------------------------------------------------------ CIFAR files end to end


def test_cifar_presets_train_end_to_end_on_real_format_files(tmp_path, monkeypatch):
    import csv

    import numpy as np

    from awp.evaluate import evaluate_checkpoint
    from awp.train import fit
    from test_data import _write_cifar

    _write_cifar(tmp_path / "c100", monkeypatch, kind="cifar100", rng=np.random.default_rng(0))
    # The presets' data pipeline, method, BN sequence, AWP and schedule; a small CNN keeps it fast.
    small = {"val_size": 2, "batch_size": 4, "epochs": 2, "attack_steps": 2, "eval_steps": 1,
             "eval_train_samples": 4, "save_every": 1, "model": "smallcnn"}
    # CIFAR-100 AT-AWP: zero-padded crop, flip, rotation; the official 13-forward BN sequence; AWP.
    config = load_preset("cifar100-at-awp", {"data_dir": str(tmp_path / "c100"), **small})
    _, run = fit(config, tmp_path / "run-c100", progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and rows[-1]["attack"] == f"pgd1-linf eps={8 / 255:.4g} step={2 / 255:.4g} eval-mode"
    assert (run / "best.pt").exists() and all(np.isfinite(float(r["train_batch_loss"])) for r in rows)

    _write_cifar(tmp_path / "c10", monkeypatch, kind="cifar10", rng=np.random.default_rng(1))
    # TRADES trains at 0.031; its per-epoch metrics and `awp eval` use the paper's 8/255, step 2/255.
    config = load_preset("cifar10-trades", {"data_dir": str(tmp_path / "c10"),
                                            **small, "epochs": 1, "val_size": 0, "select_on": "test"})
    _, run = fit(config, tmp_path / "run-c10", progress=False)
    assert list(csv.DictReader(open(run / "metrics.csv")))[0]["attack"].startswith(f"pgd1-linf eps={8 / 255:.4g} ")
    result = evaluate_checkpoint(run / "best.pt", attacks=["natural", "pgd20"], data_dir=str(tmp_path / "c10"))
    assert result["eps"] == pytest.approx(8 / 255) and "the AWP paper's cifar10 evaluation" in result["threat"]
    assert "step=0.007843 (2/255)" in result["results"]["pgd20"]["attack"]
    given = evaluate_checkpoint(run / "best.pt", attacks=["pgd20"], eps=0.031, data_dir=str(tmp_path / "c10"))
    assert given["eps"] == 0.031 and f"step={0.031 / 4:.4g}" in given["results"]["pgd20"]["attack"]


def test_eval_threat_per_data_set():
    from awp.threat import eval_threat

    # AWP auto_attacks/eval.py:56 (8/255 for every Linf row); PGD-20 step = the AT scripts' pgd_alpha:
    # 2/255 (train_cifar10.py:146, train_cifar100.py:126), 1/255 (train_svhn.py:121).
    for dataset, step in (("cifar10", 2 / 255), ("cifar100", 2 / 255), ("svhn", 1 / 255)):
        for train_eps in (0.031, 8 / 255, 4 / 255):
            t = eval_threat(dataset, "linf", train_eps)
            assert (t.eps, t.step_size) == pytest.approx((8 / 255, step), rel=1e-12)
        assert eval_threat(dataset, "linf", 0.031, eps=16 / 255).step_size == pytest.approx(2 * step)
    digits = eval_threat("digits", "linf", 0.2)
    assert (digits.eps, digits.step_size) == (0.2, 0.05)
    l2 = eval_threat("cifar10", "l2", 0.5)
    assert (l2.eps, l2.step_size) == (0.5, 0.125)


def test_readme_recipe_table_matches_the_cards():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text.split("## Recipes: the paper's rows", 1)[1].split("\n\n| setting |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    seen = set()
    for setting, paper, protocol, schedule, command in rows:
        name = re.search(r"--preset (\S+)", command).group(1)
        seen.add(name)
        card = _card(name, val_size=0, select_on="test")
        epochs, iterations, update = re.fullmatch(r"(\d+) x (\d+), per (iteration|epoch)", schedule).groups()
        assert (int(epochs), int(iterations), update) == (card["epochs"], card["iterations_per_epoch"],
                                                          card["lr_update"]), name
        at_script = "AT_AWP/" in card["source"]
        assert ("select_on=test" in protocol) == at_script and ("val_size=0" in protocol), name
        assert ("reconstruction" in setting) == ("note" in card), name
    assert seen == set(OFFICIAL)
