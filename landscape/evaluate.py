"""The point evaluator shared by curves, surfaces and flatness scalars (Wu et al. 2020, Sec. 3).

A landscape point is rho(w + v) for v = sum_i c_i d_i: the model in eval mode (BatchNorm uses
the centre model's running statistics), the weights set in place to w_centre + v by
:class:`awp.weights.WeightOffset` (the centre is saved once per session and restored bit for bit
after every point: no model copy, no per-point allocation), then one of three losses on a fixed set of samples:

- ``'adversarial'`` (the paper's): PGD re-run against f_{w+v}; its random start comes from a
  generator seeded with ``attack.seed`` afresh at every point and consumed batch after batch, so
  v = 0 reproduces :func:`awp.metrics.clean_and_robust` with the same attack, seed and batch size;
- ``'clean'``: CE on the clean samples;
- ``'fixed'``: CE on adversarial examples crafted once at the centre w. This is the biased
  shortcut of earlier work (it underestimates rho away from w), kept only for comparison.

The samples go to the device once; each point costs one attack plus one forward and one host
sync (the two sums of the point), nothing else.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from awp.attacks import model_mode
from awp.errors import UsageError
from awp.registry import Registry
from awp.metrics import AttackSpec, loss_and_correct
from awp.weights import Combination, WeightOffset
from awp.runtime import Runtime

LOSSES = Registry("loss", {
    "adversarial": "CE of PGD re-run against f_{w+v} at every point (the paper's)",
    "clean": "CE on the clean samples",
    "fixed": "CE of adversarial examples crafted once at the centre w (the biased shortcut of earlier work)"})
Batches = list[tuple[Tensor, Tensor]]


def model_runtime(model: nn.Module, runtime: Runtime | None = None) -> Runtime:
    """``runtime`` or an fp32 Runtime on the device that holds the model's parameters."""
    if runtime is not None:
        return runtime
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise UsageError("the model has no parameters") from None
    return Runtime(device)


