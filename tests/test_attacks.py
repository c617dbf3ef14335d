"""Attacks: inside the eps-ball and [0, 1], input gradients only, modes restored, seeded."""
import pytest
import torch
import torch.nn.functional as F

from awp.attacks import cw_inf, fgsm, margin_loss, pgd, trades_kl
from awp.errors import UsageError
from awp.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model("smallcnn", num_classes=10, in_channels=1)


def _data(n=16):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("start", [True, "normal", False])
def test_pgd_stays_in_ball_and_box(norm, start):
    model = _model()
    x, y = _data()
    x[:4] = 0.0  # pixels on the box boundary
    x[4:8] = 1.0
    eps = 0.3 if norm == "linf" else 1.5
    x_adv = pgd(model, x, y, eps=eps, step_size=eps / 3, steps=5, norm=norm, random_start=start)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_all_attacks_stay_in_ball_and_box():
    model = _model()
    x, y = _data()
    for x_adv in (fgsm(model, x, y, eps=0.2), cw_inf(model, x, y, eps=0.2, steps=3),
                  trades_kl(model, x, eps=0.2, step_size=0.05, steps=3),
                  trades_kl(model, x, eps=0.2, step_size=0.05, steps=0)):
        assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_no_weight_gradient_and_modes_restored():
    model = _model()
    model.train()
    list(model.modules())[2].eval()  # a mixed mode must come back as it was
    flags = [m.training for m in model.modules()]
    x, y = _data()
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=2, mode="eval")
    trades_kl(model, x, eps=0.1, step_size=0.05, steps=2)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_pgd_increases_loss_and_is_seeded():
    model = _model()
    x, y = _data(64)
    kwargs = dict(eps=0.2, step_size=0.05, steps=10)
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kwargs)
    b = pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(a), y) > F.cross_entropy(model(x), y)


def test_restarts_never_worse_than_one_run():
    model = _model().eval()
    x, y = _data(32)
    one = pgd(model, x, y, eps=0.2, step_size=0.05, steps=3, generator=torch.Generator().manual_seed(5))
    many = pgd(model, x, y, eps=0.2, step_size=0.05, steps=3, restarts=3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        l1 = F.cross_entropy(model(one), y, reduction="none")
        l3 = F.cross_entropy(model(many), y, reduction="none")
    assert (l3 >= l1 - 1e-5).all()


def test_margin_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    # example 0: z_y - max other = 3 - 2 = 1; example 1: 1 - 5 = -4
    assert torch.allclose(margin_loss(logits, y, 0.0), torch.tensor([-1.0, 0.0]))
    assert torch.allclose(margin_loss(logits, y, 50.0), torch.tensor([-51.0, -46.0]))


def test_bad_arguments():
    model = _model()
    x, y = _data(2)
    with pytest.raises(UsageError):
        pgd(model, x, y, eps=-0.1, step_size=0.1, steps=1)
    with pytest.raises(UsageError):
        pgd(model, x, y, eps=0.1, step_size=0.1, steps=1, norm="l3")
    with pytest.raises(UsageError):
        pgd(model, x, y, eps=0.1, step_size=0.1, steps=1, mode="test")
