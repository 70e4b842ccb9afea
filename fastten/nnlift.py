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
from ._inputs import Standardiser, power_of_two_scale
from ._output import softmax_output
from ._random import check_random_state
from ._rounds import network_loss, output_loss, refine_network, residual_direction, ridge_output
from ._subspace import linear_residual
from ._validation import check_int, check_samples, check_targets
from .activations import derivative, get_activation
from .decomposition import METHODS, ConvergenceWarning, ZeroTensorError
from .network import TwoLayerNet
from .operators import DataMoment
from .scores import ScoreFunction, ScoreMoment, estimate_product_score

__all__ = ["fit", "IdentifiabilityWarning", "LocalOptimumWarning"]

logger = logging.getLogger("fastten")


class IdentifiabilityWarning(UserWarning):
    """The moments do not identify part of the network (a unit invisible to
    them, for instance)."""


class LocalOptimumWarning(ConvergenceWarning):
    """The refinement stopped where the residual still carries signal: the
    network is a local optimum, not the best fit to the data."""


INPUT_MODELS = ("gaussian", "standard", "product")
INITS = ("tensor", "random")
TASKS = ("regression", "classification")
BIAS_METHODS = ("moments", "fourier", "zero")

# Rows on which input_model="product" fits each feature's score (score
# matching, ``fastten.scores.estimate_product_score``): at d=20, n=2e5
# (logistic and Student-t(8) inputs, k=5, seeds 0-4) the tensor stage took
# 2.0 s instead of 3.6 s, with worst |cos| 0.9978-0.9995 against
# 0.9985-0.9995 from scores fitted on all rows.
SCORE_ROWS = 20_000

# Bound (exclusive) on alpha and ridge: a penalty near it already drives
# every weight far below float64 resolution, and beyond it the penalised
# least-squares solves overflow (their rows carry sqrt(alpha)).
PENALTY_MAX = 1e100

# Largest |x| accepted with input_model="standard": N(0, I) features never
# come near it, and the third moment cubes x . u (1e50 cubed is 1e150).
STANDARD_MAX = 1e50

