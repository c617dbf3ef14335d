"""Presets and typed key=value overrides."""
import pytest

from awp.config import TrainConfig, apply_overrides, list_presets, load_preset, parse_overrides
from awp.errors import UsageError

PAPER_ROWS = ["cifar10-at", "cifar10-at-awp", "cifar10-trades", "cifar10-trades-awp", "cifar10-mart",
              "cifar10-mart-awp", "cifar10-rst", "cifar10-rst-awp", "cifar100-at", "cifar100-at-awp",
              "svhn-at", "svhn-at-awp"]
DIGITS_ROWS = [f"digits-{m}{a}" for m in ("at", "trades", "mart", "rst") for a in ("", "-awp")]


@pytest.mark.parametrize("name", sorted(set(list_presets()) | set(PAPER_ROWS) | set(DIGITS_ROWS)))
def test_every_preset_loads_and_validates(name):
    extra = {"unlabeled": "x.npz"} if "rst" in name else {}
    config = load_preset(name, extra)
    assert config.dataset in ("cifar10", "cifar100", "svhn", "digits")
    assert ("awp" in name) == (config.awp_gamma > 0)


def test_paper_hyperparameters():
    at_awp = load_preset("cifar10-at-awp")
    assert (at_awp.awp_gamma, at_awp.awp_warmup, at_awp.epochs) == (0.01, 0, 200)
    assert at_awp.eps == pytest.approx(8 / 255) and at_awp.step_size == pytest.approx(2 / 255)
    trades_awp = load_preset("cifar10-trades-awp")
    # warm-up 9: csdongxian/AWP trades_AWP/train_trades_cifar.py:179 applies AWP when the 1-based
    # epoch >= 10, i.e. after 9 epochs without (tests/test_recipes.py checks every preset's card).
    assert (trades_awp.awp_gamma, trades_awp.awp_warmup, trades_awp.beta) == (0.005, 9, 6.0)
    assert load_preset("cifar10-trades").eps == 0.031
    assert load_preset("svhn-at-awp").awp_warmup == 5
    rst = load_preset("cifar10-rst", {"unlabeled": "u.npz"})
    assert (rst.batch_size, rst.schedule, rst.nesterov, rst.model) == (256, "cosine", True, "wrn-28-10")


def test_overrides_are_typed():
    config = load_preset("digits-at", parse_overrides(["epochs=5", "eps=8/255", "nesterov=true",
                                                        "lr_milestones=[0.3]", "val_size=none"]))
    assert config.epochs == 5 and config.eps == pytest.approx(8 / 255) and config.nesterov is True
    assert config.lr_milestones == [0.3] and config.val_size is None


@pytest.mark.parametrize("pairs, match", [
    (["epoch=5"], "unknown setting"),
    (["epochs=five"], "not a valid int"),
    (["eps=-0.1"], r"eps must be a finite number >= 0 and <= 1"),
    (["eps=8"], "pixel units"),
    (["awp_gamma=2"], "awp_gamma"),
    (["nesterov=maybe"], "not a valid bool"),
    (["epochs"], "expected key=value"),
    (["schedule=linear"], "unknown schedule"),
    (["schedule=cosin"], "did you mean cosine"),
    # every float setting is finite where a config enters (JSON cannot store inf; lr=inf trains to NaN)
    (["lr=inf"], "lr=inf is not a finite number"),
    (["beta=inf"], "beta=inf is not a finite number"),
    (["step_size=nan"], "step_size=nan is not a finite number"),
    (["eval_eps=-inf"], "eval_eps=-inf is not a finite number"),
    (["eval_batch_size=0"], "eval_batch_size must be >= 1"),
    (['lr_milestones=["a"]'], "lr_milestones must be a list of fractions"),
    (["lr_milestones=[1e400]"], "each of lr_milestones must be a finite number"),
    (["lr_milestones=[0, 0.5]"], "each of lr_milestones must be a finite number > 0"),
    ([f"seed={2**64}"], "seed must be <= 9223372036854775807"),
    (["seed=-1"], "seed must be >= 0"),
    (["model=smallcnm"], "unknown model 'smallcnm'; did you mean smallcnn?"),
    (["awp_kind=randm"], "did you mean random"),
])
def test_bad_overrides_are_refused(pairs, match):
    with pytest.raises(UsageError, match=match):
        load_preset("digits-at", parse_overrides(pairs))


def test_unknown_preset_and_rst_without_data():
    with pytest.raises(UsageError, match="unknown preset"):
        load_preset("cifar10-awp")
    with pytest.raises(UsageError, match="unlabeled"):
        load_preset("digits-rst")


def test_apply_overrides_keeps_the_original():
    base = TrainConfig()
    changed = apply_overrides(base, {"epochs": 3})
    assert base.epochs == 200 and changed.epochs == 3
