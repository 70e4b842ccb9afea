"""Activations with their derivatives, and their Gaussian expectations.

The moments of a planted network weigh each hidden unit by a Gaussian
expectation of a derivative of its activation: by Stein's identity
E[y S_m(x)] = sum_j a2_j E[sigma^(m)(a_j.x + b1_j)] a_j^(x)m, and
a_j.x ~ N(0, |a_j|^2) for standard inputs. :func:`gaussian_expectation`
computes such one-dimensional integrals by Gauss-Hermite quadrature.
"""

import numpy as np
from scipy.special import expit

__all__ = ["ACTIVATIONS", "derivative", "gaussian_expectation", "value_and_slope"]


def _sigmoid(t, order):
    s = expit(t)
    if order == 0:
        return s
    ds = s * (1.0 - s)
    return (ds, ds * (1.0 - 2.0 * s), ds * (1.0 - 6.0 * ds),
            ds * (1.0 - 2.0 * s) * (1.0 - 12.0 * ds))[order - 1]


def _tanh(t, order):
    h = np.tanh(t)
    if order == 0:
        return h
    dh = 1.0 - h * h
    return (dh, -2.0 * h * dh, dh * (6.0 * h * h - 2.0),
            dh * (16.0 * h - 24.0 * h ** 3))[order - 1]


def _softplus(t, order):
    if order == 0:
        return np.logaddexp(0.0, t)
    return _sigmoid(t, order - 1)


ACTIVATIONS = {"sigmoid": _sigmoid, "tanh": _tanh, "softplus": _softplus}
MAX_ORDER = 4


def derivative(activation, t, order=0):
    """The order-th derivative (0 to 4) of a named activation at t."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if order not in range(MAX_ORDER + 1):
        raise ValueError(f"order: expected an integer in [0, {MAX_ORDER}], got {order!r}")
    return ACTIVATIONS[activation](np.asarray(t, dtype=np.float64), order)


def value_and_slope(activation, t):
    """(sigma(t), sigma'(t)), sharing the work (one exp per entry for
    sigmoid, one tanh for tanh): the refinement's forward pass."""
    t = np.asarray(t, dtype=np.float64)
    if activation == "sigmoid":
        s = expit(t)
        return s, s * (1.0 - s)
    if activation == "tanh":
        h = np.tanh(t)
        return h, 1.0 - h * h
    return derivative(activation, t, 0), derivative(activation, t, 1)


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def gaussian_expectation(activation, order, mean, sd):
    """E[sigma^(order)(mean + sd g)], g ~ N(0, 1), elementwise over mean and sd.

    200-node Gauss-Hermite quadrature. Measured against adaptive quadrature
    for orders 0-4: sigmoid and softplus to 1e-14 for sd <= 2; tanh, whose
    poles lie closer to the real axis, to 4e-13 at sd = 1, 6e-8 at sd = 1.5
    and 2e-5 at sd = 2.
    """
    mean = np.asarray(mean, dtype=np.float64)[..., None]
    sd = np.asarray(sd, dtype=np.float64)[..., None]
    return derivative(activation, mean + sd * _NODES, order) @ _WEIGHTS
