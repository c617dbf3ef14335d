"""Every paper-row preset's recipe card against constants read off the official scripts.

The card is computed by the code the training loop runs (awp.recipe), so these tests pin both.
The expected values are tests/reference.py's copies of the official learning-rate schedules and
recipes, each citing the repository, file and line it comes from.

The official protocol trains on the whole training set and keeps the checkpoint with the best
test PGD-20 (the AT scripts) or the last one (TRADES, MART, RST): ``val_size=0 select_on=test``.
"""
import json
import math
import re
from pathlib import Path

import pytest

import awp_cli
from awp.config import load_preset
from awp.errors import UsageError
from awp.recipe import recipe_card

from real_format import write_cifar
from reference import OFFICIAL, RAW, SCRIPT, rst_lr

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "awp" / "presets"


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
        assert card["source"].startswith(SCRIPT[name] + " ") or card["source"] == SCRIPT[name], (name, card["source"])


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


def _first_comment(name):
    text = (PRESETS / f"{name}.toml").read_text()
    return next(line[1:].strip() for line in text.splitlines() if line.startswith("#"))


def _readme_offline_presets():
    """The README's list of the offline rows, `digits-...` names in backticks."""
    text = (ROOT / "README.md").read_text()
    paragraph = text.split("The offline rows, ", 1)[1].split("need no download", 1)[0]
    return set(re.findall(r"`(digits-[a-z-]+)`", paragraph))


def test_cli_card_text_json_and_bad_input(capsys):
    assert awp_cli.main(["presets", "cifar10-trades-awp", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    # The default protocol holds out 1000 training images (Rice et al.); everything else is the script's.
    official = OFFICIAL["cifar10-trades-awp"]
    held_out = {"train_size": 50000 - 1000, "val_size": 1000, "select_on": "val",
                "iterations_per_epoch": math.ceil(49000 / 128), "total_iterations": 200 * math.ceil(49000 / 128)}
    for key in ("iterations_per_epoch", "total_iterations", "lr_by_epoch", "train_size", "train_eps",
                "train_step_size", "eval_eps", "eval_step_size", "augmentation", "padding_mode",
                "normalization", "select_on"):
        assert key in card, key
        assert _same(card[key], held_out.get(key, official.get(key))), (key, card[key])
    for key, value in official.items():
        assert _same(card[key], held_out.get(key, value)), key
    assert card == _card("cifar10-trades-awp")  # --json prints the whole card, every value as computed
    assert len(card["lr_by_epoch"]) == 200 and card["normalization"] == RAW
    assert awp_cli.main(["presets", "cifar10-rst", "val_size=0"]) == 0
    text = capsys.readouterr().out
    assert "196 iterations" in text and "pass unlabeled=PATH" in text and f"200: {rst_lr(200):.4g}" in text
    assert awp_cli.main(["presets"]) == 0
    listing = capsys.readouterr().out.splitlines()
    # One line per preset file, each with the file's first comment; the presets are the README's
    # paper rows (each with its official recipe in tests/reference.py) and its offline rows.
    files = sorted(path.stem for path in PRESETS.glob("*.toml"))
    names = [line.split()[0] for line in listing]
    assert names == files and listing[0].startswith("cifar10-at ")
    assert set(names) == set(OFFICIAL) | _readme_offline_presets()
    for line, name in zip(listing, names):
        assert " ".join(line.split()[1:]) == " ".join(_first_comment(name).split()), name
    for argv in (["presets", "NOPE"], ["presets", "cifar10-at", "epochs=abc"], ["presets", "cifar10-at", "nope=1"],
                 ["presets", "cifar10-at", "bn_sequence=official-trades"], ["presets", "--json"]):
        assert awp_cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("awp: error: "), err


@pytest.mark.parametrize("name", sorted(path.stem for path in PRESETS.glob("*.toml")))
def test_every_card_holds_what_the_readme_recipe_table_shows(name):
    """epochs x iterations, per iteration or per epoch, the lr of every epoch, the script, RECONSTRUCTION."""
    card = _card(name)
    assert card["preset"] == name and card["overrides"] == ({"unlabeled": "ti_500K_pseudo_labeled.pickle"}
                                                            if "rst" in name else {})
    epochs, iterations = card["epochs"], card["iterations_per_epoch"]
    assert isinstance(epochs, int) and isinstance(iterations, int) and epochs > 0 and iterations > 0
    assert card["total_iterations"] == epochs * iterations
    assert card["lr_update"] in ("iteration", "epoch")
    assert len(card["lr_by_epoch"]) == epochs and all(lr > 0 for lr in card["lr_by_epoch"])
    if card["method"] != "rst":  # RST's epoch is a number of batches of its own (Carmon et al.)
        assert iterations == math.ceil(card["train_size"] / card["batch_size"]), name
    if name in OFFICIAL:  # a paper row: its script, and whether the recipe is a reconstruction
        assert card["source"].startswith(SCRIPT[name]), name
        assert ("note" in card) == ("RECONSTRUCTION" in _first_comment(name)), name
    else:
        assert name.startswith("digits-"), name


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
    write_cifar(tmp_path / "c100", monkeypatch, kind="cifar100", rng=np.random.default_rng(0))
    # The presets' data pipeline, method, BN sequence, AWP and schedule; a small CNN keeps it fast.
    small = {"val_size": 2, "batch_size": 4, "epochs": 2, "attack_steps": 2, "eval_steps": 1,
             "eval_train_samples": 4, "save_every": 1, "model": "smallcnn"}
    # CIFAR-100 AT-AWP: zero-padded crop, flip, rotation; the official 13-forward BN sequence; AWP.
    config = load_preset("cifar100-at-awp", {"data_dir": str(tmp_path / "c100"), **small})
    _, run = fit(config, tmp_path / "run-c100", progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and rows[-1]["attack"] == f"pgd1-linf eps={8 / 255:.4g} step={2 / 255:.4g} eval-mode"
    assert (run / "best.pt").exists() and all(np.isfinite(float(r["train_batch_loss"])) for r in rows)

    write_cifar(tmp_path / "c10", monkeypatch, kind="cifar10", rng=np.random.default_rng(1))
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
