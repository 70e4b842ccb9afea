"""NN-LIFT end to end: ``fit(X, y, n_hidden)`` returns a fitted two-layer network.

Pipeline (DESIGN section 4):

1. validate, and standardise x~ = Sigma^{-1/2} (x - mu) unless the caller
   says the inputs are standard already;
2. decompose the implicit third cross-moment E[(y - mean y) S3(x~)] into
   k components (``fastten.decompose``; never formed as d^3);
3. start the network from the recovered directions (unit norm, zero biases)
   with the output layer fitted by ridge regression;
4. refine the whole network by Levenberg-Marquardt (``fastten._refine``);
   when a round stops above zero loss, re-seed the least useful unit from
   the third moment of the residual and refine again (a few rounds);
5. map back: A1 = Sigma^{-1/2} A1~, b1 = b1~ - A1^T mu.

Signs and scales, which the third moment does not identify (DESIGN 3.5),
are left to the refinement in this version.
"""

import time
import warnings

import numpy as np

from . import _refine
from ._random import check_random_state
from ._validation import check_int, check_labels, check_samples
from .activations import ACTIVATIONS, derivative
from .decomposition import ConvergenceWarning, decompose
from .network import TwoLayerNet
from .operators import DataMoment

__all__ = ["fit"]

INPUT_MODELS = ("gaussian", "standard")
INITS = ("tensor", "random")


def _standardiser(X):
    mu = X.mean(axis=0)
    Xc = X - mu
    cov = Xc.T @ Xc / X.shape[0]
    vals, vecs = np.linalg.eigh(cov)
    if vals[0] <= 1e-10 * vals[-1]:
        raise ValueError(
            f"X: expected a non-singular sample covariance, got eigenvalues down to {vals[0]:.3g} "
            f"(largest {vals[-1]:.3g}): some features are (nearly) linear combinations of others"
        )
    L = (vecs / np.sqrt(vals)) @ vecs.T  # Sigma^{-1/2}, symmetric
    return mu, L, Xc @ L


def _ridge_output(F, y, ridge):
    """Least squares of y on [F, 1] with an L2 penalty ridge * n on the weights of F."""
    n, k = F.shape
    A = np.hstack([F, np.ones((n, 1))])
    H = A.T @ A
    H[np.arange(k), np.arange(k)] += ridge * n
    coef = np.linalg.solve(H, A.T @ y)
    return coef[:k], float(coef[k])