# Training MSE / Var(y) below which a fit is exact and its residual is not
# examined for structure.
EXACT_FIT = 1e-10


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
        method="auto", bias_method="moments", refine=True, alpha=0.0, early_stopping=False, validation_fraction=0.1,
        n_iter_no_change=10, ridge=1e-8, max_iter=50, n_rounds=6, random_state=None, callback=None,
        blas_threads=1):
    """Fit f(x) = a2^T sigma(A1^T x + b1) + b2 to (X, y) by the method of moments.

    Parameters
    ----------
    X : array (n, d) of real or boolean features on any scales; constant
        features and null directions (features that are linear
        combinations of others) are dropped from the fit, with a note in
        ``diagnostics["inputs"]``, and get zero weights
    y : array (n,), or (n, m) for m outputs (a2 is then k x m); for
        ``task="classification"``, n labels of any type taking at least two
        values, each at least twice
    n_hidden : int >= 1. The moments identify at most as many units as the
        inputs have dimensions (``diagnostics["suggested_n_hidden"]`` is how
        many they support); units beyond that start from random directions
        and only the refinement trains them (docs/method.md)
    activation : "sigmoid", "tanh", "softplus", "relu", or a
        ``fastten.activations.Activation`` (a user activation given its
        derivatives)
    task : "regression" (least squares) or "classification": one output
        per class (logits), refined by cross-entropy of their softmax
        (``TwoLayerNet.predict_proba``); the tensor stage and the initial
        output layer see the one-hot labels
    input_model : the input density whose score functions the moments use.
        "gaussian" (default: standardise and whiten, Hermite scores);
        "standard" (the inputs are N(0, I) already); "product"
        (independent features of any densities: each standardised
        feature's score is fitted by score matching,
        ``fastten.estimate_product_score``, with its held-out Stein check in
        ``diagnostics["score"]``); or a ``fastten.ScoreFunction``
        (e.g. ``ProductScore([Logistic(), StudentT(8), ...])``) of the
        standardised features (x - mean) / std. With a non-Gaussian model
        the units start with unit norm and zero bias (the moment-based
        scales and biases are Gaussian closed forms) and the tensor stage
        does not use the fourth moment; the residual check after the
        refinement is skipped (it has the Gaussian score)
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
    alpha : float in [0, 1e100), L2 penalty on the weights of both layers in the
        refinement, scikit-learn's convention: the objective is the mean
        loss plus alpha / (2 n) (|A1|^2 + |A2|^2), with A1 on the whitened
        inputs and A2 on the standardised targets (regression) or the logits
    early_stopping : hold out ``validation_fraction`` of the rows (stratified
        by class for classification) from every stage, and keep the network
        of the refinement step with the lowest loss on them, stopping after
        ``n_iter_no_change`` steps without an improvement of 1e-4 of it
    validation_fraction : float in (0, 1), used with early_stopping
    n_iter_no_change : int >= 1, Levenberg-Marquardt steps (not epochs:
        each is a Gauss-Newton solve on all the rows) of patience
    ridge : float in [0, 1e100), L2 penalty (times n) on the output weights
        of the initial fit, added to alpha's
    max_iter : Levenberg-Marquardt iterations per round and stage
    n_rounds : refinement rounds on the subsample; after a round that stalls
        above zero loss, units of the wrong sign are flipped or the least
        useful unit is re-seeded from the residual's third or second moment
        before the next (docs/method.md; least squares only)
    random_state : None, int or numpy.random.Generator; drives every random
        choice (same seed, same network)
    callback : None, or ``callback(network, info)`` called with the network
        (a TwoLayerNet in the caller's coordinates) after the initial fit
        (``info["stage"] == "init"``) and after every accepted refinement
        step (``"refine"``); ``info`` also holds ``"iteration"`` and
        ``"training_loss"`` (the refinement's objective on the rows of the
        current stage, a subsample at first; for least squares without
        penalty also ``"training_mse"``, the mean squared error in the
        caller's units). Returning True stops the refinement.
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

    Raises
    ------
    ValueError, TypeError : a bad option or bad data, naming the parameter.

    Warns
    -----
    IdentifiabilityWarning, LocalOptimumWarning, ConvergenceWarning, and a
    UserWarning when there are fewer rows than parameters. docs/bad_input.md
    lists what each bad input gets.
    """
    options = _check_options(activation, task, input_model, init, method, bias_method, refine, alpha, early_stopping,
                             validation_fraction, n_iter_no_change, ridge, max_iter, n_rounds, callback, blas_threads)
    with _blas_limit(None if blas_threads is None else int(blas_threads)):  # threadpoolctl takes Python ints only
        return _fit(X, y, n_hidden, options, random_state)


@dataclass(frozen=True)
class _Options:
    """fit's options, checked (``_check_options``)."""

    activation_spec: object  # as given: the fitted network keeps it
    activation: object
    task: str
    input_model: object  # a name in INPUT_MODELS or a ScoreFunction
    init: str
    method: str
    bias_method: str
    refine: bool
    alpha: float
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    ridge: float
    max_iter: int
    n_rounds: int
    callback: object

    @property
    def loss(self):
        return "softmax" if self.task == "classification" else "squared"

    @property
    def gaussian(self):
        return isinstance(self.input_model, str) and self.input_model in ("gaussian", "standard")


