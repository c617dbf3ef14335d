"""Tests of awp.evaluate against independent references and invariants (no numbers from past runs).

A small CNN is adversarially trained on the offline digits for a couple of seconds in the module
fixture, so the attacks have something to bite on: its robust accuracy lies strictly between 0
and its natural accuracy at eps 0.2.
"""
from __future__ import annotations

import hashlib
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from awp.attacks import pgd
from awp.checkpoint import save_checkpoint
from awp.config import TrainConfig
from awp.data import build_dataset
from awp.errors import UsageError, UserError
from awp.evaluate import ATTACKS, evaluate, evaluate_checkpoint, format_table
from awp.models import build_model

EPS = 0.2  # digits are 8x8 in [0, 1]; 8/255 would leave nothing to measure
N_TEST = 200


@pytest.fixture(scope="module")
def trained():
    """(model, data): smallcnn, 2 natural then 3 PGD-AT epochs on digits (about 2 s on one core)."""
    data = build_dataset("digits")
    x, y = data.train.tensors()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("smallcnn", num_classes=10, in_channels=1, mean=list(data.mean), std=list(data.std))
        generator = torch.Generator().manual_seed(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for epoch in range(5):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                xb, yb = x[order[start:start + 64]], y[order[start:start + 64]]
                if epoch >= 2:
                    xb = pgd(model, xb, yb, eps=EPS, step_size=0.1, steps=2, mode="train", generator=generator)
                model.train()
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, data


@pytest.fixture(scope="module")
def test_set(trained):
    _, data = trained
    return data.test.tensors(limit=N_TEST)


@pytest.fixture(scope="module")
def full_result(trained, test_set):
    model, _ = trained
    x, y = test_set
    return evaluate(model, x, y, attacks=("clean", "fgsm", "pgd20", "pgd100", "cw"), eps=EPS, batch_size=64)


def _plain_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        # float64: a float32 mean is off from count / n in the last bits.
        return (model(x).argmax(1) == y).double().mean().item()


# --------------------------------------------------------------------------------------------
# evaluate() on a trained model


def test_result_layout(full_result):
    assert set(full_result) == {"samples", "eps", "norm", "seed", "results"}
    assert full_result["samples"] == N_TEST and full_result["eps"] == EPS
    assert full_result["norm"] == "linf" and full_result["seed"] == 0
    assert list(full_result["results"]) == ["clean", "fgsm", "pgd20", "pgd100", "cw"]
    for entry in full_result["results"].values():
        assert set(entry) == {"accuracy", "attack"}
        assert 0.0 <= entry["accuracy"] <= 1.0
        # Accuracies are counts over N images.
        assert entry["accuracy"] * N_TEST == pytest.approx(round(entry["accuracy"] * N_TEST), abs=1e-9)


def test_clean_equals_independent_computation(trained, test_set, full_result):
    model, _ = trained
    x, y = test_set
    # One forward of the whole set versus evaluate's batches of 64.
    assert full_result["results"]["clean"]["accuracy"] == pytest.approx(_plain_accuracy(model, x, y), abs=1e-12)


def test_accuracy_ordering(full_result):
    acc = {name: r["accuracy"] for name, r in full_result["results"].items()}
    assert acc["clean"] > 0.8  # the model learned something
    # Attacks can only remove correct points compared with x itself (FGSM has no random start).
    assert acc["fgsm"] <= acc["clean"]
    assert acc["pgd20"] <= acc["clean"]
    assert acc["cw"] <= acc["clean"]
    # The attacks must actually do something at eps 0.2 on 8x8 digits.
    assert acc["pgd20"] < acc["clean"] - 0.1
    # PGD-100 is stronger than PGD-20 only statistically (different last iterates): small slack.
    assert acc["pgd100"] <= acc["pgd20"] + 0.03
    # The iterative attack beats the single step here (statistical, with slack).
    assert acc["pgd20"] <= acc["fgsm"] + 0.03


@pytest.mark.parametrize("steps", [20, 100])
def test_pgd_matches_hand_written_pgd(trained, test_set, full_result, steps):
    """A second implementation of the convention: eps, step eps/4, N steps, uniform start, CE, eval."""
    model, _ = trained
    x, y = test_set
    model.eval()
    generator = torch.Generator().manual_seed(0)
    step = EPS / 4
    correct = 0
    for start in range(0, len(x), 64):
        xb, yb = x[start:start + 64], y[start:start + 64]
        noise = torch.rand(xb.shape, generator=generator)
        x_adv = (xb + ((xb + (2 * noise - 1) * EPS) - xb).clamp(-EPS, EPS)).clamp(0, 1)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_adv).float(), yb, reduction="none").sum()
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = x_adv.detach() + step * grad.sign()
            x_adv = (xb + (x_adv - xb).clamp(-EPS, EPS)).clamp(0, 1)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    assert full_result["results"][f"pgd{steps}"]["accuracy"] == pytest.approx(correct / len(x), abs=1e-12)