def prepare_batches(data: Any, batch_size: int, runtime: Runtime) -> Batches:
    """(x, y) tensors -> batches of ``batch_size``; an iterable of (x, y) -> its batches; all on the device once."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise UsageError(f"batch size must be a whole number >= 1, got {batch_size}")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise UsageError(f"data has {len(x)} images but {len(y)} labels")
        pairs: Iterable = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    else:
        pairs = data
    batches = [(runtime.batch(xb), yb.to(runtime.device)) for xb, yb in pairs]
    if not batches or sum(len(y) for _, y in batches) == 0:
        raise UsageError("no samples to evaluate the landscape on")
    return batches


def check_loss(loss: str, attack: AttackSpec | None) -> None:
    LOSSES.resolve(loss)
    if loss != "clean" and attack is None:
        raise UsageError(f"loss {loss!r} needs an attack (awp.metrics.AttackSpec)")


def active_names(direction: dict[str, Tensor]) -> list[str]:
    """Names whose tensor is not all zero (ignored biases/BN are skipped: nothing to add)."""
    if not direction:
        raise UsageError("a direction is empty")
    flags = torch.stack([t.ne(0).any() for t in direction.values()]).tolist()  # one sync
    return [name for name, flag in zip(direction, flags) if flag]


class PointEvaluator:
    """rho(w + v) for many v on fixed samples; the model is in eval mode only inside :meth:`session`."""

    def __init__(self, model: nn.Module, data: Any, *, loss: str = "adversarial",
                 attack: AttackSpec | None = None, batch_size: int = 256, runtime: Runtime | None = None):
        check_loss(loss, attack)
        self.model = model
        self.loss = loss
        self.attack = attack
        self.runtime = model_runtime(model, runtime)
        self.batches = prepare_batches(data, batch_size, self.runtime)
        self.count = sum(len(y) for _, y in self.batches)
        self._fixed: list[Tensor] | None = None
        self._offset: WeightOffset | None = None  # the weights' centre, saved while a session is open

    def _adversarial(self) -> list[Tensor]:
        generator = self.runtime.generator(self.attack.seed)
        out = []
        for xb, yb in self.batches:
            with self.runtime.autocast():
                out.append(self.attack(self.model, xb, yb, generator))
        return out

    def _totals(self) -> Tensor:
        """[sum of CE, number correct] at the current weights (the shared loop of awp.metrics)."""
        if self.loss == "clean":
            return loss_and_correct(self.model, self.batches, runtime=self.runtime)
        if self.loss == "fixed":
            if self._fixed is None:  # crafted at the centre w, the first time it is needed
                raise RuntimeError("fixed examples are crafted in session()")
            pairs = [(xa, yb) for xa, (_, yb) in zip(self._fixed, self.batches)]
            return loss_and_correct(self.model, pairs, runtime=self.runtime)
        return loss_and_correct(self.model, self.batches, self.attack.on(self.model), runtime=self.runtime,
                                generator=self.runtime.generator(self.attack.seed))

    def inputs(self) -> list[Tensor]:
        """The inputs of a point, batch by batch, inside :meth:`session`: the clean images
        ('clean'), the examples crafted at the centre w ('fixed'), or adversarial examples crafted
        now against the current weights ('adversarial', the attack seeded afresh)."""
        if self._offset is None:
            raise RuntimeError("PointEvaluator.inputs needs an active session()")
        if self.loss == "clean":
            return [xb for xb, _ in self.batches]
        return self._fixed if self.loss == "fixed" else self._adversarial()

    def sums(self, perturbation: dict[str, Tensor] | Combination | None = None,
             names: Sequence[str] | None = None) -> Tensor:
        """[sum of CE, number correct] at w + v, on the device (no sync); inside :meth:`session`.

        ``perturbation``: v itself (name -> tensor) or a combination [(c_i, d_i), ...] with
        v = sum_i c_i d_i; ``names`` restricts v to those tensors (the non-zero ones). A NaN or
        infinite loss stays so, and the count is NaN when a logit is not finite
        (:func:`awp.metrics.loss_and_correct`).
        """
        if self._offset is None:
            raise RuntimeError("PointEvaluator.sums needs an active session()")
        if not perturbation:
            return self._totals()
        combination = [(1.0, perturbation)] if isinstance(perturbation, dict) else perturbation
        with self._offset.applied(combination, names):
            return self._totals()

    def point(self, perturbation: dict[str, Tensor] | Combination | None = None,
              names: Sequence[str] | None = None) -> tuple[float, float]:
        """(mean loss, accuracy) at w + v: one host sync."""
        loss_sum, correct = (self.sums(perturbation, names) / max(self.count, 1)).tolist()
        return loss_sum, correct

    @contextlib.contextmanager
    def session(self) -> Iterator["PointEvaluator"]:
        """Eval mode for the whole evaluation (flags restored after); 'fixed' examples crafted at w.
        Weights moved by a point are restored bit for bit after it, and again on exit."""
        self._offset = WeightOffset(self.model)
        try:
            with model_mode(self.model, "eval"):
                if self.loss == "fixed" and self._fixed is None:
                    self._fixed = self._adversarial()
                yield self
        finally:
            self._offset.restore()
            self._offset = None


@contextlib.contextmanager
def fixed_batches(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, batch_size: int = 256,
                  runtime: Runtime | None = None) -> Iterator[Batches]:
    """[(inputs, labels), ...] on the device, held fixed while the block runs with the model in eval
    mode: the clean images when ``attack`` is None, else adversarial examples crafted once at w
    (seeded with ``attack.seed``, as every point of a landscape). Flags restored on exit."""
    evaluator = PointEvaluator(model, data, loss="clean" if attack is None else "fixed", attack=attack,
                               batch_size=batch_size, runtime=runtime)
    with evaluator.session():
        yield [(x_in, yb) for x_in, (_, yb) in zip(evaluator.inputs(), evaluator.batches)]


def run_points(evaluator: PointEvaluator, points: Sequence[tuple[dict[str, Any], Combination]],
               names: Sequence[str], *, on_point: Callable[[dict[str, Any]], None] | None = None,
               progress: bool = False, desc: str = "landscape", sharded: bool = False) -> list[dict[str, Any]]:
    """Evaluate each (row keys, combination) point; a row is keys + loss + acc.

    ``sharded`` (inside a process group of N > 1; ignored otherwise): rank r evaluates points
    r, r + N, ... (:func:`shard`); after each round of N points the rows are gathered, so every
    rank returns all rows in the order of ``points`` and ``on_point`` sees every row on every
    rank (the caller lets rank 0 alone write). A point's value does not depend on which process
    computes it (the attack's generator is re-seeded at every point), so the table equals the
    one-process table on the same kind of device.
    """
    from tqdm.auto import tqdm

    from awp import distributed

    world = distributed.world() if sharded and distributed.initialized() else 1
    mine = shard(points, distributed.rank(), world) if world > 1 else list(points)
    rounds = -(-len(points) // world)
    rows: list[dict[str, Any]] = []
    with evaluator.session(), tqdm(total=len(points), disable=not progress, desc=desc, leave=False) as bar:
        for r in range(rounds):
            row = None
            if r < len(mine):
                keys, combination = mine[r]
                loss, acc = evaluator.point(combination, names)
                row = {**keys, "loss": loss, "acc": acc}
            done = [row] if world == 1 else [g for g in distributed.all_gather_objects(row) if g is not None]
            for got in done:
                rows.append(got)
                if on_point is not None:
                    on_point(dict(got))
            bar.update(len(done))
    return rows


def point_key(*values: float) -> tuple:
    """A float-tolerant key for matching requested points (alphas parsed from text or linspace)."""
    return tuple(round(float(v), 10) for v in values)


def shard(points: Sequence, rank: int, world_size: int) -> list:
    """Points ``rank``, ``rank + world_size``, ...: each process of a group takes its share."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"bad shard {rank} of {world_size}")
    return list(points)[rank::world_size]


def as_floats(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]
    if not out:
        raise UsageError(f"{what} must not be empty")
    if any(v != v or v in (float("inf"), float("-inf")) for v in out):
        raise UsageError(f"{what} must be finite numbers")
    return out
