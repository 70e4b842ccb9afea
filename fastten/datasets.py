"""Planted two-layer networks: problems with a known answer."""

from dataclasses import dataclass

import numpy as np

from ._random import check_random_state
from ._validation import check_int
from .activations import derivative, get_activation
from .scores import Density

__all__ = ["PlantedNetwork", "make_planted_network"]

# The spawn key of the planted networks' stream for an int seed.
DATA_STREAM = 1


@dataclass(frozen=True)
class PlantedNetwork:
    """f(x) = a2^T sigma(A1^T x + b1) + b2, with training and test samples.

    Made by :func:`make_planted_network`.

    Parameters
    ----------
    A1 : numpy.ndarray, shape (d, k)
        Planted first-layer weights, one unit per column.
    b1 : numpy.ndarray, shape (k,)
        Planted first-layer biases.
    a2 : numpy.ndarray, shape (k,)
        Planted output weights.
    b2 : float
        Planted output bias.
    activation : str or fastten.activations.Activation
        The activation, as given to :func:`make_planted_network`.
    X : numpy.ndarray, shape (n, d)
        Training inputs.
    y : numpy.ndarray, shape (n,)
        Training labels, with the label noise (for classification: 0/1
        labels drawn with probability f(x)).
    X_test : numpy.ndarray, shape (n_test, d)
        Test inputs.
    y_test : numpy.ndarray, shape (n_test,)
        Test labels, with the label noise.
    f_test : numpy.ndarray, shape (n_test,)
        The noise-free test outputs, against which prediction error is
        judged.
    """

    A1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: float
    activation: object
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    f_test: np.ndarray

    def output(self, X):
        """The noise-free network output at the rows of X.

        Parameters
        ----------
        X : numpy.ndarray, shape (m, d)
            Inputs, one per row (not checked).

        Returns
        -------
        numpy.ndarray, shape (m,)
            f(x) per row.
        """
        return derivative(self.activation, X @ self.A1 + self.b1) @ self.a2 + self.b2


