"""Standardising rows: the one-pass kernel (``fastten._kernels.rows``)
against its NumPy reference, bit for bit."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fastten._inputs import Standardiser
from fastten.accumulate import power_of_two_scale


def reference(inputs, X):
    """(x / c - mu / c) / (s / c) on the kept columns, c a power of two per
    feature: the operations the kernel must reproduce, in NumPy."""
    keep = inputs.keep
    mu, s = inputs.mu[keep], inputs.s[keep]
    c = power_of_two_scale(np.maximum(np.abs(mu), s))
    Z = np.divide(X[:, keep], c)
    Z -= mu / c
    Z /= s / c
    return Z


@given(seed=st.integers(0, 2 ** 16), dtype=st.sampled_from([np.float32, np.float64]), subset=st.booleans(),
       exponent=st.integers(-290, 290))
def test_kernel_has_the_bits_of_the_reference(seed, dtype, subset, exponent):
    # Features on scales from 10^exponent up, offsets of either sign: the
    # division by a power of two first keeps every step finite, and the
    # kernel must do the same operations in the same order (no fused
    # multiply-add, no reciprocal), so the bits are equal.
    rng = np.random.default_rng(seed)
    d = 7
    top = 30 if dtype == np.float32 else 290  # within the dtype's range, offsets included
    scale = 10.0 ** np.clip(exponent + rng.integers(0, 8, d), -top, top)
    mu = rng.standard_normal(d) * scale * 10
    X = (rng.standard_normal((50, d)) * scale + mu).astype(dtype)
    keep = np.array([0, 2, 3, 6]) if subset else np.arange(d)
    inputs = Standardiser(mu, scale, keep, np.eye(keep.size))
    got = inputs.standardise(X)
    assert got.dtype == np.float64 and got.shape == (50, keep.size)
    np.testing.assert_array_equal(got, reference(inputs, X))


@pytest.mark.parametrize("make", [lambda X: X.astype(np.int64), lambda X: np.asfortranarray(X)])
def test_other_arrays_take_the_reference(make):
    X = np.random.default_rng(0).standard_normal((20, 3)) * 10
    inputs = Standardiser(np.ones(3), np.full(3, 2.0), np.arange(3), np.eye(3))
    np.testing.assert_array_equal(inputs.standardise(make(X)), reference(inputs, make(X)))
