"""NN-LIFT end to end: ``fit(X, y, n_hidden)`` returns a fitted two-layer network.

Pipeline (DESIGN section 4; the details and their measurements are in
docs/method.md, "Fitting a network"):

1. validate, and standardise x~ = Sigma^{-1/2} (x - mu) unless the caller
   says the inputs are standard already;
2. replace the labels by their residual r after least squares on [1, x~]
   (a control variate: the moments of order >= 2 keep their expectation,
   their variance falls by Var(r) / Var(y)); find the span of A1 from
   E[r S2] and E[r S3] combined (``fastten._subspace``) and decompose the
   implicit third cross-moment E[r S3(x~)] in it into k components
   (``fastten.decompose``; never formed as d^3). For m outputs the labels
   are first combined with random weights (y theta), which hides a unit
   only on a set of theta of measure zero;
3. start each hidden unit from a decomposed direction that the data support
   (its third moment stands out of the noise, it repeats no stronger one);
   the other units from significant directions of the second moment, then
   from random directions (``_select_directions``);
4. scales, signs and biases of the trusted units from the moments of
   orders 1-3 (``fastten._bias``), or the paper's Fourier estimator;
5. fit the output layer by ridge regression;
6. refine the whole network by Levenberg-Marquardt (``fastten._refine``),
   first in rounds on a random subsample of the rows (restarting after a
   stall, ``_restart``), then on all of them;
7. check the residual for structure its moments still see (a local
   optimum: ``LocalOptimumWarning``);
8. map back: A1 = Sigma^{-1/2} A1~, b1 = b1~ - A1^T mu.
"""

import contextlib
import logging
import time
import warnings

import numpy as np

from . import _bias, _refine
from ._random import check_random_state
from ._validation import check_int, check_samples, check_targets
from .activations import derivative, get_activation
from .decomposition import ConvergenceWarning, decompose
from .network import TwoLayerNet
from .operators import DataMoment
from ._subspace import linear_residual, signal_subspace

__all__ = ["fit", "IdentifiabilityWarning", "LocalOptimumWarning"]

logger = logging.getLogger("fastten")


class IdentifiabilityWarning(UserWarning):
    """The moments do not identify part of the network (a unit invisible to
    them, for instance)."""


class LocalOptimumWarning(ConvergenceWarning):
    """The refinement stopped where the residual still carries signal: the
    network is a local optimum, not the best fit to the data."""


INPUT_MODELS = ("gaussian", "standard")
INITS = ("tensor", "random")
TASKS = ("regression", "classification")
BIAS_METHODS = ("moments", "fourier", "zero")

DUPLICATE_COS = 0.95
# |z| of the third moment along a unit direction below which the moment
# does not see the unit: mean(y He3(u.x)) / its standard error.
VISIBLE_Z = 3.0
# Rows of the first refinement stage (and as many held out to compare its
# rounds): noise-free subsamples of this size reached the exact network on
# every d=20 and d=50 planted problem measured, after which the full data
# needs one pass (docs/method.md).
SUBSAMPLE_ROWS = 8192
SUBSAMPLE_PER_PARAMETER = 16
# A round on the subsample ends, as a failure, when its last 10 steps
# lowered the loss by less than 2% together: a plateau that a re-seeded
# round leaves sooner (the demo's first round crawled at 7e-4 of Var(y) for
# 34 of its 50 steps). The round on all rows has no such stop.
STALL = (10, 0.02)
# Training MSE / Var(y) below which a fit is exact and its residual is not
# examined for structure.
EXACT_FIT = 1e-10


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
    return mu, L, Xc @ L, float(vals[-1] / vals[0])


def _ridge_output(F, Y, ridge):
    """Least squares of Y (n, m) on [F, 1] with an L2 penalty ridge * n on the
    weights of F; returns (A2 (k, m), b2 (m,), condition number)."""
    n, k = F.shape
    A = np.hstack([F, np.ones((n, 1))])
    H = A.T @ A
    H[np.arange(k), np.arange(k)] += ridge * n
    coef = np.linalg.solve(H, A.T @ Y)
    return coef[:k], coef[k], float(np.linalg.cond(H))


