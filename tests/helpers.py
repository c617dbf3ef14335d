"""Builders shared by the tests of AWP (Wu et al. 2020) and of the official steps in tests/reference.py:
a small digits-sized CNN with non-trivial BatchNorm statistics, a fixed batch and the AT scripts' SGD.

Nothing here is a test; test modules import from here, never from one another.
"""
from __future__ import annotations

import torch

from awp.models import build_model


def digits_model(seed: int = 0) -> torch.nn.Module:
    """The smallcnn on 1 x 8 x 8 inputs, seeded, with running statistics moved off their initial values."""
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.3], std=[0.4])
    # Non-trivial running statistics, so that "untouched" is a real check.
    model.train()
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8))
    return model


def digits_batch(seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, x_adv, y): x_adv is a fixed point of the Linf 0.2 ball around x, so no attack plays a part."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x_adv = (x + 0.2 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    return x, x_adv, y


def sgd(model: torch.nn.Module) -> torch.optim.SGD:
    """SGD as the AT-AWP scripts build it (csdongxian/AWP AT_AWP/train_cifar10.py:240), lr 0.1."""
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
