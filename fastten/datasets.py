"""Planted two-layer networks: problems with a known answer."""

from dataclasses import dataclass

import numpy as np

from ._random import check_random_state
from ._validation import check_int
from .activations import ACTIVATIONS, derivative

__all__ = ["PlantedNetwork", "make_planted_network"]


@dataclass(frozen=True)
class PlantedNetwork:
    """f(x) = a2^T sigma(A1^T x + b1) + b2, with training and test samples.

    ``y`` and ``y_test`` carry the label noise; ``f_test`` is the noise-free
    test output, against which prediction error is judged.
    """

    A1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: float
    activation: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    f_test: np.ndarray

    def output(self, X):
        """The noise-free network output at the rows of X."""
        return derivative(self.activation, X @ self.A1 + self.b1) @ self.a2 + self.b2


def make_planted_network(n_samples, n_features, n_hidden, *, activation="sigmoid",
                         weight_norm=1.0, noise=0.0, n_test=10_000, random_state=None):
    """A random network with x ~ N(0, I), and samples of it.

    A1 has random directions scaled to column norm ``weight_norm``; b1 is
    uniform on [-1, 1]; a2 has random signs and magnitudes uniform on
    [0.5, 1.5]; b2 = 0. Labels are f(x) plus Gaussian noise of standard
    deviation ``noise``. One Generator (from ``random_state``) draws all of it.
    """
    n = check_int(n_samples, "n_samples", 1)
    d = check_int(n_features, "n_features", 1)
    k = check_int(n_hidden, "n_hidden", 1)
    n_test = check_int(n_test, "n_test", 1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not weight_norm > 0:
        raise ValueError(f"weight_norm: expected a positive number, got {weight_norm!r}")
    if not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    rng = check_random_state(random_state)
    A1 = rng.standard_normal((d, k))
    A1 *= weight_norm / np.linalg.norm(A1, axis=0)
    b1 = rng.uniform(-1.0, 1.0, k)
    a2 = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    partial = PlantedNetwork(A1, b1, a2, 0.0, activation, *(None,) * 5)
    X = rng.standard_normal((n, d))
    y = partial.output(X) + noise * rng.standard_normal(n)
    X_test = rng.standard_normal((n_test, d))
    f_test = partial.output(X_test)
    y_test = f_test + noise * rng.standard_normal(n_test)
    return PlantedNetwork(A1, b1, a2, 0.0, activation, X, y, X_test, y_test, f_test)