def _plain(value):
    """The diagnostics as plain Python (JSON-ready) values."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _third_moment_z(Xs, y, U):
    """mean(y He3(u_j . x)) / its standard error, per column u_j of U."""
    Z = Xs @ U
    v = y[:, None] * (Z * Z * Z - 3.0 * Z)
    return v.mean(axis=0) / (v.std(axis=0) / np.sqrt(Xs.shape[0]) + np.finfo(float).tiny)


def _visible_z(d, k):
    """Threshold on |z| above which a decomposed direction is trusted.

    The directions come out of an optimisation over a (k + 10)-dimensional
    subspace, so even on pure noise their in-sample |z| is large: measured
    on y independent of x (n = 5e4, 4 seeds), the largest was 5.9 for d=20,
    k=5; 7.4 for d=50, k=10; 8.8 for d=100, k=20. 2 sqrt(k + 10) (7.7, 8.9,
    11) stays above these.
    """
    return 2.0 * np.sqrt(min(d, k + 10))


def _second_moment_directions(op, count, exclude, rng):
    """Up to ``count`` unit directions from E[y S2] = E[y (x x^T - I)] off the
    span of ``exclude`` (d, r): the eigenvectors of largest |eigenvalue| of
    the projected matrix, by a randomised range finder with
    ``count + 10`` columns (two passes), with their z-scores
    mean(y He2(u.x)) / standard error (one more pass).

    E[y S2] = sum_j a2_j E[sigma''] a_j a_j^T sees the units whose
    E[sigma''] does not vanish, in particular ReLU and softplus units of any
    bias, which the third moment misses near zero bias (DESIGN 3.2).
    """
    d = op.X.shape[1]
    Q0 = np.linalg.qr(exclude)[0] if exclude.shape[1] else np.zeros((d, 0))

    def off(V):
        return V - Q0 @ (Q0.T @ V)

    width = min(count + 10, d - Q0.shape[1])
    if width < 1:
        return np.zeros((d, 0)), np.zeros(0)
    Q = np.linalg.qr(off(op.second_moment_dot(off(rng.standard_normal((d, width))))))[0]
    Q = np.linalg.qr(off(Q))[0]  # again: the first projection is lost to rounding in the product
    vals, vecs = np.linalg.eigh(Q.T @ op.second_moment_dot(Q))
    U = Q @ vecs[:, np.argsort(-np.abs(vals))[:count]]
    Z = op.X @ U
    v = op.y[:, None] * (Z * Z - 1.0)
    return U, v.mean(axis=0) / (v.std(axis=0) / np.sqrt(Z.shape[0]) + np.finfo(float).tiny)


def _second_order_z(d):
    """Threshold on |z| for a direction from E[y S2]: measured on y
    independent of x (n = 5e4, 4 seeds), the largest |z| was 6.7 for d=20,
    8.5 for d=50, 12.2 for d=100, near sqrt(2 d) (the edge of the noise
    matrix's spectrum); 1.5 sqrt(2 d) stays above."""
    return 1.5 * np.sqrt(2.0 * d)


def _scales_and_biases(Xs, y, U, kept, activation, bias_method, rng):
    """Scales, signs and biases of the units in ``kept`` from the moments
    (``_bias.recover_units``), where it finds them identifiable; with
    ``bias_method="fourier"`` the biases then come from the paper's Fourier
    estimator. Activations it cannot invert (ReLU: positively homogeneous,
    only a2 s and b / s are identified) keep unit norm and zero bias.
    Returns (A1, b1, per-unit records)."""
    A1, b1 = U.copy(), np.zeros(U.shape[1])
    if activation.name == "relu":
        # Closed form in the unit-norm parametrisation (ReLU is positively
        # homogeneous): orientation from sign(c1 c2), bias -c3 / c2.
        c1, c2, c3 = _bias.moment_coefficients(Xs, y, U[:, list(kept)])
        orientation, bias, _ = _bias.relu_units_from_moments(c1, c2, c3)
        A1[:, list(kept)] *= orientation
        b1[list(kept)] = bias
        return A1, b1, [{"unit": j, "identifiable": True, "reason": "relu: orientation and b / |a| only",
                         "used": True} for j in kept]
    try:
        A1k, b1k, _, records = _bias.recover_units(Xs, y, U[:, list(kept)], activation)
    except ValueError as exc:
        return A1, b1, [{"unit": j, "identifiable": False, "reason": str(exc)} for j in kept]
    if bias_method == "fourier":
        b1k = _bias.fourier_biases(Xs, y, A1k, activation, random_state=rng).b1
    units = []
    for i, j in enumerate(kept):
        ok = records[i]["identifiable"] and np.isfinite(b1k[i]) and np.all(np.isfinite(A1k[:, i]))
        if ok:
            A1[:, j], b1[j] = A1k[:, i], b1k[i]
        units.append({"unit": j, "identifiable": bool(records[i]["identifiable"]), "reason": records[i]["reason"],
                      "used": bool(ok)})
    return A1, b1, units


def _select_directions(U, z, threshold, op, rng):
    """The starting directions of the hidden units.

    Keep the columns of U (from the third moment) with |z| >= threshold that
    do not repeat a kept one (|cos| > DUPLICATE_COS), strongest first; fill
    the other units with significant directions of the second moment off
    the kept ones (``_second_moment_directions``), then with random unit
    directions orthogonal to all of those. Returns the directions (the
    kept ones first), the kept columns' indices in U, and the number of
    second-order directions used.
    """
    d, k = U.shape
    kept = []
    for j in np.argsort(-np.abs(z)):
        if abs(z[j]) >= threshold and not (kept and np.abs(U[:, kept].T @ U[:, j]).max() > DUPLICATE_COS):
            kept.append(int(j))
    out = [U[:, j] for j in kept]
    second = []
    if len(out) < k:
        V, z2 = _second_moment_directions(op, k - len(out), np.column_stack(out) if out else np.zeros((d, 0)),
                                          rng)
        second = [j for j in range(V.shape[1]) if abs(z2[j]) >= _second_order_z(d)]
        out += [V[:, j] for j in second]
    while len(out) < k:
        g = rng.standard_normal(d)
        if len(out) < d:
            Q = np.linalg.qr(np.column_stack(out))[0] if out else np.zeros((d, 0))
            g -= Q @ (Q.T @ g)
        out.append(g / np.linalg.norm(g))
    return np.column_stack(out), kept, len(second)


def fit(X, y, n_hidden, *, activation="sigmoid", task="regression", input_model="gaussian", init="tensor",
        method="auto", bias_method="moments", refine=True, ridge=1e-8, max_iter=50, n_rounds=6, random_state=None,
        callback=None, blas_threads=1):
    """Fit f(x) = a2^T sigma(A1^T x + b1) + b2 to (X, y) by the method of moments.

    Parameters
    ----------
    X : array (n, d)
    y : array (n,), or (n, m) for m outputs (a2 is then k x m); for
        ``task="classification"``, n labels taking exactly two values
    n_hidden : int, 1 <= n_hidden <= d
    activation : "sigmoid", "tanh", "softplus", "relu", or a
        ``fastten.activations.Activation`` (a user activation given its
        derivatives)
    task : "regression" (least squares) or "classification" (binary labels;
        the network estimates P(y = classes[1] | x) = f(x), fitted by least
        squares on 0/1 labels; see ``TwoLayerNet.predict_proba``)
    input_model : "gaussian" (estimate mean and covariance and standardise)
        or "standard" (the inputs are N(0, I) already)
    init : "tensor" (the directions from the third moment: NN-LIFT) or
        "random" (random unit directions; the baseline that isolates what
        the tensor stage buys)
    method : decomposition engine, as in ``fastten.decompose``
    bias_method : how the units found by the third moment get their scales,
        signs and biases: "moments" (default: solve the first-, second- and
        third-order moments along each direction, ``fastten._bias``),
        "fourier" (the paper's Fourier estimator of b1, with the scales of
        "moments"; for Gaussian inputs its variance is infinite and it does
        not converge: measured in docs/method.md; an option for
        faithfulness, not for use) or "zero" (unit norm, zero bias). Units
        started from second-order or random directions get unit norm and
        zero bias in every case.
    refine : run the local refinement after the tensor stage
    ridge : L2 penalty (times n) on the output weights of the initial fit
    max_iter : Levenberg-Marquardt iterations per round and stage
    n_rounds : refinement rounds on the subsample; after a round that stalls
        above zero loss, units of the wrong sign are flipped or the least
        useful unit is re-seeded from the residual's third or second moment
        before the next (docs/method.md)
    random_state : None, int or numpy.random.Generator; drives every random
        choice (same seed, same network)
    callback : None, or ``callback(network, info)`` called with the network
        (a TwoLayerNet in the caller's coordinates) after the initial fit
        (``info["stage"] == "init"``) and after every accepted refinement
        step (``"refine"``); ``info`` also holds ``"iteration"`` and
        ``"training_mse"`` (on the rows of the current refinement stage, a
        subsample at first). Returning True stops the refinement.
    blas_threads : int or None. The fit runs thousands of small matrix
        products, which BLAS threads slow down: at d=50, k=10, n=1e5 the fit
        took 1.9 s with one OpenBLAS thread and 4.4 s with two on an idle
        2-core machine (d=100: 5.3 s and 6.1 s). With threadpoolctl
        installed (``pip install fastten[fast]``) the fit limits BLAS to
        this many threads while it runs, as scikit-learn does, and restores
        the setting after (the limit is process-wide meanwhile). None leaves
        BLAS alone.

    Returns
    -------
    TwoLayerNet, with a ``diagnostics`` record (see docs/api.md).
    """
    if blas_threads is not None:
        check_int(blas_threads, "blas_threads", 1)
    with _blas_limit(blas_threads):
        return _fit(X, y, n_hidden, activation, task, input_model, init, method, bias_method, refine, ridge,
                    max_iter, n_rounds, random_state, callback)


def _blas_limit(threads):
    """threadpoolctl's limit on BLAS threads, or nothing (None, or
    threadpoolctl not installed)."""
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            logger.info("fit: threadpoolctl is not installed; BLAS keeps its thread count")
        else:
            return threadpool_limits(limits=threads, user_api="blas")
    return contextlib.nullcontext()


def _fit(X, y, n_hidden, activation, task, input_model, init, method, bias_method, refine, ridge, max_iter,
         n_rounds, random_state, callback):
    start = time.perf_counter()
    X = check_samples(X).astype(np.float64, copy=False)
    n, d = X.shape
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    classes = None
    if task == "classification":
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(f"y: expected {n} labels (one per row of X) in a 1-D array for "
                             f"task='classification', got shape {labels.shape}")
        if labels.dtype.kind in "iufb":
            check_targets(labels.astype(np.float64), n)  # finiteness
        classes = np.unique(labels)
        if classes.size != 2:
            raise ValueError(f"y: expected 1-D labels taking exactly two values for task='classification', got "
                             f"shape {labels.shape} with {classes.size} distinct values")
        Y, single = (labels == classes[1]).astype(np.float64)[:, None], True
    else:
        Y, single = check_targets(y, n)
    m = Y.shape[1]
    k = check_int(n_hidden, "n_hidden", 1, d)
    activation_spec, activation = activation, get_activation(activation)
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    if bias_method not in BIAS_METHODS:
        raise ValueError(f"bias_method: expected one of {BIAS_METHODS}, got {bias_method!r}")
    if input_model not in INPUT_MODELS:
        raise ValueError(f"input_model: expected one of {INPUT_MODELS}, got {input_model!r}")
    n_params = d * k + k + k * m + m
    if n < n_params:
        raise ValueError(f"X: expected at least {n_params} samples (the number of parameters for d={d}, "
                         f"n_hidden={k}, {m} output{'s' * (m > 1)}), got {n}")
    constant = np.flatnonzero(np.ptp(Y, axis=0) == 0)
    if constant.size:
        raise ValueError(f"y: expected labels that vary, got the constant {float(Y[0, constant[0]])!r}"
                         + (f" in output column {constant[0]}" if m > 1 else ""))
    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
    max_iter = check_int(max_iter, "max_iter", 0)
    n_rounds = check_int(n_rounds, "n_rounds", 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected None or a callable, got {type(callback).__name__}")
    rng = check_random_state(random_state)
    times, notes, passes = {}, [], {}

    def lap(stage):
        times[stage] = time.perf_counter() - start - sum(times.values())

    def note(message, category=UserWarning):
        notes.append(message)
        warnings.warn(f"fit: {message}", category, stacklevel=4)  # note, _fit, fit, caller

    if input_model == "gaussian":
        mu, L, Xs, input_cond = _standardiser(X)
        passes["standardise"] = 3
    else:
        mu, L, Xs, input_cond = np.zeros(d), np.eye(d), X, None
        passes["standardise"] = 0
    lap("standardise")

    # Tensor stage: directions of the hidden units.
    theta = rng.standard_normal(m)
    y_t = Y @ (theta / np.linalg.norm(theta))
    y_t -= y_t.mean()
    r_t = linear_residual(Xs, y_t)
    dec, kept, z, n_second, sub = None, [], None, 0, None
    if init == "tensor":
        # Moments of order >= 2 from the control-variate residual r
        # (fastten._subspace): same expectation, variance / 30 here.
        op = DataMoment(Xs, r_t)
        subspace = None
        if method not in ("power", "sketch"):
            sub = signal_subspace(op, k, rng)
            subspace = sub.basis
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # tol: the stage only initialises; precision far below the
            # moment's sampling error is wasted. 1e-3 against 1e-6: 0.17-0.20 s
            # against 0.31-0.64 s at d=50, k=10, n=1e5 (seeds 1, 2), and the
            # same worst |cos| to three decimals with refine=False at d=20,
            # k=5, n=1e6 (8 seeds).
            dec = decompose(op, k, method=method, tol=1e-3, subspace=subspace, random_state=rng)
        # Recorded, not re-issued: the fit checks the directions itself (the
        # z test below) and warns about what it cannot recover.
        notes.extend(f"tensor stage: {w.message}" for w in caught)
        z = _third_moment_z(Xs, op.y, dec.factors)
        U, kept, n_second = _select_directions(dec.factors, z, _visible_z(d, k), op, rng)
        passes["tensor"] = op.passes + 2  # with the residual and the z-scores
    else:
        U = rng.standard_normal((d, k))
        U /= np.linalg.norm(U, axis=0)

    A1, b1, units = U, np.zeros(k), []
    if kept and bias_method != "zero":
        # The trusted directions are the first len(kept) columns of U.
        A1, b1, units = _scales_and_biases(Xs, y_t, U, range(len(kept)), activation, bias_method, rng)
        passes["tensor"] += 1 + (bias_method == "fourier")
    lap("tensor")

    A2, b2, output_cond = _ridge_output(derivative(activation, Xs @ A1 + b1, 0), Y, ridge)
    passes["output_layer"] = 1
    lap("output_layer")

    def network(A1, b1, A2, b2, diagnostics):
        A1_out = L @ A1
        a2, b2 = (A2[:, 0], float(b2[0])) if single else (A2.copy(), b2.copy())
        return TwoLayerNet(A1_out, b1 - A1_out.T @ mu, a2, b2, activation_spec, diagnostics, classes)

    stopped, steps = False, [0]

    def on_step(A1, b1, A2, b2, loss):
        nonlocal stopped
        steps[0] += 1
        stopped = bool(callback(network(A1, b1, A2, b2, {}), {"stage": "refine", "iteration": steps[0],
                                                              "training_mse": 2 * loss / m}))
        return stopped

    if callback is not None:
        mse0 = float(np.mean((derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2 - Y) ** 2))
        stopped = bool(callback(network(A1, b1, A2, b2, {}), {"stage": "init", "iteration": 0,
                                                              "training_mse": mse0}))

    rounds, stages = [], []
    if refine and max_iter and not stopped:
        A1, b1, A2, b2 = _refine_network(Xs, Y, A1, b1, A2, b2, activation, max_iter, n_rounds, ridge, rng,
                                         on_step if callback else None, lambda: stopped, rounds, stages)
        # In passes over all n rows: a pass over the subsample counts rows / n.
        passes["refine"] = round(sum(s["passes"] * s["rows"] / n + s["restart_passes"] for s in stages), 1)
        last = stages[-1]
        if not last["converged"] and not stopped:
            note(f"refinement did not reach the optimum within {len(rounds)} rounds of max_iter={max_iter} "
                 f"(training MSE / Var(y) = {last['mse'] / np.mean(np.var(Y, axis=0)):.2e})", ConvergenceWarning)
    lap("refine")

    F = derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2
    mse = float(np.mean((F - Y) ** 2))
    structure = None
    if refine and max_iter and not stopped and mse > EXACT_FIT * np.mean(np.var(Y, axis=0)):
        # No silent local optimum: a residual that still correlates with the
        # inputs' score functions means the network misses a unit.
        _, structure, used = _residual_direction(Xs, Y, A1, b1, A2, b2, activation, rng)
        passes["residual_check"] = used
        if structure >= 1:
            note(f"the residual still correlates with the inputs (its strongest moment direction stands "
                 f"{structure:.1f}x above the noise threshold; training MSE / Var(y) = "
                 f"{mse / np.mean(np.var(Y, axis=0)):.2e}): the refinement stopped at a local optimum, not the "
                 f"best network for these data; try another random_state, more n_rounds or max_iter",
                 LocalOptimumWarning)
    z_final = _third_moment_z(Xs, r_t, A1 / np.linalg.norm(A1, axis=0))
    unseen = np.flatnonzero(np.abs(z_final) < VISIBLE_Z).tolist()
    if unseen and not refine:
        note(f"units {unseen} have no detectable third moment (|z| < {VISIBLE_Z}): the tensor stage cannot "
             f"identify them from these {n} samples; use refine=True or more samples", IdentifiabilityWarning)
    times["total"] = time.perf_counter() - start
    diagnostics = {
        "init": init,
        "task": task,
        "engine": dec.method if dec else None,
        "moment_orders": ([3] + [2] * bool(n_second)) if dec else [],
        "component_weights": dec.weights.tolist() if dec else None,
        "component_weight_gaps": (dec.weights[:-1] / np.maximum(dec.weights[1:], 1e-300)).tolist() if dec else None,
        "decomposition_residual": dec.residual if dec else None,
        "component_z": None if z is None else np.abs(z).tolist(),
        "subspace": sub.to_dict() if sub else None,
        "trusted_components": kept,
        "second_order_directions": n_second,
        "bias_method": bias_method,
        "unit_recovery": units,
        "third_moment_z": np.abs(z_final).tolist(),
        "units_without_third_moment": unseen,
        "input_condition_number": input_cond,
        "output_layer_condition_number": output_cond,
        "refinement_stages": stages,
        "refinement_rounds": rounds,
        "refinement_iterations": sum(s["iterations"] for s in stages),
        "refinement_cg_iterations": sum(s["cg"] for s in stages),
        "training_mse": mse,
        "residual_structure": structure,
        "data_passes": passes,
        "times": times,
        "warnings": notes,
    }
    return network(A1, b1, A2, b2, _plain(diagnostics))


def _flip_signs(Xr, Yr, A1, b1, activation, ridge, mse):
    """Greedy sign flips (a_j, b_j) -> (-a_j, -b_j), each kept when the
    refitted output layer lowers the training MSE. Sigmoid and tanh absorb
    a flip into the output layer (sigma(-t) = 1 - sigma(t)); ReLU and
    softplus do not (relu(-t) = relu(t) - t), and a unit of the wrong sign
    is a local minimum of the refinement. Returns (A1, b1, flipped units)."""
    flipped = []
    Z = Xr @ A1 + b1
    for j in range(A1.shape[1]):
        Z[:, j] *= -1.0
        A2, b2, _ = _ridge_output(derivative(activation, Z, 0), Yr, ridge)
        trial = float(np.mean((derivative(activation, Z, 0) @ A2 + b2 - Yr) ** 2))
        if trial < mse * (1 - 1e-6):
            mse = trial
            flipped.append(j)
        else:
            Z[:, j] *= -1.0
    signs = np.ones(A1.shape[1])
    signs[flipped] = -1.0
    return A1 * signs, b1 * signs, flipped


def _residual_direction(X, Y, A1, b1, A2, b2, activation, rng):
    """The direction the network misses most clearly, from the moments of
    its residual (outputs combined with random weights, minus the linear
    control variate): the top component of the third moment or the top
    eigenvector of the second, whichever stands further out of the noise.

    Returns (direction, significance, passes): significance is that |z|
    over its noise threshold (``_visible_z``, ``_second_order_z``, both
    measured on labels independent of the inputs), so >= 1 says the
    residual still correlates with the score functions of the inputs: a
    unit is missing or misplaced, and the network is not the best one for
    these data."""
    d, k = A1.shape
    residual = (Y - derivative(activation, X @ A1 + b1, 0) @ A2 - b2) @ rng.standard_normal(Y.shape[1])
    op = DataMoment(X, linear_residual(X, residual))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u3 = decompose(op, 1, tol=1e-6, random_state=rng).factors
    z3 = abs(_third_moment_z(X, op.y, u3)[0]) / _visible_z(d, k)
    u2, z2 = _second_moment_directions(op, 1, np.zeros((d, 0)), rng)
    z2 = abs(z2[0]) / _second_order_z(d)
    passes = op.passes + 5  # the residual, its control variate, the decomposition, two z-scores
    return (u3[:, 0], z3, passes) if z3 >= z2 else (u2[:, 0], z2, passes)


def _restart(Xr, Yr, A1, b1, A2, b2, activation, ridge, skip, rng, full=None):
    """A new start after a round stalled above zero loss at (A1, b1, A2, b2),
    fitted on (Xr, Yr). The residual's moments come from ``full`` = (X, Y),
    all the rows, when given: a unit the network misses may stand out of the
    noise of n rows and not of a subsample's (on noisy labels, d=50, k=10,
    n=1e5, this rescued 5 of the 6 seeds in 20 that subsample moments lost).
    Returns the new network and the passes over all rows it took.

    First, units of the wrong sign (``_flip_signs``). Else the residual is
    itself a sum of units, and its moments point at a direction the network
    misses: the top component of its third moment or the top eigenvector of
    its second, whichever stands further out of the noise. It replaces the
    least useful unit (|a2_j| times the spread of its output) after skipping
    ``skip`` of them (a repeated stall tries another unit); for ReLU, a unit
    active on (almost) every sample or none goes first: it is affine or dead
    there (a ReLU drifts to a large norm and bias to make up for a unit of
    the wrong sign).
    """
    n, d = Xr.shape
    k, m = A2.shape
    mse = float(np.mean((derivative(activation, Xr @ A1 + b1, 0) @ A2 + b2 - Yr) ** 2))
    A1, b1, flipped = _flip_signs(Xr, Yr, A1, b1, activation, ridge, mse)
    passes = 0
    if flipped:
        logger.debug("fit: stalled at MSE %.3e; flipped units %s", mse, flipped)
    else:
        S = derivative(activation, Xr @ A1 + b1, 0)
        Xm, Ym = full if full is not None else (Xr, Yr)
        direction, _, passes = _residual_direction(Xm, Ym, A1, b1, A2, b2, activation, rng)
        order = list(np.argsort(np.linalg.norm(A2, axis=1) * S.std(axis=0)))
        if activation.name == "relu":
            active = np.mean(derivative(activation, Xr @ A1 + b1, 1) > 0, axis=0)
            degenerate = [j for j in order if not 0.01 <= active[j] <= 0.99]
            order = degenerate + [j for j in order if j not in degenerate]
        unit = int(order[skip % k])
        A1, b1 = A1.copy(), b1.copy()
        A1[:, unit], b1[unit] = direction, 0.0
        logger.debug("fit: stalled at MSE %.3e; re-seeded unit %d", mse, unit)
    A2, b2, _ = _ridge_output(derivative(activation, Xr @ A1 + b1, 0), Yr, ridge)
    return A1, b1, A2, b2, passes * (full is not None)


def _refine_network(Xs, Y, A1, b1, A2, b2, activation, max_iter, n_rounds, ridge, rng, on_step, stopped,
                    rounds, stages):
    """Levenberg-Marquardt rounds on a subsample of rows, then on all rows.

    Appends a record per round (first stage) and per stage to ``rounds`` and
    ``stages``; returns the best network found.
    """
    n, d = Xs.shape
    k, m = A2.shape
    p = d * k + k + k * m + m
    rows = max(SUBSAMPLE_ROWS, SUBSAMPLE_PER_PARAMETER * p)
    stage_data = [(Xs, Y)]
    validation = None
    if rows < n:
        order = rng.permutation(n)
        keep = np.sort(order[:rows])
        stage_data.insert(0, (Xs[keep], Y[keep]))
        # Rounds on the subsample are compared on rows outside it: with
        # noisy labels and few rows per parameter, the subsample has minima
        # that fit it better than the truth does and generalise worse.
        held = np.sort(order[rows: 2 * rows])
        validation = (Xs[held], Y[held])
    for index, (Xr, Yr) in enumerate(stage_data):
        last_stage = index == len(stage_data) - 1
        rows_r = Xr.shape[0]
        floor = 1e-12 * np.mean(np.var(Yr, axis=0))
        # Stop a round when a step gains less than 1e-3 of the statistical
        # excess error (about loss * p / rows for least squares): finer
        # optimisation cannot show in the fit (on noisy labels the steps
        # otherwise crawl along flat valleys for hundreds of iterations).
        # Zero-loss problems stop at the floor instead, reached by quadratic
        # convergence.
        tol = 1e-3 * p / rows_r
        best, record = None, {"rows": rows_r, "iterations": 0, "cg": 0, "passes": 0, "grams": 0,
                              "restart_passes": 0}
        failures = 0
        stage_rounds = 1 if last_stage and index > 0 else n_rounds
        for round_ in range(stage_rounds):
            res = _refine.refine(Xr, Yr, A1, b1, A2, b2, activation, max_iter=max_iter, tol=tol, rng=rng,
                                 stall=None if last_stage else STALL, callback=on_step)
            mse = 2 * res.losses[-1] / m
            score = mse
            if validation is not None and not last_stage:
                Xv, Yv = validation
                score = float(np.mean((derivative(activation, Xv @ res.A1 + res.b1, 0) @ res.A2 + res.b2 - Yv) ** 2))
            record["iterations"] += res.n_iter
            record["cg"] += res.n_cg
            record["passes"] += res.n_passes
            record["grams"] += res.n_gram
            rounds.append({"stage": index, "iterations": res.n_iter, "cg": res.n_cg, "mse": mse,
                           "validation_mse": score if score is not mse else None, "converged": res.converged})
            # Two rounds in a row that do not beat the best by 0.1% end the
            # rounds (on noisy labels the first round usually ends at the
            # optimum, and the next two confirm it); each failure re-seeds
            # the next least useful unit, from the best network.
            if best is None or score < best[0] * (1 - 1e-3):
                failures = 0
            else:
                failures += 1
            if best is None or score < best[0]:
                best = (score, res.A1, res.b1, res.A2, res.b2, res.converged)
            if stopped() or mse <= floor or failures == 2 or round_ == stage_rounds - 1:
                break
            _, A1, b1, A2, b2, _ = best
            A1, b1, A2, b2, used = _restart(Xr, Yr, A1, b1, A2, b2, activation, ridge, failures, rng, full=(Xs, Y))
            record["restart_passes"] += used
        score, A1, b1, A2, b2, converged = best
        record.update(mse=score, converged=converged)
        stages.append(record)
        if stopped():
            break
    return A1, b1, A2, b2
