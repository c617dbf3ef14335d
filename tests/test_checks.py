"""Value checks where settings enter the code (awp.checks) and the one-line exception formatter."""
import math

import pytest

from awp.checks import MAX_SEED, check_int, check_number, check_seed
from awp.errors import UsageError, one_line


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_refused_with_the_range(bad):
    with pytest.raises(UsageError, match=r"lr must be a finite number > 0, got"):
        check_number(bad, "lr", low=0, low_open=True)


def test_bounds_open_and_closed():
    assert check_number(0, "momentum", low=0, high=1, high_open=True) == 0.0
    with pytest.raises(UsageError, match=r"momentum must be a finite number >= 0 and < 1, got 1"):
        check_number(1, "momentum", low=0, high=1, high_open=True)
    with pytest.raises(UsageError, match="must be a number, got 'x'"):
        check_number("x", "beta")
    with pytest.raises(UsageError, match="must be a number"):
        check_number(True, "beta")


def test_whole_numbers():
    assert check_int(3, "epochs", 1) == 3 and check_int(3.0, "epochs", 1) == 3
    for bad, text in ((0, ">= 1"), (2.5, "whole number"), (True, "whole number"), ("3", "whole number")):
        with pytest.raises(UsageError, match=text):
            check_int(bad, "epochs", 1)


def test_seeds_fit_torch_generators():
    import torch

    assert check_seed(MAX_SEED) == MAX_SEED
    torch.Generator().manual_seed(MAX_SEED + 7919 + 1_000_003 * 64)  # the largest derived seed still fits
    for bad in (2**64, -1, 1.5):
        with pytest.raises(UsageError, match="seed must be"):
            check_seed(bad)


def test_one_line_joins_and_cuts():
    assert one_line(ValueError("a\n\n  b  ")) == "a | b"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 50), limit=10) == "xxxxxxx..."
