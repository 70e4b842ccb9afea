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
   from random directions (steps 2-4: ``fastten._directions``);
4. scales, signs and biases of the trusted units from the moments of
   orders 1-3 (``fastten._bias``), or the paper's Fourier estimator;
5. fit the output layer by ridge regression;
6. refine the whole network by Levenberg-Marquardt (``fastten._refine``),
   first in rounds on a random subsample of the rows (restarting after a
   stall), then on all of them (``fastten._rounds``);
7. check the residual for structure its moments still see (a local
   optimum: ``LocalOptimumWarning``);
8. map back: A1 = Sigma^{-1/2} A1~, b1 = b1~ - A1^T mu.
"""

import contextlib
import logging
import numbers
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ._directions import VISIBLE_Z, initial_units, random_directions, tensor_directions, third_moment_z
from ._random import check_random_state
from ._rounds import refine_network, residual_direction, ridge_output
from ._subspace import linear_residual
from ._validation import check_int, check_samples, check_targets
from .activations import derivative, get_activation
from .decomposition import METHODS, ConvergenceWarning
from .network import TwoLayerNet

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
    options = _check_options(activation, task, input_model, init, method, bias_method, refine, ridge, max_iter,
                             n_rounds, callback, blas_threads)
    with _blas_limit(blas_threads):
        return _fit(X, y, n_hidden, options, random_state)


@dataclass(frozen=True)
class _Options:
    """fit's options, checked (``_check_options``)."""

    activation_spec: object  # as given: the fitted network keeps it
    activation: object
    task: str
    input_model: str
    init: str
    method: str
    bias_method: str
    refine: bool
    ridge: float
    max_iter: int
    n_rounds: int
    callback: object


