"""What AWP costs: the extra time of an AT-AWP step over an AT step, in training forward+backward
passes (target <= 1.1), and our AT-AWP step against the official proxy-model step.

The official code (csdongxian/AWP, utils_awp.AdvWeightPerturb) copies the model's state dict into
a proxy model at every step, takes an SGD step on the proxy and rebuilds v from the difference;
ours takes the gradient on the model itself with torch.autograd.grad. Every variant is timed in
the same run, interleaved round by round, and reported as medians and ratios, because this
machine's timings drift. Usage: PYTHONPATH=. python benchmarks/awp_overhead.py [--model preactresnet18]
"""
from __future__ import annotations

import argparse
import copy
import platform
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved

from awp.methods import get_method
from awp.models import build_model
from awp.perturbation import AdversarialWeightPerturbation


class OfficialAWP:
    """The official proxy-model step, written out (state-dict copy, proxy SGD step, diff)."""

    def __init__(self, model, gamma):
        self.model, self.gamma = model, gamma
        self.proxy = copy.deepcopy(model)
        self.proxy_opt = torch.optim.SGD(self.proxy.parameters(), lr=0.01)

    def calc(self, x_adv, y):
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss = -F.cross_entropy(self.proxy(x_adv), y)
        self.proxy_opt.zero_grad()
        loss.backward()
        self.proxy_opt.step()
        diff = OrderedDict()
        proxy_state = self.proxy.state_dict()
        for key, old in self.model.state_dict().items():
            if old.dim() <= 1 or "weight" not in key:
                continue
            d = proxy_state[key] - old
            diff[key] = old.norm() / (d.norm() + 1e-20) * d
        return diff

    def add(self, diff, coeff):
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for key, d in diff.items():
                params[key].add_(coeff * self.gamma * d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="preactresnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, in_channels=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    method = get_method("at", eps=8 / 255, step_size=2 / 255, steps=10)
    awp = AdversarialWeightPerturbation(model, gamma=0.01)
    official = OfficialAWP(model, gamma=0.01)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    model.train()
    x_adv = method.attack(model, x, y)  # fixed: the comparison isolates what AWP adds to a step

    def forward_backward():
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()

    def outer_step():  # the AT step after its attack
        loss = method.loss(model, x, x_adv, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def awp_step():  # ours: autograd.grad on the model itself, then the step at w + v
        with awp.compute(lambda m: method.loss(m, x, x_adv, y)).applied(exact=False):
            outer_step()

    def official_step():  # official: state-dict copy into the proxy, proxy step, diff
        diff = official.calc(x_adv, y)
        official.add(diff, 1.0)
        outer_step()
        official.add(diff, -1.0)

    start = time.perf_counter()
    method.attack(model, x, y)
    attack_time = time.perf_counter() - start
    variants = {"forward+backward": forward_backward, "AT step after attack": outer_step,
                "AT-AWP step after attack (ours)": awp_step,
                "AT-AWP step after attack (official proxy)": official_step}
    med = interleaved(variants, args.rounds)[0]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}; model {args.model}, batch {args.batch}x3x{args.size}x{args.size}, "
          f"PGD-10, gamma 0.01, {args.rounds} interleaved rounds, medians")
    print(f"  {'PGD-10 attack (timed once)':30s} {attack_time * 1000:9.1f} ms")
    for name, value in med.items():
        print(f"  {name:30s} {value * 1000:9.1f} ms")
    extra = (med["AT-AWP step after attack (ours)"] - med["AT step after attack"]) / med["forward+backward"]
    print(f"AWP extra time over an AT step, in training forward+backward passes: {extra:.2f}  (target <= 1.1)")
    ours = med["AT-AWP step after attack (ours)"] - med["AT step after attack"]
    theirs = med["AT-AWP step after attack (official proxy)"] - med["AT step after attack"]
    print(f"AWP part, official proxy / ours: {theirs / ours:.2f}x")
    full_ours = attack_time + med["AT-AWP step after attack (ours)"]
    full_theirs = attack_time + med["AT-AWP step after attack (official proxy)"]
    print(f"whole AT-AWP step (PGD-10 attack included), official proxy / ours: {full_theirs / full_ours:.2f}x")


if __name__ == "__main__":
    main()
