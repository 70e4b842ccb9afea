"""Bad input is refused at the boundary with a message naming the parameter,
the expectation and what was received."""

import numpy as np
import pytest

import fastten.moments as M
from fastten._random import check_random_state

X = np.random.default_rng(0).standard_normal((30, 4))
y = np.random.default_rng(1).standard_normal(30)
U = np.random.default_rng(2).standard_normal((4, 2))

CALLS = [
    lambda X, y, U: M.first_moment(X, y),
    lambda X, y, U: M.second_moment_dot(X, y, U),
    lambda X, y, U: M.third_moment_iuu(X, y, U),
    lambda X, y, U: M.third_moment_uuu(X, y, U),
    lambda X, y, U: M.third_moment_slice_dot(X, y, U[:, 0], U),
    lambda X, y, U: M.third_moment_projected(X, y, U),
    lambda X, y, U: M.fourth_moment_iuuu(X, y, U),
    lambda X, y, U: M.fourth_moment_projected(X, y, U),
]


def with_nan(a, where):
    a = np.array(a, dtype=float)
    a.flat[where] = np.nan
    return a


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("args, error, match", [
    ((X[:, 0], y, U), ValueError, r"X: expected a 2-D array .* got 1-D with shape \(30,\)"),
    ((X[:0], y[:0], U), ValueError, r"X: expected at least one sample"),
    ((with_nan(X, 5), y, U), ValueError, r"X: expected finite values, got 1 NaN .* index 5"),
    ((np.where(X > 1, np.inf, X), y, U), ValueError, r"X: expected finite values"),
    ((X.astype(complex), y, U), TypeError, r"X: expected a real numeric array, got dtype complex128"),
    ((X > 0, y, U), TypeError, r"X: expected a real numeric array, got dtype bool"),
    ((np.full((30, 4), "a"), y, U), TypeError, r"X: expected a real numeric array"),
    ((X, y[:-1], U), ValueError, r"y: expected 30 labels \(one per row of X\), got 29"),
    ((X, y[:, None], U), ValueError, r"y: expected a 1-D array of 30 labels, got shape \(30, 1\)"),
    ((X, with_nan(y, 0), U), ValueError, r"y: expected finite values"),
])
def test_bad_data(call, args, error, match):
    with pytest.raises(error, match=match):
        call(*args)


@pytest.mark.parametrize("call", CALLS[1:])
def test_bad_vectors(call):
    with pytest.raises(ValueError, match=r"(U|W|Omega|theta): expected a vector of length 4 or an array of shape \(4, m\)"):
        call(X, y, U[:3])
    with pytest.raises(ValueError, match=r"(U|W|Omega|theta): expected finite values"):
        call(X, y, with_nan(U, 1))


def test_bad_theta():
    with pytest.raises(ValueError, match=r"theta: expected one vector of length 4, got shape \(4, 2\)"):
        M.third_moment_slice_dot(X, y, U, U)


def test_integer_inputs_are_converted():
    Xi = np.round(X * 10).astype(np.int64)
    np.testing.assert_array_equal(M.third_moment_iuu(Xi, y, U), M.third_moment_iuu(Xi.astype(float), y, U))


@pytest.mark.parametrize("bad, error, match", [
    (-1, ValueError, "random_state: expected a non-negative integer seed, got -1"),
    (1.5, TypeError, "random_state: expected None, a non-negative int or a numpy.random.Generator, got 1.5"),
    (True, TypeError, "random_state: expected None"),
    (np.random.RandomState(0), TypeError, "random_state: expected None"),
])
def test_random_state_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        check_random_state(bad)


def test_random_state_accepts():
    g = np.random.default_rng(3)
    assert check_random_state(g) is g
    assert check_random_state(5).random() == np.random.default_rng(5).random()
    assert isinstance(check_random_state(None), np.random.Generator)


def test_huge_finite_values_are_accepted():
    # Row sums overflow to inf; the exact scan must still accept the data.
    Xh = np.full((5, 3), 1e308)
    assert np.isfinite(M.first_moment(Xh, np.zeros(5))).all()
    with pytest.raises(ValueError, match="X: expected finite values, got 1 NaN or infinite entry"):
        M.first_moment(with_nan(Xh, 4), np.zeros(5))