def _one_of(value, name, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def _real(value, name, low, high=None, *, closed=True):
    """A real number >= low (> low when not closed), and < high if given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r} of type {type(value).__name__}")
    ok = (value >= low if closed else value > low) and (high is None or value < high)
    if not ok:
        expected = (f">= {low:g}" if closed else f"> {low:g}") + ("" if high is None else f" and < {high:g}")
        raise ValueError(f"{name}: expected a number {expected}, got {value!r}")
    return float(value)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _check_options(activation, task, input_model, init, method, bias_method, refine, alpha, early_stopping,
                   validation_fraction, n_iter_no_change, ridge, max_iter, n_rounds, callback, blas_threads):
    """Every option of fit, checked before any data work."""
    if blas_threads is not None:  # threadpoolctl passes it on as a C int
        check_int(blas_threads, "blas_threads", 1, 2 ** 31 - 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected None or a callable, got {type(callback).__name__}")
    return _Options(activation, get_activation(activation), _one_of(task, "task", TASKS),
                    input_model if isinstance(input_model, ScoreFunction)
                    else _one_of(input_model, "input_model", INPUT_MODELS), _one_of(init, "init", INITS),
                    _one_of(method, "method", METHODS), _one_of(bias_method, "bias_method", BIAS_METHODS),
                    _flag(refine, "refine"), _real(alpha, "alpha", 0.0, PENALTY_MAX), _flag(early_stopping, "early_stopping"),
                    _real(validation_fraction, "validation_fraction", 0.0, 1.0, closed=False),
                    check_int(n_iter_no_change, "n_iter_no_change", 1), _real(ridge, "ridge", 0.0, PENALTY_MAX),
                    check_int(max_iter, "max_iter", 0), check_int(n_rounds, "n_rounds", 1), callback)


def _features(X):
    """X as a finite float64 (n, d) array; boolean features become 0/1."""
    return check_samples(X, boolean=True).astype(np.float64, copy=False)


def _targets(y, n, task):
    """(Y (n, m), single output?, classes or None), checked. For
    classification Y holds the one-hot labels (one column per class)."""
    if task == "regression":
        Y, single = check_targets(y, n)
        constant = np.flatnonzero(np.ptp(Y, axis=0) == 0)
        if constant.size:
            raise ValueError(f"y: expected labels that vary, got the constant {float(Y[0, constant[0]])!r}"
                             + (f" in output column {constant[0]}" if Y.shape[1] > 1 else ""))
        return Y, single, None
    try:
        labels = np.asarray(y)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"y: expected a 1-D array of class labels, could not convert it ({exc})") from None
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"y: expected {n} labels (one per row of X) in a 1-D array for "
                         f"task='classification', got shape {labels.shape}")
    if labels.dtype.kind in "iufb":
        check_targets(labels.astype(np.float64), n)  # finiteness
    elif labels.dtype.kind == "c" and not np.isfinite(labels).all():
        raise ValueError("y: expected finite class labels, got NaN or infinite entries")
    elif labels.dtype.kind == "O":
        if any(label is None for label in labels):
            raise ValueError("y: expected a class label in every row, got None")
        if any(isinstance(label, numbers.Number) and label != label for label in labels):
            raise ValueError("y: expected a class label in every row, got NaN")
    try:
        classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    except TypeError as exc:  # labels of types that do not compare (1 and "a")
        raise TypeError(f"y: expected class labels that can be sorted (of one type), got labels of types "
                        f"{sorted({type(label).__name__ for label in labels})} ({exc})") from None
    def label(i):
        value = classes[i]
        return repr(value.item() if isinstance(value, np.generic) else value)

    if classes.size < 2:
        raise ValueError(f"y: expected labels taking at least two values for task='classification', got only "
                         f"{label(0)}")
    if counts.min() < 2:
        raise ValueError(f"y: expected at least two samples of each class, got one of class "
                         f"{label(np.argmin(counts))}")
    Y = np.zeros((n, classes.size))
    Y[np.arange(n), index] = 1.0
    return Y, False, classes


def _split(Y, fraction, task, rng):
    """(training rows, validation rows) for early stopping: a random
    fraction of the rows, stratified by class for classification."""
    n = Y.shape[0]
    groups = [np.flatnonzero(Y[:, c]) for c in range(Y.shape[1])] if task == "classification" else [np.arange(n)]
    held = []
    for rows in groups:
        count = int(round(fraction * rows.size)) if task == "classification" else int(np.ceil(fraction * n))
        held.append(rng.choice(rows, size=min(count, rows.size - 1), replace=False))
    held = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(n), held)
    if held.size < 2 or train.size < 2:
        raise ValueError(f"validation_fraction: expected a fraction that leaves at least two rows for "
                         f"validation and two for training, got {fraction!r} of {n} rows ({held.size} held out)")
    return train, held


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


class _EarlyStopping:
    """The refinement's step hook for early stopping: the loss on held-out
    rows after every accepted step, the best network so far, and whether
    ``patience`` steps went by without improving on it by 1e-4."""

    def __init__(self, X, Y, activation, loss, patience):
        self.X, self.Y, self.activation, self.loss, self.patience = X, Y, activation, loss, patience
        self.best, self.best_loss, self.since = None, np.inf, 0
        self.history = []

    def step(self, A1, b1, A2, b2):
        value = network_loss(self.X, self.Y, A1, b1, A2, b2, self.activation, self.loss)
        self.history.append(value)
        if value < self.best_loss * (1 - 1e-4):
            self.since = 0
        else:
            self.since += 1
        if value < self.best_loss:
            self.best_loss, self.best = value, (A1.copy(), b1.copy(), A2.copy(), b2.copy())
        return self.since >= self.patience


def _score_moment(opts, inputs, Z, r, rng):
    """(the cross-moment of the residuals r with a non-Gaussian input
    model's score, its record for the diagnostics). The product density
    holds in the standardised features Z (a rotation would mix them); the
    control-variate residual is the same there as on the whitened inputs."""
    if inputs.rank < Z.shape[1]:
        raise ValueError(f"input_model: a product density needs features that are not linear combinations of "
                         f"others, got {inputs.dropped['null_directions']} null direction(s)")
    if opts.input_model == "product":
        # A one-dimensional score needs far fewer rows than the moments:
        # fitted on SCORE_ROWS of them, evaluated on all.
        n = Z.shape[0]
        rows = rng.choice(n, size=SCORE_ROWS, replace=False) if n > SCORE_ROWS else slice(None)
        try:
            score = estimate_product_score(Z[rows], rng)
        except ValueError as exc:  # too few rows, or a feature of too few distinct values
            raise ValueError(f"X: input_model='product' cannot fit the features' score functions: {exc}") from None
    else:
        score = opts.input_model
    return ScoreMoment(score, Z, r), {"score": repr(score), **(getattr(score, "diagnostics", None) or {})}


def _fit(X, y, n_hidden, opts, random_state):
    start = time.perf_counter()
    X = _features(X)
    n_all, d = X.shape
    if n_all < 2:  # before the labels, which one row cannot make vary
        raise ValueError(f"X: expected at least 2 samples, got {n_all}")
    Y, single, classes = _targets(y, n_all, opts.task)
    m = Y.shape[1]
    k = check_int(n_hidden, "n_hidden", 1)
    rng = check_random_state(random_state)
    activation = opts.activation
    times, notes, passes = {}, [], {}

    def lap(stage):
        times[stage] = time.perf_counter() - start - sum(times.values())

    def note(message, category=UserWarning):
        notes.append(message)
        warnings.warn(f"fit: {message}", category, stacklevel=4)  # note, _fit, fit, caller

    validation = None
    if opts.early_stopping:
        train, held = _split(Y, opts.validation_fraction, opts.task, rng)
        validation = (X[held], Y[held])
        X, Y = X[train], Y[train]
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"X: expected at least 2 samples, got {n}")
    n_params = d * k + k + k * m + m
    if n < n_params:
        message = f"{n} rows for {n_params} parameters (d={d}, n_hidden={k}, {m} output{'s' * (m > 1)})"
        if opts.alpha == 0 and not opts.early_stopping:
            note(f"{message}: the network can interpolate the data; regularise with alpha > 0 or "
                 f"early_stopping=True")
        else:
            notes.append(message)

    # 1. Standardise inputs (per feature, then whiten in the non-null space)
    # and, for regression, targets.
    if opts.input_model != "standard":
        inputs, Z = Standardiser.fit(X)
        Xs = inputs.whiten(Z)
        passes["standardise"] = 3
        dropped = inputs.dropped
        if dropped["constant_features"] or dropped["null_directions"]:
            notes.append(f"inputs: dropped constant features {dropped['constant_features']} and "
                         f"{dropped['null_directions']} null direction(s) of the correlation matrix; the fit uses "
                         f"{inputs.rank} of {d} input dimensions")
            logger.info("fit: %s", notes[-1])
    else:
        top = float(np.abs(X).max())
        if top > STANDARD_MAX:
            raise ValueError(f"X: input_model='standard' expects N(0, I) features, got entries up to {top:.3g} "
                             f"(above {STANDARD_MAX:g}): use input_model='gaussian' to standardise them")
        inputs, Xs = Standardiser.identity(d), X
        passes["standardise"] = 0
    r = inputs.rank
    if opts.task == "regression":
        # On Y / c (c a power of two per column: exact) so that labels near
        # the ends of the float64 range neither overflow nor underflow.
        c = power_of_two_scale(Y)
        y_mean, y_scale = np.mean(Y / c, axis=0), np.std(Y / c, axis=0)
        Ys = (Y / c - y_mean) / y_scale
        y_mean, y_scale = y_mean * c, y_scale * c
    else:
        y_mean, y_scale = np.zeros(m), np.ones(m)
        Ys = Y
    lap("standardise")

    # 2-3. Directions, then scales, signs and biases (fastten._directions),
    # from the labels combined with random weights over the outputs. The
    # moments identify at most r directions; more units start at random.
    theta = rng.standard_normal(m)
    y_t = Ys @ (theta / np.linalg.norm(theta))
    y_t -= y_t.mean()
    r_t = linear_residual(Xs, y_t)
    k_moments = min(k, r)
    op, score_record = (DataMoment(Xs, r_t), None) if opts.gaussian else _score_moment(opts, inputs, Z, r_t, rng)
    init, directions = opts.init, None
    flat = ("the moments of the labels' residual after least squares on [1, x] vanish (labels linear in the "
            "inputs, or inputs of two distinct values): no moment of order >= 2 sees a direction, and the units "
            "start from random directions")
    if init == "tensor" and np.abs(r_t).max() <= 1e-12 * np.abs(y_t).max():
        note(flat, IdentifiabilityWarning)  # nothing for the tensor stage to decompose
        init = "random"
    if init == "tensor":
        try:
            directions = tensor_directions(op, k_moments, opts.method, rng)
        except ZeroTensorError:
            note(flat, IdentifiabilityWarning)
            init = "random"
    if directions is not None:
        if not opts.gaussian:
            # Directions on Z to weights on the whitened x~ (unit norm).
            U = inputs.from_standardised(directions.U)
            directions.U = U / np.linalg.norm(U, axis=0)
    else:
        directions = random_directions(r, k_moments, rng)
    if k > r:
        directions.U = np.hstack([directions.U, random_directions(r, k - r, rng).U])
        notes.append(f"n_hidden={k} exceeds the {r} input dimensions: units {r}-{k - 1} start from random "
                     f"directions, and only the refinement trains them")
    notes += directions.notes
    bias_method = opts.bias_method if opts.gaussian else "zero"
    A1, b1, units, used = initial_units(Xs, y_t, directions, activation, bias_method, rng)
    passes["tensor"] = directions.passes + used
    lap("tensor")

    # 4. Output layer: least squares, then for classification the
    # penalised cross-entropy of the logits.
    F = derivative(activation, Xs @ A1 + b1, 0)
    A2, b2, output_cond = ridge_output(F, Ys, opts.ridge + opts.alpha / n)
    if opts.loss == "softmax":
        A2, b2 = softmax_output(F, Ys, opts.alpha, rng=rng)
    passes["output_layer"] = 1
    lap("output_layer")

    def network(A1, b1, A2, b2, diagnostics):
        A1_out, b1_out = inputs.network(A1, b1)
        A2, b2 = A2 * y_scale, b2 * y_scale + y_mean
        a2, b2 = (A2[:, 0], float(b2[0])) if single else (A2.copy(), b2.copy())
        return TwoLayerNet(A1_out, b1_out, a2, b2, opts.activation_spec, diagnostics, classes)

    stopped, steps = False, [0]
    stopper = None
    if validation is not None:
        stopper = _EarlyStopping(inputs.transform(validation[0]), (validation[1] - y_mean) / y_scale, activation,
                                 opts.loss, opts.n_iter_no_change)
        stopper.step(A1, b1, A2, b2)
    plain_mse = opts.loss == "squared"

    def info(stage, loss):
        record = {"stage": stage, "iteration": steps[0], "training_loss": loss}
        if plain_mse:
            with np.errstate(over="ignore"):  # inf for labels near float64's limit: an MSE beyond its range
                record["training_mse"] = 2 * loss / m * float(np.mean(y_scale ** 2)) if opts.alpha == 0 else None
        return record

    def on_step(A1, b1, A2, b2, loss):
        nonlocal stopped
        steps[0] += 1
        if stopper is not None and stopper.step(A1, b1, A2, b2):
            stopped = True
        if opts.callback is not None:
            stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), info("refine", loss))) or stopped
        return stopped

    if opts.callback is not None:
        loss0 = network_loss(Xs, Ys, A1, b1, A2, b2, activation, opts.loss)
        stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), info("init", loss0)))

    # 5. Refinement rounds (fastten._rounds).
    rounds, stages = [], []
    refining = opts.refine and opts.max_iter and not stopped
    if refining:
        hook = on_step if (opts.callback or stopper) else None
        A1, b1, A2, b2 = refine_network(Xs, Ys, A1, b1, A2, b2, activation, opts.max_iter, opts.n_rounds,
                                        opts.ridge, rng, hook, lambda: stopped, rounds, stages, alpha=opts.alpha,
                                        loss=opts.loss)
        if stopper is not None and stopper.best is not None:
            A1, b1, A2, b2 = stopper.best
        # In passes over all n rows: a pass over the subsample counts rows / n.
        passes["refine"] = round(sum(s["passes"] * s["rows"] / n + s["restart_passes"] for s in stages), 1)
        last = stages[-1]
        if not last["converged"] and not stopped:
            note(f"refinement did not reach the optimum within {len(rounds)} rounds of max_iter={opts.max_iter} "
                 f"(final objective {last['loss']:.3e})", ConvergenceWarning)
    lap("refine")

    # 6. What the data still say.
    outputs = derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2
    with np.errstate(over="ignore"):  # inf for labels near float64's limit: an MSE beyond its range
        mse = float(np.mean(((outputs - Ys) * y_scale) ** 2)) if opts.loss == "squared" else None
    final_loss = output_loss(outputs, Ys, opts.loss)
    relative_mse = None
    if opts.loss == "squared":
        # Training MSE / Var(y), in standardised units (Var(y) = y_scale^2):
        # finite wherever the labels are.
        w = (y_scale / y_scale.max()) ** 2
        relative_mse = float(np.mean((outputs - Ys) ** 2 * w) / np.mean(w))
    exact = opts.loss == "squared" and relative_mse <= EXACT_FIT
    structure = None
    if refining and not stopped and opts.loss == "squared" and opts.alpha == 0 and opts.gaussian and not exact:
        # No silent local optimum: a residual that still correlates with the
        # inputs' score functions means the network misses a unit.
        _, structure, used = residual_direction(Xs, Ys, A1, b1, A2, b2, activation, rng)
        passes["residual_check"] = used
        if structure >= 1:
            note(f"the residual still correlates with the inputs (its strongest moment direction stands "
                 f"{structure:.1f}x above the noise threshold; training MSE / Var(y) = "
                 f"{relative_mse:.2e}): the refinement stopped at a local optimum, or "
                 f"n_hidden={k} units cannot fit these data; try another random_state, more n_rounds or max_iter, "
                 f"or more units", LocalOptimumWarning)
    found = len(directions.kept) + directions.n_joint + directions.n_second
    if init == "tensor" and found < k_moments:
        # More units than the moments support (or an activation whose
        # moments vanish): say what the fit did instead. Only a warning when
        # the fit is not exact in the end (the refinement may train them).
        message = (f"the moments support {found} of n_hidden={k} directions (the rest are not distinguishable "
                   f"from sampling noise at n={n}); units {list(range(found, k_moments))} started from random "
                   f"directions")
        if not exact:
            note(message, IdentifiabilityWarning)
        else:
            notes.append(message)
            logger.info("fit: %s; the refinement reached an exact fit", message)
    unit = A1 / np.linalg.norm(A1, axis=0)
    z_final = third_moment_z(op, unit if opts.gaussian else inputs.L @ unit)
    unseen = np.flatnonzero(np.abs(z_final) < VISIBLE_Z).tolist()
    if unseen and not opts.refine:
        note(f"units {unseen} have no detectable third moment (|z| < {VISIBLE_Z}): the tensor stage cannot "
             f"identify them from these {n} samples; use refine=True or more samples", IdentifiabilityWarning)
    times["total"] = time.perf_counter() - start
    sub = directions.subspace
    diagnostics = {
        "init": init,
        "task": opts.task,
        "inputs": inputs.to_dict(),
        "input_model": opts.input_model if isinstance(opts.input_model, str) else "score",
        "score": score_record,
        **directions.to_dict(),
        "suggested_n_hidden": sub.supported if sub is not None else None,
        "bias_method": bias_method,
        "unit_recovery": units,
        "third_moment_z": np.abs(z_final).tolist(),
        "units_without_third_moment": unseen,
        "input_condition_number": inputs.condition,
        "output_layer_condition_number": output_cond,
        "refinement_stages": stages,
        "refinement_rounds": rounds,
        "refinement_iterations": sum(s["iterations"] for s in stages),
        "refinement_cg_iterations": sum(s["cg"] for s in stages),
        "loss": opts.loss,
        "alpha": opts.alpha,
        "training_loss": final_loss,
        "training_mse": mse,
        "early_stopping": None if stopper is None else {
            "validation_rows": int(validation[0].shape[0]), "best_validation_loss": stopper.best_loss,
            "validation_losses": stopper.history, "stopped_early": bool(stopped)},
        "residual_structure": structure,
        "data_passes": passes,
        "times": times,
        "warnings": notes,
    }
    return network(A1, b1, A2, b2, _plain(diagnostics))
