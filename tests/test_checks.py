"""Tests of uadlab._checks: a wrong type is a TypeError, a bad value a ValueError, both in one message form."""

from __future__ import annotations

import numpy as np
import pytest

from uadlab._checks import check_int, check_real


def test_check_int_accepts_numpy_integers_and_returns_int():
    value = check_int("n", np.int64(3), "a positive int", lambda v: v >= 1)
    assert value == 3 and type(value) is int


@pytest.mark.parametrize(("value", "error"), [(True, TypeError), (2.0, TypeError), ("2", TypeError), (None, TypeError),
                                              (0, ValueError), (-3, ValueError)])
def test_check_int_rejects(value, error):
    with pytest.raises(error, match=f"^`n` must be a positive int, got {value!r}$"):
        check_int("n", value, "a positive int", lambda v: v >= 1)


def test_check_real_accepts_ints_and_numpy_floats_and_returns_float():
    assert type(check_real("x", 1, "a number")) is float
    assert check_real("x", np.float32(0.5), "a number in [0, 1]", lambda v: 0 <= v <= 1) == 0.5


@pytest.mark.parametrize(("value", "error"), [(False, TypeError), ("0.5", TypeError), (None, TypeError),
                                              (float("nan"), ValueError), (float("inf"), ValueError)])
def test_check_real_rejects_non_numbers_and_by_default_non_finite(value, error):
    with pytest.raises(error, match="^`x` must be a finite number, got "):
        check_real("x", value, "a finite number")
