"""The output layer of a classification network for fixed hidden activations.

``softmax_output`` fits (A2, b2) of the logits F A2 + b2 by penalised
multinomial logistic regression: the mean cross-entropy of their softmax
against the targets plus alpha / (2 n) |A2|^2 (scikit-learn's convention;
b2 is not penalised). The objective is convex; with alpha > 0 it is
strictly convex in A2 and, up to adding one constant to every output's
intercept (the logits' gauge, which changes no probability), in b2.

Used for the initial output layer of a classification fit and for the
refinement's variable projection (``fastten._refine``).
"""

import warnings

import numpy as np
import scipy.linalg

from .decomposition import ConvergenceWarning

__all__ = ["softmax_output", "softmax_loss"]


def softmax_loss(F, Y):
    """(mean cross-entropy -mean_i sum_c Y_ic log softmax(F_i)_c, the
    probabilities softmax(F) (n, m)) of logits F (n, m) against targets Y
    (n, m) whose rows sum to one, by log-sum-exp about each row's largest
    logit: finite for any finite logits (scipy's logsumexp took 3x as long
    at n = 5000, m = 3)."""
    shifted = F - F.max(axis=1, keepdims=True)
    E = np.exp(shifted)
    total = E.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(total)
    return -float(np.sum(Y * log_p)) / F.shape[0], E / total


def softmax_output(F, Y, alpha, rng=None, *, init=None, tol=1e-8, max_iter=100):
    """(A2 (k, m), b2 (m,)) minimising the mean cross-entropy of the logits
    F A2 + b2 against Y plus alpha / (2 n) |A2|^2, for hidden activations
    F (n, k) and targets Y (n, m), one-hot or soft (rows summing to one).

    Newton's method with a backtracking line search, from ``init`` =
    (A2, b2) or zero, until the largest entry of the objective's gradient
    is at most ``tol`` (absolute: the objective is a mean over rows, and
    its gradient's entries are means of F times probabilities). Each step
    costs O(n (k + 1)^2 m^2 / 2) for the Hessian; from zero it took 4-6
    steps, from a nearby layer 2-3 (n = 600 to 20000, k = 3 to 10, m = 2
    to 5). Warns ConvergenceWarning when ``max_iter`` steps do not get
    there. With alpha = 0 on separable classes the minimum is at infinity,
    where the gradient vanishes: the tolerance is then met far out, at
    large weights.

    The result is centred over the outputs (every row of A2 and b2 sums to
    zero): the logits' gauge, in which |A2| is smallest. ``rng`` is
    accepted for the calling convention of the output layers and not used:
    the problem is convex and the start fixed, so the result is
    deterministic.
    """
    n, k = F.shape
    m = Y.shape[1]
    F1 = np.empty((n, k + 1))
    F1[:, :k], F1[:, k] = F, 1.0
    ridge = np.zeros((k + 1, m))
    ridge[:k] = alpha / n
    W = np.zeros((k + 1, m)) if init is None else np.vstack([init[0], init[1][None, :]])
    W = W - W.mean(axis=1, keepdims=True)

    def objective(W):
        loss, P = softmax_loss(F1 @ W, Y)
        return loss + 0.5 * float(np.sum(ridge * W * W)), P

    value, P = objective(W)
    for step in range(max_iter + 1):
        gradient = F1.T @ (P - Y) / n + ridge * W
        if np.abs(gradient).max() <= tol or step == max_iter:
            break
        direction = -_solve(_hessian(F1, P, ridge), gradient.reshape(-1)).reshape(k + 1, m)
        slope = float(np.sum(gradient * direction))
        t = 1.0
        while t > 1e-10:  # Armijo backtracking
            trial, P_trial = objective(W + t * direction)
            if trial <= value + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break  # no decrease left within rounding
        W, value, P = W + t * direction, trial, P_trial
    largest = np.abs(gradient).max()
    if not largest <= tol:
        warnings.warn(f"softmax_output: the gradient's largest entry is {largest:.2e} after {step} Newton steps "
                      f"(max_iter={max_iter}), above tol={tol:g}: raise max_iter, or alpha (now {alpha:g}) if "
                      f"the classes are (nearly) separable", ConvergenceWarning, stacklevel=2)
    return W[:k].copy(), W[k].copy()


def _hessian(F1, P, ridge):
    """The objective's Hessian in W ((k + 1) m square, W's row-major
    order): sum_i (diag(p_i) - p_i p_i^T) (x) f_i f_i^T / n plus the ridge,
    plus the gauge term g (I (x) 1 1^T), which is zero on the centred
    layers the iterates stay in and makes the matrix regular along the
    directions W + u 1^T that change no probability."""
    n, q = F1.shape
    m = P.shape[1]
    H = np.empty((q, m, q, m))
    for c in range(m):
        for e in range(c, m):
            w = (c == e) * P[:, c] - P[:, c] * P[:, e]
            H[:, c, :, e] = H[:, e, :, c] = (F1 * w[:, None]).T @ F1 / n
    H = H.reshape(q * m, q * m)
    H[np.diag_indices_from(H)] += ridge.reshape(-1)
    gauge = max(np.trace(H) / (q * m), np.finfo(float).tiny)
    return H + gauge * np.kron(np.eye(q), np.ones((m, m)))


def _solve(H, g):
    """H^{-1} g for the symmetric positive definite H, or its least-squares
    solution where rounding makes it (nearly) singular."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), g)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, g, rcond=None)[0]