def _one_of(value, name, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def _check_options(activation, task, input_model, init, method, bias_method, refine, ridge, max_iter, n_rounds,
                   callback, blas_threads):
    """Every option of fit, checked before any data work."""
    if blas_threads is not None:
        check_int(blas_threads, "blas_threads", 1)
    if not isinstance(refine, (bool, np.bool_)):
        raise TypeError(f"refine: expected True or False, got {refine!r}")
    if isinstance(ridge, (bool, np.bool_)) or not isinstance(ridge, numbers.Real) or not ridge >= 0:
        raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected None or a callable, got {type(callback).__name__}")
    return _Options(activation, get_activation(activation), _one_of(task, "task", TASKS),
                    _one_of(input_model, "input_model", INPUT_MODELS), _one_of(init, "init", INITS),
                    _one_of(method, "method", METHODS), _one_of(bias_method, "bias_method", BIAS_METHODS),
                    bool(refine), float(ridge), check_int(max_iter, "max_iter", 0),
                    check_int(n_rounds, "n_rounds", 1), callback)


def _targets(X, y, task):
    """(X as float64, Y (n, m), single output?, classes or None), checked."""
    X = check_samples(X).astype(np.float64, copy=False)
    n = X.shape[0]
    if task == "regression":
        return (X, *check_targets(y, n), None)
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
    return X, (labels == classes[1]).astype(np.float64)[:, None], True, classes


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


def _fit(X, y, n_hidden, opts, random_state):
    start = time.perf_counter()
    X, Y, single, classes = _targets(X, y, opts.task)
    (n, d), m = X.shape, Y.shape[1]
    k = check_int(n_hidden, "n_hidden", 1, d)
    n_params = d * k + k + k * m + m
    if n < n_params:
        raise ValueError(f"X: expected at least {n_params} samples (the number of parameters for d={d}, "
                         f"n_hidden={k}, {m} output{'s' * (m > 1)}), got {n}")
    constant = np.flatnonzero(np.ptp(Y, axis=0) == 0)
    if constant.size:
        raise ValueError(f"y: expected labels that vary, got the constant {float(Y[0, constant[0]])!r}"
                         + (f" in output column {constant[0]}" if m > 1 else ""))
    rng = check_random_state(random_state)
    activation = opts.activation
    times, notes, passes = {}, [], {}

    def lap(stage):
        times[stage] = time.perf_counter() - start - sum(times.values())

    def note(message, category=UserWarning):
        notes.append(message)
        warnings.warn(f"fit: {message}", category, stacklevel=4)  # note, _fit, fit, caller

    # 1. Standardise.
    if opts.input_model == "gaussian":
        mu, L, Xs, input_cond = _standardiser(X)
        passes["standardise"] = 3
    else:
        mu, L, Xs, input_cond = np.zeros(d), np.eye(d), X, None
        passes["standardise"] = 0
    lap("standardise")

    # 2-3. Directions, then scales, signs and biases (fastten._directions),
    # from the labels combined with random weights over the outputs.
    theta = rng.standard_normal(m)
    y_t = Y @ (theta / np.linalg.norm(theta))
    y_t -= y_t.mean()
    r_t = linear_residual(Xs, y_t)
    if opts.init == "tensor":
        directions = tensor_directions(Xs, r_t, k, opts.method, rng)
    else:
        directions = random_directions(d, k, rng)
    notes += directions.notes
    A1, b1, units, used = initial_units(Xs, y_t, directions, activation, opts.bias_method, rng)
    passes["tensor"] = directions.passes + used
    lap("tensor")

    # 4. Output layer.
    A2, b2, output_cond = ridge_output(derivative(activation, Xs @ A1 + b1, 0), Y, opts.ridge)
    passes["output_layer"] = 1
    lap("output_layer")

    def network(A1, b1, A2, b2, diagnostics):
        A1_out = L @ A1
        a2, b2 = (A2[:, 0], float(b2[0])) if single else (A2.copy(), b2.copy())
        return TwoLayerNet(A1_out, b1 - A1_out.T @ mu, a2, b2, opts.activation_spec, diagnostics, classes)

    stopped, steps = False, [0]

    def on_step(A1, b1, A2, b2, loss):
        nonlocal stopped
        steps[0] += 1
        stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), {"stage": "refine", "iteration": steps[0],
                                                                   "training_mse": 2 * loss / m}))
        return stopped

    if opts.callback is not None:
        mse0 = float(np.mean((derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2 - Y) ** 2))
        stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), {"stage": "init", "iteration": 0,
                                                                   "training_mse": mse0}))

    # 5. Refinement rounds (fastten._rounds).
    rounds, stages = [], []
    refining = opts.refine and opts.max_iter and not stopped
    if refining:
        A1, b1, A2, b2 = refine_network(Xs, Y, A1, b1, A2, b2, activation, opts.max_iter, opts.n_rounds, opts.ridge,
                                        rng, on_step if opts.callback else None, lambda: stopped, rounds, stages)
        # In passes over all n rows: a pass over the subsample counts rows / n.
        passes["refine"] = round(sum(s["passes"] * s["rows"] / n + s["restart_passes"] for s in stages), 1)
        last = stages[-1]
        if not last["converged"] and not stopped:
            note(f"refinement did not reach the optimum within {len(rounds)} rounds of max_iter={opts.max_iter} "
                 f"(training MSE / Var(y) = {last['mse'] / np.mean(np.var(Y, axis=0)):.2e})", ConvergenceWarning)
    lap("refine")

    # 6. What the data still say.
    mse = float(np.mean((derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2 - Y) ** 2))
    structure = None
    if refining and not stopped and mse > EXACT_FIT * np.mean(np.var(Y, axis=0)):
        # No silent local optimum: a residual that still correlates with the
        # inputs' score functions means the network misses a unit.
        _, structure, used = residual_direction(Xs, Y, A1, b1, A2, b2, activation, rng)
        passes["residual_check"] = used
        if structure >= 1:
            note(f"the residual still correlates with the inputs (its strongest moment direction stands "
                 f"{structure:.1f}x above the noise threshold; training MSE / Var(y) = "
                 f"{mse / np.mean(np.var(Y, axis=0)):.2e}): the refinement stopped at a local optimum, not the "
                 f"best network for these data; try another random_state, more n_rounds or max_iter",
                 LocalOptimumWarning)
    found = len(directions.kept) + directions.n_joint + directions.n_second
    if opts.init == "tensor" and found < k:
        # More units than the moments support (or an activation whose
        # moments vanish): say what the fit did instead. Only a warning when
        # the fit is not exact in the end (the refinement may train them).
        message = (f"the moments support {found} of n_hidden={k} directions (the rest are not distinguishable "
                   f"from sampling noise at n={n}); units {list(range(found, k))} started from random "
                   f"directions")
        if mse > EXACT_FIT * np.mean(np.var(Y, axis=0)):
            note(message, IdentifiabilityWarning)
        else:
            notes.append(message)
            logger.info("fit: %s; the refinement reached an exact fit", message)
    z_final = third_moment_z(Xs, r_t, A1 / np.linalg.norm(A1, axis=0))
    unseen = np.flatnonzero(np.abs(z_final) < VISIBLE_Z).tolist()
    if unseen and not opts.refine:
        note(f"units {unseen} have no detectable third moment (|z| < {VISIBLE_Z}): the tensor stage cannot "
             f"identify them from these {n} samples; use refine=True or more samples", IdentifiabilityWarning)
    times["total"] = time.perf_counter() - start
    diagnostics = {
        "init": opts.init,
        "task": opts.task,
        **directions.to_dict(),
        "bias_method": opts.bias_method,
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