def make_planted_network(n_samples, n_features, n_hidden, *, activation="sigmoid", weight_norm=1.0,
                         bias_range=(0.0, 1.0), noise=0.0, mean=None, cov=None, task="regression",
                         input_density=None, n_test=10_000, random_state=None):
    """A random network and samples of it.

    Inputs x ~ N(mean, cov) (default N(0, I)); with ``input_density`` (a
    ``fastten.scores.Density``, or a list of d of them) the standardised
    coordinates are drawn independently from it instead of N(0, 1), then
    mapped by mean and cov as before. A1 has random directions
    scaled to column norm ``weight_norm``; b1 has random signs and
    magnitudes uniform on ``bias_range`` (default: b1 uniform on [-1, 1];
    (0.3, 1) keeps ReLU units away from zero bias, where their third moment
    vanishes); a2 has random signs and magnitudes uniform on [0.5, 1.5];
    b2 = 0. The weights act on x itself: f(x) = a2^T sigma(A1^T x + b1) + b2.

    ``task="regression"``: labels f(x) plus Gaussian noise of standard
    deviation ``noise``. ``task="classification"``: the network is squashed
    affinely into [0, 1] (a2 and b2 rescaled, so it is still a planted
    network, of a bounded activation) and labels are 0/1 draws with
    P(y = 1 | x) = f(x); ``noise`` must be 0. One Generator (from
    ``random_state``) draws all of it; an int seed gives a stream of its own,
    independent of the one ``fit(random_state=seed)`` draws from.

    Parameters
    ----------
    n_samples : int
        Training rows n, >= 1.
    n_features : int
        Input dimension d, >= 1.
    n_hidden : int
        Hidden units k, >= 1.
    activation : str or fastten.activations.Activation, default "sigmoid"
        The activation of the hidden units.
    weight_norm : float, default 1.0
        The norm of every column of A1, > 0.
    bias_range : tuple of float, default (0.0, 1.0)
        (low, high), 0 <= low <= high: the range of the biases' magnitudes.
    noise : float, default 0.0
        Standard deviation of the Gaussian label noise (regression only).
    mean : array_like, shape (d,), optional
        Mean of the inputs; zero by default.
    cov : array_like, shape (d, d), optional
        Covariance of the inputs, symmetric positive definite; the identity
        by default.
    task : {"regression", "classification"}
        What the labels are.
    input_density : fastten.scores.Density or list of them, optional
        The density of every standardised coordinate, or one per
        coordinate; standard normal by default.
    n_test : int, default 10000
        Test rows, >= 1.
    random_state : None, int or numpy.random.Generator
        Drives every random draw.

    Returns
    -------
    PlantedNetwork
        The weights, the training data and the test data.

    Raises
    ------
    ValueError
        When an argument is out of its range or of the wrong shape (naming
        it), ``cov`` is not positive definite, ``noise`` is not 0 for
        classification, or classification is asked of an unbounded
        activation.
    TypeError
        When a count is not an integer or ``activation`` is neither a name
        nor an Activation.
    """
    n = check_int(n_samples, "n_samples", 1)
    d = check_int(n_features, "n_features", 1)
    k = check_int(n_hidden, "n_hidden", 1)
    n_test = check_int(n_test, "n_test", 1)
    act = get_activation(activation)
    if not weight_norm > 0:
        raise ValueError(f"weight_norm: expected a positive number, got {weight_norm!r}")
    if not (len(bias_range) == 2 and 0 <= bias_range[0] <= bias_range[1]):
        raise ValueError(f"bias_range: expected (low, high) with 0 <= low <= high, got {bias_range!r}")
    if not noise >= 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    if task not in ("regression", "classification"):
        raise ValueError(f"task: expected 'regression' or 'classification', got {task!r}")
    mean = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64)
    if mean.shape != (d,):
        raise ValueError(f"mean: expected shape ({d},), got {mean.shape}")
    if cov is None:
        root = np.eye(d)
    else:
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (d, d) or not np.allclose(cov, cov.T):
            raise ValueError(f"cov: expected a symmetric ({d}, {d}) matrix, got shape {cov.shape}")
        try:
            root = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError("cov: expected a positive definite matrix") from None
    if input_density is not None:
        densities = list(input_density) if isinstance(input_density, (list, tuple)) else [input_density] * d
        if len(densities) != d or not all(isinstance(p, Density) for p in densities):
            raise ValueError(f"input_density: expected a fastten.scores.Density or a list of {d} of them, "
                             f"got {input_density!r}")
    # With default_rng(seed) here, the planted A1 would be the first draws
    # of the stream fit(random_state=seed) uses too, and init="random" would
    # start next to the planted directions (it did, in every benchmark with
    # equal seeds, until this stream was separated).
    rng = check_random_state(random_state, stream=DATA_STREAM)
    A1 = rng.standard_normal((d, k))
    A1 *= weight_norm / np.linalg.norm(A1, axis=0)
    b1 = rng.choice([-1.0, 1.0], k) * rng.uniform(bias_range[0], bias_range[1], k)
    a2 = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    b2 = 0.0
    if task == "classification":
        if noise:
            raise ValueError(f"noise: expected 0 for task='classification' (the labels are Bernoulli draws), "
                             f"got {noise!r}")
        low, high = (derivative(act, np.array([-60.0, 60.0]), 0))
        if not (np.isfinite(low) and np.isfinite(high) and high - low < 10):
            raise ValueError(f"task: classification needs a bounded activation, got {act.name!r}")
        # f ranges within b2 + sum_j a2_j (mid +- half) with mid, half the
        # activation's centre and half-range: map that interval onto [0, 1].
        mid, half = (high + low) / 2, (high - low) / 2
        span = 2 * half * np.abs(a2).sum()
        b2 = 0.5 - mid * a2.sum() / span
        a2 = a2 / span
    partial = PlantedNetwork(A1, b1, a2, b2, activation, *(None,) * 5)

    def draw(count):
        if input_density is None:
            G = rng.standard_normal((count, d))
        else:
            G = np.column_stack([p.sample(rng, count) for p in densities])
        X = mean + G @ root.T
        f = partial.output(X)
        if task == "classification":
            return X, f, (rng.random(count) < f).astype(np.float64)
        return X, f, f + noise * rng.standard_normal(count)

    X, _, y = draw(n)
    X_test, f_test, y_test = draw(n_test)
    return PlantedNetwork(A1, b1, a2, b2, activation, X, y, X_test, y_test, f_test)
