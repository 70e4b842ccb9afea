"""The output layer of a classification network (issue #12):
``softmax_output`` against a direct scipy minimisation of the same
penalised cross-entropy, its binary special case, its gauge and its
warnings, and the stable cross-entropy ``softmax_loss``."""

import warnings

import numpy as np
import pytest
import scipy.optimize
from scipy.special import expit, logsumexp, softmax

from fastten import ConvergenceWarning
from fastten._output import softmax_loss, softmax_output


def _classes(n, k, m, seed, soft=False):
    """Hidden activations in (0, 1) and labels drawn from a softmax of them
    (or those probabilities themselves: soft targets); every class holds
    at least 5% of the rows, so that the minimum is finite."""
    rng = np.random.default_rng(seed)
    F = expit(rng.standard_normal((n, k)) * 2)
    P = softmax((F - 0.5) @ (3 * rng.standard_normal((k, m))) + 0.3 * rng.standard_normal(m), axis=1)
    Y = P if soft else np.eye(m)[[rng.choice(m, p=p) for p in P]]
    assert Y.mean(axis=0).min() >= 0.05
    return F, Y


def _direct(F, Y, alpha):
    """The same objective minimised by scipy's L-BFGS-B, written with
    scipy's logsumexp, to a gradient of 1e-12."""
    n, k = F.shape
    m = Y.shape[1]

    def objective(w):
        A2, b2 = w[: k * m].reshape(k, m), w[k * m:]
        Z = F @ A2 + b2
        lse = logsumexp(Z, axis=1, keepdims=True)
        R = (np.exp(Z - lse) - Y) / n
        value = -np.sum(Y * (Z - lse)) / n + 0.5 * alpha / n * np.sum(A2 ** 2)
        return value, np.concatenate([(F.T @ R + alpha / n * A2).ravel(), R.sum(axis=0)])

    res = scipy.optimize.minimize(objective, np.zeros((k + 1) * m), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000})
    A2, b2 = res.x[: k * m].reshape(k, m), res.x[k * m:]
    return A2 - A2.mean(axis=1, keepdims=True), b2 - b2.mean(), objective


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("alpha", [0.5, 20.0])
@pytest.mark.parametrize("soft", [False, True])
def test_matches_a_direct_minimisation(m, alpha, soft):
    n, k = 600, 3
    F, Y = _classes(n, k, m, seed=m, soft=soft)
    A2, b2 = softmax_output(F, Y, alpha)
    A2_ref, b2_ref, objective = _direct(F, Y, alpha)
    # The stated tolerance: the gradient's largest entry at most tol = 1e-8.
    assert np.abs(objective(np.concatenate([A2.ravel(), b2]))[1]).max() <= 1e-8
    # Strictly convex off the gauge (smallest Hessian eigenvalue there
    # >= alpha / n = 8e-4 on A2, and the data's curvature on b2), so a
    # gradient of 1e-8 puts both within about 1e-5 of the minimum.
    np.testing.assert_allclose(A2, A2_ref, atol=1e-5)
    np.testing.assert_allclose(b2, b2_ref, atol=1e-5)


def test_two_classes_are_penalised_binary_logistic_regression():
    # With m = 2 the centred layer is (-w/2, w/2), |A2|^2 = |w|^2 / 2: the
    # penalised cross-entropy is binary logistic regression on the
    # difference w with penalty (alpha / 2) / (2 n) |w|^2.
    n, k, alpha = 500, 3, 6.0
    F, Y = _classes(n, k, 2, seed=11)
    A2, b2 = softmax_output(F, Y, alpha)
    y = Y[:, 1]

    def binary(v):
        z = F @ v[:k] + v[k]
        p = expit(z)
        value = np.mean(np.logaddexp(0, z) - y * z) + 0.25 * alpha / n * np.sum(v[:k] ** 2)
        return value, np.append(F.T @ (p - y) / n + 0.5 * alpha / n * v[:k], np.mean(p - y))

    res = scipy.optimize.minimize(binary, np.zeros(k + 1), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 0.0})
    np.testing.assert_allclose(A2[:, 1] - A2[:, 0], res.x[:k], atol=1e-5)
    assert b2[1] - b2[0] == pytest.approx(res.x[k], abs=1e-5)


def test_centred_deterministic_and_warm_started():
    F, Y = _classes(400, 4, 3, seed=5)
    A2, b2 = softmax_output(F, Y, 1.0, rng=np.random.default_rng(0))
    again = softmax_output(F, Y, 1.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(A2, again[0])
    np.testing.assert_array_equal(b2, again[1])
    np.testing.assert_allclose(A2.sum(axis=1), 0, atol=1e-12 * np.abs(A2).max())
    assert abs(b2.sum()) <= 1e-12 * np.abs(b2).max()
    # From a nearby layer (shifted by the gauge as well) the same minimum.
    warm = softmax_output(F, Y, 1.0, init=(A2 + 0.1 + 0.05 * np.arange(3), b2 - 0.2))
    np.testing.assert_allclose(warm[0], A2, atol=1e-6)
    np.testing.assert_allclose(warm[1], b2, atol=1e-6)


def test_separable_classes_without_penalty_run_off_and_max_iter_warns():
    # Two classes split by the sign of the first feature: with alpha = 0
    # the cross-entropy has no minimum; its gradient vanishes at infinity,
    # so the stated tolerance is met far out, at a tiny loss. A penalty
    # keeps the layer finite and small.
    rng = np.random.default_rng(3)
    F = rng.standard_normal((200, 2))
    Y = np.eye(2)[(F[:, 0] > 0).astype(int)]
    A2_free, b2_free = softmax_output(F, Y, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A2, b2 = softmax_output(F, Y, 1.0)
    assert softmax_loss(F @ A2_free + b2_free, Y)[0] < 1e-6
    assert np.linalg.norm(A2_free) > 10 * np.linalg.norm(A2)
    # Not converged within max_iter: a ConvergenceWarning naming it.
    F, Y = _classes(300, 3, 3, seed=1)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        softmax_output(F, Y, 1.0, max_iter=1)