def test_step_size_override_is_used(trained, test_set):
    """With step 0 PGD stays at its random start: accuracy on x + U(-eps, eps), clamped."""
    model, _ = trained
    x, y = test_set
    result = evaluate(model, x, y, attacks=["pgd20"], eps=EPS, step_size=0.0, batch_size=N_TEST)
    generator = torch.Generator().manual_seed(0)
    noisy = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * EPS).clamp(0, 1)
    assert result["results"]["pgd20"]["accuracy"] == pytest.approx(_plain_accuracy(model, noisy, y), abs=1e-12)
    assert "step=0," in result["results"]["pgd20"]["attack"]


def test_descriptions_state_the_conventions(full_result):
    d = {name: r["attack"] for name, r in full_result["results"].items()}
    assert "PGD-20" in d["pgd20"] and "20 steps" in d["pgd20"] and "step=0.05" in d["pgd20"]
    assert "PGD-100" in d["pgd100"] and "100 steps" in d["pgd100"]
    for name in ("pgd20", "pgd100", "cw"):
        assert "uniform random start" in d[name] and "1 restart" in d[name] and "eval mode" in d[name]
        assert "Linf" in d[name] and "eps=0.2" in d[name]
    assert "kappa=50" in d["cw"] and "30 steps" in d["cw"]
    assert "CE loss" in d["pgd20"] and "FGSM" in d["fgsm"] and "clean" in d["clean"]


def test_seeded_calls_are_identical(trained, test_set):
    model, _ = trained
    x, y = test_set[0][:80], test_set[1][:80]
    first = evaluate(model, x, y, attacks=("pgd20", "cw"), eps=EPS, batch_size=32, seed=3)
    torch.rand(5)  # the global random stream must not matter
    second = evaluate(model, x, y, attacks=("pgd20", "cw"), eps=EPS, batch_size=32, seed=3)
    assert first == second
    # Each attack has its own seeded generator: running cw alone gives the same number.
    alone = evaluate(model, x, y, attacks=("cw",), eps=EPS, batch_size=32, seed=3)
    assert alone["results"]["cw"] == first["results"]["cw"]


def test_model_and_inputs_left_alone(trained, test_set):
    model, _ = trained
    x, y = test_set[0][:64], test_set[1][:64]
    x_before, state_before = x.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.features[1].eval()  # a mixed state, restored module by module
    flags = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    try:
        evaluate(model, x, y, attacks=("clean", "fgsm", "pgd20", "cw"), eps=EPS)
        assert [m.training for m in model.modules()] == flags
    finally:
        model.eval()
    # Eval mode throughout: BN running statistics (and everything else) untouched, bit for bit.
    for key, value in model.state_dict().items():
        assert torch.equal(value, state_before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)
    assert torch.equal(torch.get_rng_state(), rng)


