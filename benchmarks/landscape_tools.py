"""1-D weight loss curves: ours against the `loss-landscapes` package (clean loss) and against a
deep-copy-per-point loop (adversarial loss, Wu et al. 2020, Sec. 3).

Side by side in one run, same model (smallcnn, eval mode), same samples, K points each:
  clean loss
    (a) ours: landscape.curve.weight_loss_curve(..., loss='clean'), direction drawn inside the timing;
    (b) loss_landscapes.random_line(model, Loss(cross_entropy, x, y), steps=K, normalization='filter',
        deepcopy_model=True) (the copy keeps the caller's model untouched, as ours does).
    Its direction semantics differ from ours (printed below), so the timing compares equal work
    (K points, one forward of the same samples each), and a separate check feeds *its* direction
    to ours and compares the two curves value by value.
  adversarial loss (PGD re-run at every point)
    (c) ours: weight_loss_curve(..., loss='adversarial'), in place, no copy;
    (d) a straightforward loop: for every alpha, copy.deepcopy(model), write w + alpha d into the
        copy, run the same seeded PGD on the copy, one forward. The curves must agree.
Variants run interleaved, round by round; medians; ratios b/a and d/c printed. Memory: the extra
bytes a model copy holds (what (b) keeps once and (d) allocates per point) is printed; peak-memory
tooling would cost more than the benchmark, so it is not measured here (see landscape_cost.py).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/landscape_tools.py [--points 11] [--samples 512]
        [--adv-samples 256] [--steps 10] [--rounds 5] [--threads 1]

loss-landscapes comes from the ``bench`` extra: pip install -e '.[bench]'.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse
import copy
import platform
from importlib import metadata

import numpy
import torch
import torch.nn.functional as F

from benchmarks.common import interleaved
from awp.attacks import pgd
from awp.data import build_dataset
from awp.metrics import AttackSpec
from awp.models import build_model
from landscape.curve import weight_loss_curve
from landscape.directions import random_direction


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"



def deepcopy_curve(model, d, alphas, x, y, attack, batch_size):
    """The straightforward adversarial curve: a deep copy per point, the same seeded PGD on it."""
    losses = []
    for alpha in alphas:
        other = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, p in other.named_parameters():
                p.add_(alpha * d[name])
        gen = torch.Generator().manual_seed(attack.seed)
        total = 0.0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = pgd(other, xb, yb, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
                        generator=gen)
            with torch.no_grad():
                total += float(F.cross_entropy(other(x_adv), yb, reduction="sum"))
        losses.append(total / len(x))
    return losses


def loss_landscapes_direction(model, steps, distance):
    """The direction random_line draws, rebuilt with the package's own functions (same RNG state)."""
    from loss_landscapes.model_interface.model_parameters import rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    wrapper = wrap_model(copy.deepcopy(model))
    start_point = wrapper.get_module_parameters()
    direction = rand_u_like(start_point)
    direction.filter_normalize_(start_point)
    direction.mul_(((start_point.model_norm() / distance) / steps) / direction.model_norm())
    names = [name for name, _ in model.named_parameters()]
    return {name: t.detach().clone() for name, t in zip(names, direction.parameters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--samples", type=int, default=512, help="samples of the clean curve")
    parser.add_argument("--adv-samples", type=int, default=256, help="samples of the adversarial curve")
    parser.add_argument("--batch-size", type=int, default=256, help="batch of the adversarial curve")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--channels", default="32,64,128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except Exception as exc:  # noqa: BLE001 - report any import failure and go on without it
        print(f"loss-landscapes unavailable ({type(exc).__name__}: {exc}); its comparison is skipped")
        loss_landscapes = None

    torch.manual_seed(0)
    channels = [int(c) for c in args.channels.split(",")]
    model = build_model("smallcnn", num_classes=10, in_channels=1, channels=channels).eval()
    with torch.no_grad():
        # Fresh BatchNorm biases are all zero; loss-landscapes' filter normalization then divides
        # by zero (ZeroDivisionError). Give them the small non-zero values a trained model has.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.normal_(0.0, 0.1)
    x, y = build_dataset("digits").train.tensors(limit=max(args.samples, args.adv_samples))
    xc, yc = x[:args.samples], y[:args.samples]
    xa, ya = x[:args.adv_samples], y[:args.adv_samples]
    attack = AttackSpec(eps=0.2, step_size=0.05, steps=args.steps, seed=0)
    k = args.points
    alphas = torch.linspace(-1, 1, k).tolist()
    copy_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))

    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.platform()}, "
          f"{os.cpu_count()} logical CPUs")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, "
          f"loss-landscapes {_version('loss-landscapes')}")
    print(f"threads: torch.get_num_threads() = {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS = {os.environ.get('OMP_NUM_THREADS')}")
    print(f"settings: smallcnn{channels} (eval mode) on digits 8x8, K = {k} points; clean curve on "
          f"{len(xc)} samples in one batch; adversarial curve on {len(xa)} samples, batch "
          f"{args.batch_size}, PGD-{args.steps} eps 0.2 step 0.05; {args.rounds} interleaved rounds "
          f"after one warm-up, medians; one model copy holds {copy_bytes / 1e6:.2f} MB")

    results = {}
    # ---------------------------------------------------------------- clean curve vs loss-landscapes
    if loss_landscapes is not None:
        print("clean curve: loss-landscapes' random_line differs from ours in what it computes:")
        print("  - its direction is uniform in [0, 1] (every entry positive), not Gaussian;")
        print("  - it filter-normalizes biases and BatchNorm parameters too (ours: d = 0 there, 'biasbn'),")
        print("    and for a 1-D tensor it then also treats every element as a 'filter', so there")
        print("    d_i = |w_i| exactly (no randomness, no sign); an all-zero 1-D tensor (a fresh BN")
        print("    bias) makes it raise ZeroDivisionError, so the biases here get non-zero values;")
        print("  - it normalizes filter by filter in a Python loop with one .item() per filter;")
        print("  - it then rescales the whole direction so the line ends ||w|| / distance away (the")
        print("    'distance' argument divides), and it evaluates alpha = 1/K .. 1 on one side of w only;")
        print("  - it uses the model's current train/eval mode, sets requires_grad = False on the")
        print("    model's parameters for good, and with deepcopy_model=False leaves the model at the")
        print("    line's end point; each point is one forward of all samples and one .item().")
        distance = 10.0
        metric = loss_landscapes.metrics.Loss(F.cross_entropy, xc, yc)

        def theirs():
            return loss_landscapes.random_line(model, metric, distance=distance, steps=k,
                                               normalization="filter", deepcopy_model=True)

        def ours_clean():
            d = random_direction(model, seed=0)
            return weight_loss_curve(model, [d], alphas, (xc, yc), loss="clean", batch_size=len(xc))

        # Agreement: the same RNG state gives random_line's direction; feed it to ours.
        torch.manual_seed(7)
        their_curve = theirs()
        torch.manual_seed(7)
        d_theirs = loss_landscapes_direction(model, k, distance)
        ours_on_theirs = weight_loss_curve(model, [d_theirs], [(i + 1) for i in range(k)], (xc, yc),
                                           loss="clean", batch_size=len(xc))["loss"].to_numpy()
        rel = float(abs(ours_on_theirs - their_curve).max() / abs(their_curve).max())
        print(f"  agreement on its direction (alpha = 1..K): max relative difference {rel:.2e}")
        assert rel < 1e-4, "ours and loss-landscapes disagree on the same direction"
        assert all(p.requires_grad for p in model.parameters()), "the caller's model was changed"

        med = interleaved({"ours": ours_clean, "loss-landscapes": theirs}, args.rounds)[0]
        print(f"  (a) ours, weight_loss_curve(loss='clean'):   {med['ours'] * 1000:9.1f} ms")
        print(f"  (b) loss_landscapes.random_line + Loss:      {med['loss-landscapes'] * 1000:9.1f} ms")
        results["clean"] = med["loss-landscapes"] / med["ours"]

    # ---------------------------------------------------------------- adversarial curve vs deep copy
    d = random_direction(model, seed=0)
    ours_adv = lambda: weight_loss_curve(model, [d], alphas, (xa, ya), attack=attack,  # noqa: E731
                                         batch_size=args.batch_size)
    naive = lambda: deepcopy_curve(model, d, alphas, xa, ya, attack, args.batch_size)  # noqa: E731
    a, b = ours_adv()["loss"].to_numpy(), numpy.asarray(naive())
    rel = float(abs(a - b).max() / abs(b).max())
    print(f"adversarial curve: agreement with the deep-copy loop, max relative difference {rel:.2e}")
    assert rel < 1e-4, "ours and the deep-copy loop disagree"
    med = interleaved({"ours": ours_adv, "deepcopy": naive}, args.rounds)[0]
    print(f"  (c) ours, weight_loss_curve(loss='adversarial'): {med['ours'] * 1000:9.1f} ms")
    print(f"  (d) deep copy per point + PGD on the copy:       {med['deepcopy'] * 1000:9.1f} ms "
          f"(+{k} model copies, {k * copy_bytes / 1e6:.2f} MB allocated in all)")
    results["adversarial"] = med["deepcopy"] / med["ours"]

    print("summary:")
    if "clean" in results:
        print(f"  clean curve, loss-landscapes / ours = {results['clean']:.3f} (K = {k}, same samples)")
    print(f"  adversarial curve, deep-copy loop / ours = {results['adversarial']:.3f} (K = {k})")


if __name__ == "__main__":
    main()
