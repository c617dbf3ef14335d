"""Cost of every measure of landscape.measures, and our Hessian-vector product against PyHessian's.

(1) Each measure at its default settings, on the same model, samples and PGD attack, is timed once
    (after one warm-up of the whole table) and reported two ways, side by side:
      - forward passes over the samples, counted by a forward hook on the model (an attack step is
        one forward plus one backward to the input, so attacks count one pass per step);
      - its time divided by the median time of one training forward+backward pass over the same
        samples (train mode, gradients of the weights), timed interleaved with nothing else running.
    The registry's cost formula is printed next to them (S = attack steps).
(2) Hessian-vector products on the same model and batch, eval mode, over the conv and linear
    weights (PyHessian's model copy has every other parameter frozen, so both differentiate the same
    tensors): ours (landscape.hessian.HessianOperator, the gradient graph built once) against
    PyHessian 0.1's ``hessian_vector_product`` on its own graph (``hessian(..., data=(x, y))``),
    interleaved round by round; medians and the ratio ours / PyHessian (target <= 1.2). The two
    products must agree on the same v, and the top eigenvalues (power iteration, 100 iterations at
    most, relative tolerance 1e-3, each from its own random start) must agree.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/measure_cost.py [--samples 256] [--steps 10]
        [--hvp-batch 256] [--hvp-model smallcnn|preactresnet18] [--rounds 20] [--threads 1]

PyHessian comes from the ``bench`` extra: pip install -e '.[bench]'.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse
import copy
import platform
import time
from importlib import metadata

import torch
import torch.nn.functional as F

from common import interleaved  # benchmarks/ is on sys.path when run as a script

from awp.data import build_dataset
from awp.metrics import AttackSpec
from awp.models import build_model
from awp.weights import is_weight
from landscape.hessian import HessianOperator, dot, top_eigenvalue
from landscape.measures import MEASURES, measure


def train_pass(model, x, y):
    """One training forward+backward over the samples (weight gradients), on a copy's parameters."""
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    torch.autograd.grad(loss, params)


def count_forwards(model, n):
    """A forward hook counting samples through ``model``; returns (counter, handle)."""
    seen = {"samples": 0}

    def hook(module, inputs, output):
        seen["samples"] += len(inputs[0])

    return seen, model.register_forward_hook(hook)


def measure_table(model, x, y, attack):
    copy_for_training = copy.deepcopy(model).train()
    unit, _ = interleaved({"fwd+bwd": lambda: train_pass(copy_for_training, x, y)}, rounds=10)
    print(f"\n(1) one training forward+backward over {len(x)} samples: {unit['fwd+bwd'] * 1e3:.1f} ms (median of 10)")
    print(f"{'measure':24s} {'forwards':>9s} {'time (s)':>9s} {'time/fwd+bwd':>13s}   "
          f"registry cost (S = {attack.steps})")
    for name, spec in MEASURES.items():
        measure(name, model, (x, y), attack)  # warm-up
        seen, handle = count_forwards(model, len(x))
        start = time.perf_counter()
        value = measure(name, model, (x, y), attack)
        took = time.perf_counter() - start
        handle.remove()
        print(f"{name:24s} {seen['samples'] / len(x):9.1f} {took:9.3f} {took / unit['fwd+bwd']:13.1f}   "
              f"{spec.cost}   (value {value:.4g})")


def pyhessian_setup(model, x, y):
    from pyhessian import hessian

    theirs = copy.deepcopy(model)
    for name, p in theirs.named_parameters():
        p.requires_grad_(is_weight(name, p))
    return hessian(theirs, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)


def hvp_comparison(model, x, y, rounds):
    from pyhessian.utils import hessian_vector_product

    model.eval()
    theirs = pyhessian_setup(model, x, y)
    ours = HessianOperator(model, [(x, y)])
    assert [tuple(p.shape) for p in ours.params] == [tuple(p.shape) for p in theirs.params]
    v = ours.like("gaussian", torch.Generator().manual_seed(0))
    a, b = ours(v), hessian_vector_product(theirs.gradsH, theirs.params, v)
    rel = (dot([s - t for s, t in zip(a, b)], [s - t for s, t in zip(a, b)]).sqrt() / dot(b, b).sqrt()).item()
    med, low = interleaved({"ours": lambda: ours(v),
                            "pyhessian": lambda: hessian_vector_product(theirs.gradsH, theirs.params, v)}, rounds)
    n_weights = sum(p.numel() for p in ours.params)
    print(f"\n(2) Hessian-vector product, {len(x)} samples, {n_weights} weights, {rounds} interleaved rounds")
    print(f"    same v: ||Hv_ours - Hv_pyhessian|| / ||Hv_pyhessian|| = {rel:.2e}")
    for k in med:
        print(f"    {k:10s} median {med[k] * 1e3:8.2f} ms   min {low[k] * 1e3:8.2f} ms")
    print(f"    ratio ours / PyHessian: median {med['ours'] / med['pyhessian']:.3f}, "
          f"min {low['ours'] / low['pyhessian']:.3f} (target <= 1.2)")
    torch.manual_seed(0)  # PyHessian draws its start from the global generator
    start = time.perf_counter()
    their_top = theirs.eigenvalues(maxIter=100, tol=1e-3)[0][0]
    t_theirs = time.perf_counter() - start
    start = time.perf_counter()
    our_top = top_eigenvalue(ours, torch.Generator().manual_seed(0), iters=100, tol=1e-3)
    t_ours = time.perf_counter() - start
    print(f"    top eigenvalue: ours {our_top:.5g} ({t_ours:.2f} s), PyHessian {their_top:.5g} ({t_theirs:.2f} s), "
          f"relative difference {abs(our_top - their_top) / abs(their_top):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--channels", default="16,32,64")
    ap.add_argument("--hvp-model", choices=("smallcnn", "preactresnet18"), default="smallcnn")
    ap.add_argument("--hvp-batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--skip-table", action="store_true", help="only the Hessian-vector product comparison")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = [int(c) for c in args.channels.split(",")]
    print(f"machine: {platform.machine()} {platform.platform()}; torch {torch.__version__}; "
          f"pyhessian {metadata.version('pyhessian')}; threads {args.threads}")
    x, y = build_dataset("digits", val_size=0).train.tensors(limit=args.samples)
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=channels).eval()
    attack = AttackSpec(eps=0.2, step_size=0.05, steps=args.steps, seed=0)
    print(f"settings: smallcnn{channels} on digits 8x8 (fresh init), {len(x)} samples, PGD-{args.steps} eps 0.2, "
          "every measure at its default settings")
    if not args.skip_table:
        measure_table(model, x, y, attack)
    if args.hvp_model == "preactresnet18":
        model = build_model("preactresnet18", num_classes=10).eval()
        x = torch.rand(args.hvp_batch, 3, 32, 32)
        y = torch.randint(0, 10, (args.hvp_batch,))
    else:
        x, y = x[:args.hvp_batch], y[:args.hvp_batch]
    print(f"HVP model: {args.hvp_model}")
    hvp_comparison(model, x, y, args.rounds)


if __name__ == "__main__":
    main()