class ConstantLogits(nn.Module):
    """Logits that ignore the input (zero gradient; the input stays in the graph for autograd)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.0, 1.0, 3.0, 2.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_constant_model_same_accuracy_under_every_attack(test_set):
    x, y = test_set
    result = evaluate(ConstantLogits(), x, y, attacks=("clean", "fgsm", "pgd20", "pgd100", "cw"), eps=EPS)
    expected = (y == 2).double().mean().item()  # the constant prediction is class 2
    assert 0 < expected < 1
    for name, entry in result["results"].items():
        assert entry["accuracy"] == pytest.approx(expected, abs=1e-12), name


def test_zero_eps_leaves_every_attack_at_clean_accuracy(trained, test_set):
    model, _ = trained
    x, y = test_set[0][:64], test_set[1][:64]
    result = evaluate(model, x, y, attacks=("clean", "fgsm", "pgd20", "cw"), eps=0.0)
    accuracies = {r["accuracy"] for r in result["results"].values()}
    assert accuracies == {_plain_accuracy(model, x, y)}


def test_l2_norm_is_passed_on(trained, test_set):
    model, _ = trained
    x, y = test_set[0][:64], test_set[1][:64]
    result = evaluate(model, x, y, attacks=("clean", "pgd20"), eps=0.5, norm="l2")
    assert "L2 eps=0.5" in result["results"]["pgd20"]["attack"]
    assert result["results"]["pgd20"]["accuracy"] <= result["results"]["clean"]["accuracy"]
    with pytest.raises(UsageError, match="CW-inf") as info:
        evaluate(model, x, y, attacks=("cw",), eps=0.5, norm="l2")
    # The alternatives named are exactly the registered attacks that take L2.
    assert str(info.value).endswith("with norm='l2' use " + ", ".join(a for a in ATTACKS if a != "cw"))
    # An L2 radius is not bounded by 1 (the Linf pixel range): 1.5 on 8x8 images is a real radius.
    wide = evaluate(model, x, y, attacks=("pgd20",), eps=1.5, norm="l2")
    assert "L2 eps=1.5" in wide["results"]["pgd20"]["attack"] and 0 <= wide["results"]["pgd20"]["accuracy"] <= 1
    with pytest.raises(UsageError, match="eps must be a finite number >= 0 and <= 1"):
        evaluate(model, x, y, attacks=("pgd20",), eps=1.5, norm="linf")


def test_natural_is_clean_and_repeats_are_dropped(trained, test_set):
    model, _ = trained
    x, y = test_set[0][:32], test_set[1][:32]
    result = evaluate(model, x, y, attacks=("natural", "fgsm", "clean", "fgsm"), eps=EPS)
    assert list(result["results"]) == ["clean", "fgsm"]
    assert result["results"]["clean"]["accuracy"] == _plain_accuracy(model, x, y)


# --------------------------------------------------------------------------------------------
# Errors


def test_unknown_attack_lists_the_choices(trained, test_set):
    model, _ = trained
    with pytest.raises(UsageError) as info:
        evaluate(model, *test_set, attacks=("clean", "pgd7"), eps=EPS)
    message = str(info.value)
    assert "pgd7" in message and all(name in message for name in ATTACKS) and "\n" not in message


def test_bad_inputs_are_usage_errors(trained, test_set):
    model, _ = trained
    x, y = test_set
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        evaluate(model, x * 3 - 1, y, attacks=("clean",), eps=EPS)
    with pytest.raises(UsageError, match="labels"):
        evaluate(model, x, y[:-1], attacks=("clean",), eps=EPS)
    with pytest.raises(UsageError, match="eps"):
        evaluate(model, x, y, attacks=("clean",), eps=-0.1)
    with pytest.raises(UsageError, match="norm"):
        evaluate(model, x, y, attacks=("clean",), eps=EPS, norm="l1")
    with pytest.raises(UsageError, match="no attack"):
        evaluate(model, x, y, attacks=(), eps=EPS)


def test_missing_pyautoattack_is_a_user_error(trained, test_set, monkeypatch):
    model, _ = trained
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes the import fail
    with pytest.raises(UserError) as info:
        evaluate(model, *test_set, attacks=("clean", "autoattack"), eps=EPS)
    assert str(info.value) == "AutoAttack needs the reference implementation: pip install 'awp-landscape[autoattack]'"


# --------------------------------------------------------------------------------------------
# AutoAttack through the reference implementation


@pytest.mark.slow
def test_autoattack_end_to_end(trained, test_set):
    pytest.importorskip("pyautoattack")
    model, _ = trained
    x, y = test_set[0][:16], test_set[1][:16]
    rng = torch.get_rng_state()
    result = evaluate(model, x, y, attacks=("clean", "pgd20", "autoattack"), eps=EPS)
    acc = {name: r["accuracy"] for name, r in result["results"].items()}
    # AutoAttack (APGD-CE alone is already a stronger PGD) should not be weaker than PGD-20.
    assert acc["autoattack"] <= acc["pgd20"] + 2 / 16
    assert acc["autoattack"] <= acc["clean"]
    description = result["results"]["autoattack"]["attack"]
    assert "APGD-CE, APGD-T, FAB-T, Square" in description and "seed 0" in description
    assert "pyautoattack 0.2" in description and "eps=0.2" in description
    # pyautoattack reseeds the global generator and FAB calls backward(): neither may leak out.
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------------------------
# evaluate_checkpoint


def _write_checkpoint(path, model, **config):
    values = dict(dataset="digits", model="smallcnn", train_subset=300, eps=EPS)
    values.update(config)
    save_checkpoint(path, model, arch="smallcnn", arch_kwargs=model.arch_kwargs, dataset="digits", method="at",
                    awp_gamma=0.0, epoch=1, metrics={}, config=TrainConfig(**values).to_dict())


def test_evaluate_checkpoint_metadata_and_numbers(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "best.pt"
    _write_checkpoint(path, model)
    result = evaluate_checkpoint(path, attacks=["clean", "pgd20"], samples=50, device="cpu", batch_size=32)
    assert result["checkpoint"] == str(path)
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (result["arch"], result["dataset"], result["method"]) == ("smallcnn", "digits", "at")
    assert (result["awp_gamma"], result["epoch"], result["split"]) == (0.0, 1, "test")
    assert result["samples"] == 50 and result["eps"] == EPS  # eps defaults to the training eps
    # The same 50 images, rebuilt independently, with the in-memory model give the same numbers.
    reference = build_dataset("digits", train_subset=300)
    x, y = reference.test.images[:50], reference.test.labels[:50]
    assert result["results"]["clean"]["accuracy"] == pytest.approx(_plain_accuracy(model, x, y), abs=1e-12)
    direct = evaluate(model, x, y, attacks=["clean", "pgd20"], eps=EPS, batch_size=32)
    assert result["results"] == direct["results"]


def test_evaluate_checkpoint_val_split_and_eps(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "ckpt.pt"
    _write_checkpoint(path, model)
    result = evaluate_checkpoint(path, attacks=["clean"], split="val", samples=40, eps=0.1, device="cpu")
    assert result["split"] == "val" and result["samples"] == 40 and result["eps"] == 0.1
    val = build_dataset("digits", train_subset=300).val
    expected = _plain_accuracy(model, val.images[:40], val.labels[:40])
    assert result["results"]["clean"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    # More samples than the split holds: the whole split.
    everything = evaluate_checkpoint(path, attacks=["clean"], split="train", samples=10_000, device="cpu")
    assert everything["samples"] == 300


def test_evaluate_checkpoint_errors(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "ckpt.pt"
    _write_checkpoint(path, model)
    with pytest.raises(UsageError, match="choose from"):
        evaluate_checkpoint(path, attacks=["pgd"], device="cpu")
    with pytest.raises(UsageError, match="samples"):
        evaluate_checkpoint(path, attacks=["clean"], samples=0, device="cpu")
    with pytest.raises(UsageError, match="split"):
        evaluate_checkpoint(path, attacks=["clean"], split="holdout", device="cpu")
    no_val = tmp_path / "no_val.pt"
    _write_checkpoint(no_val, model, val_size=0)
    with pytest.raises(UsageError, match="validation") as info:
        evaluate_checkpoint(no_val, attacks=["clean"], split="val", device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="not found"):
        evaluate_checkpoint(tmp_path / "missing.pt", attacks=["clean"], device="cpu")


# --------------------------------------------------------------------------------------------
# format_table


def test_format_table_mentions_every_attack_and_eps(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "ckpt.pt"
    _write_checkpoint(path, model)
    result = evaluate_checkpoint(path, attacks=["clean", "fgsm", "pgd20", "cw"], samples=30, device="cpu")
    table = format_table(result)
    lines = table.splitlines()
    assert str(path) in lines[0] and "eps: 0.2" in lines[0] and "samples: 30" in lines[0] and "split: test" in lines[0]
    for name, entry in result["results"].items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert f"{100 * entry['accuracy']:.2f}%" in row and entry["attack"] in row
    assert len(lines) == 2 + len(result["results"])


def test_format_table_of_plain_evaluate(full_result):
    table = format_table(full_result)
    assert "eps: 0.2" in table and "checkpoint" not in table
    assert all(name in table for name in full_result["results"])