def fit(X, y, n_hidden, *, activation="sigmoid", input_model="gaussian", init="tensor", method="auto",
        refine=True, ridge=1e-8, max_iter=25, n_rounds=6, random_state=None, callback=None):
    """Fit f(x) = a2^T sigma(A1^T x + b1) + b2 to (X, y) by the method of moments.

    Parameters
    ----------
    X : array (n, d); y : array (n,)
    n_hidden : int, 1 <= n_hidden <= d
    activation : "sigmoid", "tanh" or "softplus"
    input_model : "gaussian" (estimate mean and covariance and standardise)
        or "standard" (the inputs are N(0, I) already)
    init : "tensor" (the directions from the third moment: NN-LIFT) or
        "random" (random unit directions; the baseline that isolates what
        the tensor stage buys)
    method : decomposition engine, as in ``fastten.decompose``
    refine : run the local refinement after the tensor stage
    ridge : L2 penalty (times n) on the output weights of the initial fit
    max_iter : refinement iterations per round
    n_rounds : refinement rounds; after a round that stops above zero loss,
        the least useful unit is re-seeded from the third moment of the
        residual before the next
    random_state : None, int or numpy.random.Generator
    callback : None, or ``callback(network, info)`` called with the network
        (a TwoLayerNet in the caller's coordinates) after the initial fit
        (``info["stage"] == "init"``) and after every accepted refinement
        step (``"refine"``); ``info`` also holds ``"iteration"`` and
        ``"training_mse"``. Returning True stops the refinement.
    """
    start = time.perf_counter()
    X = check_samples(X).astype(np.float64, copy=False)
    n, d = X.shape
    y = check_labels(y, n, np.float64)
    k = check_int(n_hidden, "n_hidden", 1, d)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    if input_model not in INPUT_MODELS:
        raise ValueError(f"input_model: expected one of {INPUT_MODELS}, got {input_model!r}")
    n_params = d * k + 2 * k + 1
    if n < n_params:
        raise ValueError(f"X: expected at least {n_params} samples (the number of parameters for d={d}, "
                         f"n_hidden={k}), got {n}")
    if not np.ptp(y) > 0:
        raise ValueError(f"y: expected labels that vary, got the constant {float(y[0])!r}")
    max_iter = check_int(max_iter, "max_iter", 0)
    n_rounds = check_int(n_rounds, "n_rounds", 1)
    rng = check_random_state(random_state)
    times, notes = {}, []

    if input_model == "gaussian":
        mu, L, Xs = _standardiser(X)
    else:
        mu, L, Xs = np.zeros(d), np.eye(d), X
    times["standardise"] = time.perf_counter() - start

    op = DataMoment(Xs, y - y.mean())
    dec = None
    if init == "tensor":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dec = decompose(op, k, method=method, random_state=rng)
        for w in caught:
            notes.append(f"tensor stage: {w.message}")
            warnings.warn(f"fit: tensor stage: {w.message}", w.category, stacklevel=2)
        directions = dec.factors.copy()
    else:
        directions = rng.standard_normal((d, k))
        directions /= np.linalg.norm(directions, axis=0)
    times["decompose"] = time.perf_counter() - start - sum(times.values())

    A1, b1 = directions, np.zeros(k)
    a2, b2 = _ridge_output(derivative(activation, Xs @ A1 + b1, 0), y, ridge)

    def mapped(A1, b1, a2, b2, diagnostics):
        A1_out = L @ A1
        return TwoLayerNet(A1_out, b1 - A1_out.T @ mu, np.array(a2, dtype=np.float64), float(b2), activation,
                           diagnostics)

    stopped = False
    if callback is not None:
        mse0 = float(np.mean((derivative(activation, Xs @ A1 + b1, 0) @ a2 + b2 - y) ** 2))
        stopped = bool(callback(mapped(A1, b1, a2, b2, {}), {"stage": "init", "iteration": 0,
                                                             "training_mse": mse0}))
    steps = [0]

    def on_step(A1, b1, a2, b2, mse):
        nonlocal stopped
        steps[0] += 1
        stopped = bool(callback(mapped(A1, b1, a2, b2, {}), {"stage": "refine", "iteration": steps[0],
                                                            "training_mse": float(mse)}))
        return stopped
    times["output_layer"] = time.perf_counter() - start - sum(times.values())

    refinement, rounds = None, []
    if refine and max_iter and not stopped:
        best = None
        for round_ in range(n_rounds):
            refinement = _refine.refine(Xs, y, A1, b1, a2, b2, activation, max_iter=max_iter, rng=rng,
                                        callback=on_step if callback else None)
            A1, b1, a2, b2 = refinement.A1, refinement.b1, refinement.a2, refinement.b2
            mse = 2 * refinement.losses[-1]
            rounds.append({"iterations": refinement.n_iter, "cg": refinement.n_cg, "mse": mse,
                           "converged": refinement.converged})
            if best is None or mse < best[0]:
                best = (mse, A1.copy(), b1.copy(), a2.copy(), b2, refinement.converged)
            if stopped or mse <= 1e-12 * np.var(y) or round_ == n_rounds - 1:
                break
            # Stuck above zero loss: the residual is itself a sum of (signed)
            # units, and its third moment points at a direction the network
            # misses. It replaces the unit that contributes least.
            S = derivative(activation, Xs @ A1 + b1, 0)
            residual = y - S @ a2 - b2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = decompose(DataMoment(Xs, residual - residual.mean()), 1, random_state=rng)
            weakest = int(np.argmin(np.abs(a2) * S.std(axis=0)))
            A1[:, weakest], b1[weakest] = found.factors[:, 0], 0.0
            a2, b2 = _ridge_output(derivative(activation, Xs @ A1 + b1, 0), y, ridge)
        mse, A1, b1, a2, b2, converged = best
        if not converged and mse > 1e-12 * np.var(y):
            message = (f"fit: refinement did not reach the optimum within {len(rounds)} rounds of "
                       f"max_iter={max_iter} (training MSE / Var(y) = {mse / np.var(y):.2e})")
            notes.append(message)
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
    times["refine"] = time.perf_counter() - start - sum(times.values())

    A1_out = L @ A1
    b1_out = b1 - A1_out.T @ mu
    times["total"] = time.perf_counter() - start
    diagnostics = {
        "init": init,
        "engine": dec.method if dec else None,
        "moment_orders": [3] if dec else [],
        "component_weights": dec.weights.tolist() if dec else None,
        "decomposition_residual": dec.residual if dec else None,
        "data_passes_tensor_stage": op.passes,
        "refinement_rounds": rounds,
        "refinement_iterations": sum(r["iterations"] for r in rounds),
        "refinement_cg_iterations": sum(r["cg"] for r in rounds),
        "training_mse": float(mse) if rounds else None,
        "times": times,
        "warnings": notes,
    }
    return TwoLayerNet(A1_out, b1_out, np.asarray(a2, dtype=np.float64), float(b2), activation, diagnostics)
