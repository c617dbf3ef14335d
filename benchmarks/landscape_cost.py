"""Cost of an adversarial weight-loss curve (Wu et al. 2020, Sec. 3) against its floor and a naive tool.

Side by side in one run, on CPU, same samples and attack:
  (a) landscape.curve.weight_loss_curve with K points;
  (b) the floor: K times (one PGD attack + one forward) at the unperturbed weights, measured directly;
  (c) a straightforward implementation that deep-copies the model for every point (as Stutz et
      al.'s robust-flatness code does) and writes w + alpha d into the copy.
Prints (a)/(b) (target <= 1.1) and (c)/(a), and the peak Python-heap memory (tracemalloc) of (a)
for K and 2K points, to show it does not grow with K.

    PYTHONPATH=. python benchmarks/landscape_cost.py [--points 11] [--samples 256] [--steps 10]
"""
from __future__ import annotations

import argparse
import copy
import platform
import resource
import time
import tracemalloc

import torch
import torch.nn.functional as F

from awp.data import build_dataset
from awp.metrics import AttackSpec
from awp.models import build_model
from landscape.curve import weight_loss_curve
from landscape.directions import random_direction


def floor(model, x, y, attack, k, batch_size):
    model.eval()
    for _ in range(k):
        gen = torch.Generator().manual_seed(attack.seed)
        sums = torch.zeros(2, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = attack(model, xb, yb, gen)
            with torch.no_grad():
                logits = model(x_adv)
            sums += torch.stack([F.cross_entropy(logits, yb, reduction="sum"), (logits.argmax(1) == yb).sum()]).double()
        sums.tolist()


def naive(model, d, alphas, x, y, attack, batch_size):
    for alpha in alphas:
        other = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, p in other.named_parameters():
                p.add_(alpha * d[name])
        floor(other, x, y, attack, 1, batch_size)


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--channels", default="16,32,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = [int(c) for c in args.channels.split(",")]
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=channels).eval()
    x, y = build_dataset("digits").train.tensors(limit=args.samples)
    attack = AttackSpec(eps=0.2, step_size=0.05, steps=args.steps, seed=0)
    d = random_direction(model, seed=0)
    k = args.points
    alphas = torch.linspace(-1, 1, k).tolist()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.platform()}; "
          f"torch {torch.__version__}; threads {args.threads}")
    print(f"settings: smallcnn{channels} on digits 8x8, {len(x)} samples, batch {args.batch_size}, "
          f"PGD-{args.steps} eps 0.2, K = {k} points, best of {args.repeats}")

    curve = lambda a: weight_loss_curve(model, [d], a, (x, y), attack=attack, batch_size=args.batch_size)  # noqa: E731
    curve(alphas[:2])  # warm-up
    t_curve = timed(lambda: curve(alphas), args.repeats)
    t_floor = timed(lambda: floor(model, x, y, attack, k, args.batch_size), args.repeats)
    t_naive = timed(lambda: naive(model, d, alphas, x, y, attack, args.batch_size), args.repeats)
    print(f"(a) weight_loss_curve, K points:        {t_curve:8.3f} s")
    print(f"(b) K x (attack + forward), direct:     {t_floor:8.3f} s   "
          f"ratio a/b = {t_curve / t_floor:.3f} (target <= 1.1)")
    print(f"(c) deep copy per point (naive):        {t_naive:8.3f} s   ratio c/a = {t_naive / t_curve:.3f}")

    # tracemalloc sees Python objects only; torch's CPU tensors show in the process's peak RSS, which
    # must not rise when the curve gets twice as many points.
    peaks, rss = [], []
    for n in (k, 2 * k):
        tracemalloc.start()
        curve(torch.linspace(-1, 1, n).tolist())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"peak Python heap of (a) (tracemalloc): K = {k}: {peaks[0] / 1e6:.3f} MB, "
          f"2K = {2 * k}: {peaks[1] / 1e6:.3f} MB")
    print(f"process peak RSS after (a) with K, then 2K points: {rss[0]:.1f} MB -> {rss[1]:.1f} MB "
          f"(+{rss[1] - rss[0]:.1f} MB)")


if __name__ == "__main__":
    main()
