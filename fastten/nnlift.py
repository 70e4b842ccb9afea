"""NN-LIFT end to end: ``fit(X, y, n_hidden)`` returns a fitted two-layer network.

Pipeline (DESIGN section 4; the details and their measurements are in
docs/method.md, "Fitting a network"):

1. validate, and standardise x~ = Sigma^{-1/2} (x - mu) unless the caller
   says the inputs are standard already;
2. replace the labels by their residual r after least squares on [1, x~]
   (a control variate: the moments of order >= 2 keep their expectation,
   their variance falls by Var(r) / Var(y); or the quadratic control
   variate, cross-fitted or not: ``fastten._control``); find the span of A1
   from E[r S2] and E[r S3] combined (``fastten._subspace``) and decompose the
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
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ._control import CONTROL_VARIATES, control_labels, streamed_weights
from ._directions import VISIBLE_Z, initial_units, random_directions, tensor_directions, third_moment_z
from ._inputs import Standardiser
from ._one_pass import one_pass
from ._progress import Progress, check_verbose
from ._output import softmax_output
from ._random import check_random_state
from ._refine import StreamedRows
from ._rounds import gathered_rows, network_loss, output_loss, refine_network, residual_direction
from ._dask import DaskSource, is_dask_array
from ._sources import BLOCK_ROWS, ArraySource, ChunkSource, Mapped, MemmapSource, gather, run_pass
from ._workers import Workers, default_threads
from .accumulate import Covariance, OutputLayer, PassCounter
from ._validation import check_int, check_samples, check_targets
from .activations import derivative, get_activation
from .decomposition import METHODS, ConvergenceWarning, ZeroTensorError
from .network import TwoLayerNet
from .operators import DataMoment
from .scores import ScoreFunction, ScoreMoment, estimate_product_score

__all__ = ["fit", "IdentifiabilityWarning", "LocalOptimumWarning"]

logger = logging.getLogger("fastten")


class IdentifiabilityWarning(UserWarning):
    """The moments do not identify part of the network.

    A unit invisible to them, for instance (docs/method.md, the traps).
    """


class LocalOptimumWarning(ConvergenceWarning):
    """The refinement stopped where the residual still carries signal.

    The network is a local optimum, not the best fit to the data.
    """


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
# The tensor stage's moments from a float32 copy of the whitened inputs:
# the directions' CPU time at d=50, k=10, n=1e5 fell from 3.42 to 2.43 s
# (minimum of 6 interleaved runs on a loaded machine; medians 5.6 and 3.3 s)
# with the same worst |cos| to four decimals.
TENSOR_FLOAT32 = True


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
        method="auto", bias_method="moments", control_variate="linear", cross_fit=False, refine=True, alpha=0.0,
        early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, ridge=1e-8, max_iter=50, n_rounds=6,
        random_state=None, callback=None, n_threads=None, blas_threads=1, block_rows=BLOCK_ROWS, one_pass=False,
        verbose=0):
    """Fit f(x) = a2^T sigma(A1^T x + b1) + b2 to (X, y) by the method of moments.

    NN-LIFT's tensor stage starts the network, a Levenberg-Marquardt
    refinement finishes it; the pipeline is in docs/method.md ("Fitting a
    network"). Every option is checked before the data are read.

    Parameters
    ----------
    X : array_like, shape (n, d), numpy.memmap, str, callable or dask.array.Array
        Real or boolean features on any scales; constant features and null
        directions (features that are linear combinations of others) are
        dropped from the fit, with a note in ``diagnostics["inputs"]``, and
        get zero weights. Or data out of core: a ``numpy.memmap`` (n, d), a
        path to an ``.npy`` file (opened with ``mmap_mode="r"``), or a
        callable returning a fresh iterator of (X_block, y_block) chunks on
        every call (then y is None); these are read in blocks, once per pass.
        Or a ``dask.array.Array`` (n, d) chunked along samples only (one
        chunk across the features), with y a dask array of the same row
        chunks or an array in memory: each pass is then a tree reduction of
        accumulators over the chunks, on the active Dask scheduler (a
        ``dask.distributed`` cluster when a Client exists). See docs/api.md,
        "Data out of core".
    y : array_like, shape (n,) or (n, m), or None
        Labels, or m outputs (a2 is then k x m); for
        ``task="classification"``, n labels of any type taking at least two
        values, each at least twice.
    n_hidden : int
        k >= 1. The moments identify at most as many units as the inputs
        have dimensions (``diagnostics["suggested_n_hidden"]`` is how many
        they support); units beyond that start from random directions and
        only the refinement trains them (docs/method.md).
    activation : str or fastten.activations.Activation, default "sigmoid"
        "sigmoid", "tanh", "softplus", "relu", or a user activation given
        its derivatives.
    task : {"regression", "classification"}
        "regression" (least squares) or "classification": one output per
        class (logits), refined by cross-entropy of their softmax
        (``TwoLayerNet.predict_proba``); the tensor stage and the initial
        output layer see the one-hot labels.
    input_model : {"gaussian", "standard", "product"} or ScoreFunction
        The input density whose score functions the moments use.
        "gaussian" (default: standardise and whiten, Hermite scores);
        "standard" (the inputs are N(0, I) already); "product"
        (independent features of any densities: each standardised
        feature's score is fitted by score matching,
        :func:`fastten.estimate_product_score`, with its held-out Stein
        check in ``diagnostics["score"]``); or a
        :class:`fastten.ScoreFunction` (e.g.
        ``ProductScore([Logistic(), StudentT(8), ...])``) of the
        standardised features (x - mean) / std. With a non-Gaussian model
        the units start with unit norm and zero bias (the moment-based
        scales and biases are Gaussian closed forms) and the tensor stage
        does not use the fourth moment; the residual check after the
        refinement is skipped (it has the Gaussian score).
    init : {"tensor", "random"}
        "tensor" (the directions from the third moment: NN-LIFT) or
        "random" (random unit directions; the baseline that isolates what
        the tensor stage buys).
    method : {"auto", "orthogonal", "nonorthogonal", "power", "sketch"}
        The decomposition engine, as in :func:`fastten.decompose`.
    bias_method : {"moments", "fourier", "zero"}
        How the units found by the third moment get their scales, signs
        and biases: "moments" (default: solve the first-, second- and
        third-order moments along each direction), "fourier" (the paper's
        Fourier estimator of b1, with the scales of "moments"; for Gaussian
        inputs its variance is infinite and it does not converge: measured
        in docs/method.md; an option for faithfulness, not for use) or
        "zero" (unit norm, zero bias). Units started from second-order or
        random directions get unit norm and zero bias in every case.
    control_variate : {"linear", "quadratic", "none"}, default "linear"
        What the tensor stage's moments of order >= 2 subtract from the
        centred labels (Stein's identity keeps their expectation; docs/
        method.md, "Control variates"): "linear" (the least-squares fit on
        [1, x], from the statistics pass), "quadratic" (the fit on [1, x]
        and the degree-2 monomials of Q^T x, Q the signal subspace
        estimated from the linear residual; orders 3 and 4 use it, order 2
        keeps the linear residual, whose expectation the quadratic would
        change) or "none" (the centred labels). Measured in
        docs/benchmarks.md ("Control variates"). X out of core supports
        "linear" and "none".
    cross_fit : bool, default False
        Fit the control variate (and the quadratic's subspace) on one
        random half of the rows and subtract it on the other, and vice
        versa, so that it is independent of the rows it is applied to (no
        bias from re-using the data); needs control_variate other than
        "none", and the data in memory.
    refine : bool, default True
        Run the local refinement after the tensor stage.
    alpha : float, default 0.0
        In [0, 1e100), the L2 penalty on the weights of both layers in the
        refinement, scikit-learn's convention: the objective is the mean
        loss plus alpha / (2 n) (``|A1|^2 + |A2|^2``), with A1 on the
        whitened inputs and A2 on the standardised targets (regression) or
        the logits.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the rows (stratified by class
        for classification) from every stage, and keep the network of the
        refinement step with the lowest loss on them, stopping after
        ``n_iter_no_change`` steps without an improvement of 1e-4 of it.
    validation_fraction : float, default 0.1
        In (0, 1); used with early_stopping.
    n_iter_no_change : int, default 10
        >= 1, Levenberg-Marquardt steps (not epochs: each is a Gauss-Newton
        solve on all the rows) of patience.
    ridge : float, default 1e-8
        In [0, 1e100), the L2 penalty (times n) on the output weights of the initial
        fit, added to alpha's.
    max_iter : int, default 50
        >= 0, Levenberg-Marquardt iterations per round and stage.
    n_rounds : int, default 6
        >= 1, refinement rounds on the subsample; after a round that stalls
        above zero loss, units of the wrong sign are flipped or the least
        useful unit is re-seeded from the residual's third or second moment
        before the next (docs/method.md; least squares only).
    random_state : None, int or numpy.random.Generator
        Drives every random choice (same seed, same network).
    callback : callable, optional
        ``callback(network, info)`` called with the network (a TwoLayerNet
        in the caller's coordinates) after the initial fit
        (``info["stage"] == "init"``) and after every accepted refinement
        step (``"refine"``); ``info`` also holds ``"iteration"`` and
        ``"training_loss"`` (the refinement's objective on the rows of the
        current stage, a subsample at first; for least squares without
        penalty also ``"training_mse"``, the mean squared error in the
        caller's units). Returning True stops the refinement.
    n_threads : int or None, default None
        Threads that share each pass over the rows (standardisation, the
        tensor stage's moments, the refinement's products), each on its
        own fixed chunks of rows; None: every core this process may use.
        The chunks' sums are added in the same order whatever the number,
        so the result does not depend on it (bit for bit). Chunks of a
        callable stream are read and used in the calling thread.
    blas_threads : int or None, default 1
        The fit runs thousands of small matrix products, which BLAS threads
        slow down: at d=50, k=10, n=1e5 the fit took 1.9 s with one
        OpenBLAS thread and 4.4 s with two on an idle 2-core machine
        (d=100: 5.3 s and 6.1 s). With threadpoolctl installed
        (``pip install fastten[fast]``) the fit limits BLAS to this many
        threads while it runs, as scikit-learn does, and restores the
        setting after (the limit is process-wide meanwhile). None leaves
        BLAS alone.
    block_rows : int, default 65536
        Rows per block of the data passes (>= 1; arrays in memory and
        memory-mapped files; chunks and dask arrays keep their own chunk
        sizes). A memory-mapped pass holds about one block of the file in
        memory.
    one_pass : bool, default False
        Read every row once (a callable of chunks is called once): for
        streams that cannot be replayed. The first rows (as many as the
        fit keeps in memory, about 2 max(8192, 16 p) for p parameters) are
        a pilot whose signal subspace (k + 10 dimensions) the moments of
        all rows are projected on in the same pass; the units' scales, the
        output layer and the refinement use a uniform sample of that many
        rows; ``diagnostics["one_pass"]`` records the sizes. Arrays in
        memory are fitted as a stream of their blocks of ``block_rows``
        rows. The third-moment directions then take one least-squares step
        in all d dimensions out of the pilot's subspace; what one pass costs
        in accuracy is in docs/performance.md, "One pass". Not with a dask
        array, task="classification", early_stopping, a non-Gaussian
        input_model, bias_method="fourier", method="sketch",
        control_variate="quadratic" or cross_fit.
    verbose : int >= 0 or bool, default 0
        0 (False): silent. 1 (True): a message after each stage
        (standardise, tensor stage, output layer, refinement) with its time,
        and the loss once there is a network; one after each refinement
        round and stage (rows, iterations, loss, converged); one at the end
        with the total time and training loss. 2: also one per accepted
        refinement iteration. The messages are INFO records of the
        ``fastten`` logger when it would show them (enabled for INFO, a
        handler configured); otherwise they are written to ``sys.stderr``
        by a handler of the fit's own (no logger is changed). With tqdm
        installed (``pip install fastten[progress]``) a bar also counts the
        refinement iterations on stderr. docs/api.md, "Progress".

    Returns
    -------
    TwoLayerNet
        The fitted network in the caller's coordinates, with a
        ``diagnostics`` record of how it was fitted (its keys are listed in
        docs/api.md; ``diagnostics["refinement_rounds"][i]["losses"]`` is
        the objective after every accepted step of round i, which
        :func:`fastten.plot.loss_curve` draws).

    Raises
    ------
    ValueError, TypeError
        A bad option or bad data, naming the parameter, what was expected
        and what was received: NaN or infinite values, mismatched lengths,
        1-D X, n_hidden < 1, constant labels, non-numeric dtypes, unknown
        option values, fewer than two classes or a class of one sample, a
        validation_fraction that leaves fewer than two rows on a side, and
        for a non-Gaussian input model collinear features. Out of core, a
        bad block or chunk is named by its index (and a dask chunk by its
        rows); a dask X chunked along features, or a dask y of other row
        chunks, is refused before any pass. With one_pass=True, an option
        one pass cannot serve (or a dask X) is refused naming it and
        one_pass, before any read. docs/bad_input.md lists what each bad
        input gets.

    Warns
    -----
    IdentifiabilityWarning
        When the moments support fewer directions than min(n_hidden, rank)
        and the fit is not exact in the end, or, without refinement, fitted
        units have no detectable third moment, or when the moments of the
        labels' residual vanish (labels linear in the inputs, inputs of two
        values) and the units start from random directions instead.
    LocalOptimumWarning
        When the final residual still correlates with the inputs' score
        functions (unpenalised least squares with Gaussian inputs).
    ConvergenceWarning
        When the refinement stops above zero loss without converging.
    UserWarning
        When there are fewer rows than parameters and neither alpha nor
        early stopping regularises.
    """
    options = _check_options(activation, task, input_model, init, method, bias_method, control_variate, cross_fit,
                             refine, alpha, early_stopping, validation_fraction, n_iter_no_change, ridge, max_iter,
                             n_rounds, callback, blas_threads, one_pass)
    check_int(block_rows, "block_rows", 1)
    threads = default_threads() if n_threads is None else check_int(n_threads, "n_threads", 1, 1024)
    verbose = check_verbose(verbose)
    # threadpoolctl takes Python ints only
    with _blas_limit(None if blas_threads is None else int(blas_threads)), Progress(verbose) as progress, \
            Workers(threads) as workers:
        return _fit(X, y, n_hidden, options, random_state, block_rows, progress, workers)


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
    control_variate: str
    cross_fit: bool
    refine: bool
    alpha: float
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    ridge: float
    max_iter: int
    n_rounds: int
    callback: object
    one_pass: bool = False

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


def _check_options(activation, task, input_model, init, method, bias_method, control_variate, cross_fit, refine,
                   alpha, early_stopping, validation_fraction, n_iter_no_change, ridge, max_iter, n_rounds, callback,
                   blas_threads, one_pass=False):
    """Every option of fit, checked before any data work."""
    control_variate = _one_of(control_variate, "control_variate", CONTROL_VARIATES)
    cross_fit = _flag(cross_fit, "cross_fit")
    if cross_fit and control_variate == "none":
        raise ValueError("cross_fit: expected False with control_variate='none' (there is no fitted control "
                         "variate to cross-fit), got True")
    if blas_threads is not None:  # threadpoolctl passes it on as a C int
        check_int(blas_threads, "blas_threads", 1, 2 ** 31 - 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected None or a callable, got {type(callback).__name__}")
    options = _Options(activation, get_activation(activation), _one_of(task, "task", TASKS),
                       input_model if isinstance(input_model, ScoreFunction)
                       else _one_of(input_model, "input_model", INPUT_MODELS), _one_of(init, "init", INITS),
                       _one_of(method, "method", METHODS), _one_of(bias_method, "bias_method", BIAS_METHODS),
                       control_variate, cross_fit, _flag(refine, "refine"), _real(alpha, "alpha", 0.0, PENALTY_MAX),
                       _flag(early_stopping, "early_stopping"),
                       _real(validation_fraction, "validation_fraction", 0.0, 1.0, closed=False),
                       check_int(n_iter_no_change, "n_iter_no_change", 1), _real(ridge, "ridge", 0.0, PENALTY_MAX),
                       check_int(max_iter, "max_iter", 0), check_int(n_rounds, "n_rounds", 1), callback,
                       _flag(one_pass, "one_pass"))
    if options.one_pass:
        _one_pass_options(options)
    return options


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


def _open_source(X, y, block_rows):
    """The out-of-core source of X (``fastten._sources``) with its labels,
    or None for arrays in memory: a callable of (X_block, y_block) chunks,
    a numpy.memmap, a path to an .npy file (opened memory-mapped), or a
    dask array (``fastten._dask``)."""
    if is_dask_array(X):
        source = DaskSource(X, y)
        return source, source.label_ndim == 1
    if callable(X) and not isinstance(X, np.ndarray):
        if y is not None:
            raise ValueError(f"y: expected None when X is a callable returning (X_block, y_block) chunks (the "
                             f"labels come with them), got {type(y).__name__}")
        return ChunkSource(X), None
    if isinstance(X, (str, os.PathLike)):
        path = os.fspath(X)
        if not path.endswith(".npy"):
            raise ValueError(f"X: expected an array, a numpy.memmap, a callable of chunks or a path to an .npy "
                             f"file, got the path {path!r}")
        try:
            X = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"X: could not open {path!r} as an .npy file ({exc})") from None
    if not isinstance(X, np.memmap):
        return None, None
    if y is None:
        raise ValueError("y: expected labels, one per row of the memory-mapped X, got None")
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X: expected a 2-D memory-mapped array with at least one row and column, got shape "
                         f"{X.shape}")
    if isinstance(y, (str, os.PathLike)):
        y = np.load(os.fspath(y))
    Y, single = check_targets(y, X.shape[0])
    return MemmapSource(X, Y[:, 0] if single else Y, block_rows), single


def _out_of_core_options(opts):
    """The options the out-of-core route does not support, refused."""
    for bad, name, value in ((opts.task != "regression", "task", opts.task),
                             (opts.early_stopping, "early_stopping", opts.early_stopping),
                             (not opts.gaussian, "input_model", opts.input_model),
                             (opts.bias_method == "fourier", "bias_method", opts.bias_method),
                             (opts.method == "sketch", "method", opts.method)):
        if bad:
            raise ValueError(f"{name}: {value!r} needs the data in memory; X out of core (a memmap, an .npy path, "
                             f"chunks or a dask array) supports the default")
    # The quadratic control variate and cross-fitting need the whitened rows
    # (and a split of them) in memory: the control variate of a stream is
    # the linear one from the statistics pass, or none.
    if opts.control_variate == "quadratic":
        raise ValueError("control_variate: 'quadratic' needs the data in memory; X out of core (a memmap, an .npy "
                         "path, chunks or a dask array) supports 'linear' (the default) and 'none'")
    if opts.cross_fit:
        raise ValueError("cross_fit: True needs the data in memory; X out of core (a memmap, an .npy path, "
                         "chunks or a dask array) supports False (the default)")


def _one_pass_options(opts):
    """The options one pass over the data cannot serve, refused."""
    for bad, name, value, why in (
            (opts.task != "regression", "task", opts.task, "the classes' one-hot labels need a pass of their own"),
            (opts.early_stopping, "early_stopping", opts.early_stopping, "it holds rows out of every stage"),
            (not opts.gaussian, "input_model", opts.input_model, "the sketch has the Gaussian score"),
            (opts.bias_method == "fourier", "bias_method", opts.bias_method, "it needs the data in memory"),
            (opts.method == "sketch", "method", opts.method, "it hashes the rows in memory"),
            (opts.control_variate == "quadratic", "control_variate", opts.control_variate,
             "its subspace needs a pass of its own"),
            (opts.cross_fit, "cross_fit", opts.cross_fit, "it needs a split of the rows in memory")):
        if bad:
            raise ValueError(f"{name}: {value!r} is not supported with one_pass=True ({why}); one_pass=True "
                             f"supports task='regression', early_stopping=False, input_model 'gaussian' or "
                             f"'standard', bias_method 'moments' or 'zero', any method but 'sketch', "
                             f"control_variate 'linear' or 'none' and cross_fit=False")


def _array_blocks(X, Y, rows):
    """The arrays as a callable of (X_block, y_block) chunks of ``rows`` rows."""
    def chunks():
        for i in range(0, X.shape[0], rows):
            yield X[i:i + rows], Y[i:i + rows]
    return chunks


def _streamed_control_record(opts, stats, w, theta_hat, y_scale, standard):
    """``diagnostics["control_variate"]`` of an out-of-core fit, from the
    statistics pass: the labels y~ = (y - mean) / scale . theta_hat have
    variance theta_hat^T Cov(y~) theta_hat, and their residual y~ - x~ . w
    (w = Cov(x~, y~)) has that minus 2 |w|^2 plus w^T Cov(x~) w (Cov(x~) = I
    for whitened inputs)."""
    record = {"kind": opts.control_variate, "cross_fit": False, "quadratic_dimension": None, "features": None}
    ratio = 1.0
    if opts.control_variate == "linear":
        ys = y_scale / stats.y_scale  # the label scales in the units of y / stats.y_scale (finite)
        var = float(theta_hat @ (stats.scaled_y_cov / np.outer(ys, ys)) @ theta_hat)
        explained = 2 * float(w @ w) - float(w @ (stats.cov @ w if standard else w))
        ratio = max(var - explained, 0.0) / var if var > 0 else 1.0
    record.update(variance_ratio=ratio, variance_ratio_second=ratio)
    return record


def _fit(X, y, n_hidden, opts, random_state, block_rows, progress, workers):
    start = time.perf_counter()
    if opts.one_pass and is_dask_array(X):
        raise ValueError("one_pass: True reads a stream once, in order; X is a dask array, which every pass can "
                         "read again (and in parallel): use one_pass=False")
    source, single = _open_source(X, y, block_rows)
    if isinstance(source, MemmapSource):
        source.workers = workers
    counter = data_counter = PassCounter()
    if source is None:
        X = _features(X)
        if X.shape[0] < 2:  # before the labels, which one row cannot make vary
            raise ValueError(f"X: expected at least 2 samples, got {X.shape[0]}")
        Y, single, classes = _targets(y, X.shape[0], opts.task)
        if opts.one_pass:  # exactly as a stream of the arrays' blocks
            source = ChunkSource(_array_blocks(X, Y[:, 0] if single else Y, block_rows))
    else:
        _out_of_core_options(opts)
        classes = None
    k = check_int(n_hidden, "n_hidden", 1)
    rng = check_random_state(random_state)
    activation = opts.activation
    times, notes = {}, []

    def lap(stage, loss=None):
        times[stage] = time.perf_counter() - start - sum(times.values())
        progress.stage(stage, times[stage], loss)

    def note(message, category=UserWarning):
        notes.append(message)
        warnings.warn(f"fit: {message}", category, stacklevel=4)  # note, _fit, fit, caller

    validation = None
    if source is None:
        if opts.early_stopping:
            train, held = _split(Y, opts.validation_fraction, opts.task, rng)
            validation = (X[held], Y[held])
            X, Y = X[train], Y[train]
        raw = ArraySource(X, Y, block_rows, workers)
    else:
        raw = source

    # 1. One pass: the inputs' and the labels' means and covariances, and
    # their cross-covariance (the control variate's regression).
    # Or one_pass=True: the same statistics, the tensor stage's sketch and a
    # sample of the rows in the only pass (fastten._one_pass).
    sketch = None
    if opts.one_pass:
        sketch = one_pass(raw, k, opts.control_variate, opts.input_model == "standard", rng, counter,
                          lambda d, m: gathered_rows(d, k, m))
        stats = sketch.stats
    else:
        stats = run_pass(raw, Covariance(), counter=counter, stage="standardise").result()
    n, d = stats.n, stats.mean.shape[0]
    m = stats.y_mean.shape[0]
    if source is not None:
        single = single if single is not None else (source.label_width == 1 and source.label_ndim == 1)
        constant = np.flatnonzero(stats.y_std == 0)
        if constant.size:
            raise ValueError("y: expected labels that vary, got constant labels"
                             + (f" in output column {constant[0]}" if m > 1 else ""))
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

    # Standardise inputs (per feature, then whiten in the non-null space)
    # and, for regression, targets.
    standard = opts.input_model == "standard"
    if standard:
        # The statistics were summed on X / scale (powers of two), and
        # scale <= max |x| < 2 scale: in memory the check is exact.
        top = float(np.abs(X).max()) if source is None else 2 * float(stats.scale.max())
        if top > STANDARD_MAX:
            raise ValueError(f"X: input_model='standard' expects N(0, I) features, got entries up to {top:.3g} "
                             f"(above {STANDARD_MAX:g}): use input_model='gaussian' to standardise them")
        inputs = Standardiser.identity(d)
    else:
        inputs = Standardiser.from_covariance(stats.mean, stats.scaled_cov, stats.scale)
    dropped = inputs.dropped
    if dropped["constant_features"] or dropped["null_directions"]:
        notes.append(f"inputs: dropped constant features {dropped['constant_features']} and "
                     f"{dropped['null_directions']} null direction(s) of the correlation matrix; the fit uses "
                     f"{inputs.rank} of {d} input dimensions")
        logger.info("fit: %s", notes[-1])
    r = inputs.rank
    if opts.task == "regression":
        y_mean, y_scale = stats.y_mean, stats.y_std
    else:
        y_mean, y_scale = np.zeros(m), np.ones(m)
    # The labels combined with random weights over the outputs, centred,
    # and their residual after least squares on [1, x~] (a control variate:
    # fastten._subspace). The whitened inputs have mean 0 and covariance I,
    # so the regression weights are Cov(x~, y): from the first pass.
    theta = sketch.theta if sketch is not None else rng.standard_normal(m)
    theta_hat = theta / np.linalg.norm(theta)
    centre = (stats.y_mean - y_mean) / y_scale
    w = streamed_weights(stats, inputs, y_scale, theta_hat, standard)

    def unwhitened(Xb, Yb):
        """A block standardised per feature (z, before the whitening L) and its labels standardised."""
        Zb = Xb if standard else inputs.standardise(Xb)
        return np.ascontiguousarray(Zb, dtype=np.float64), (Yb.reshape(Xb.shape[0], -1) - y_mean) / y_scale

    def standardised(Xb, Yb):
        Zb, Ysb = unwhitened(Xb, Yb)
        return (Zb if standard else inputs.whiten(Zb)), Ysb

    # Out of core the moments' labels are the residual as streamed (no
    # control variate for control_variate="none"); in memory, r_t is the
    # linear residual and fastten._control replaces it if asked.
    w_streamed = np.zeros_like(w) if source is not None and opts.control_variate == "none" else w

    def residual(Xsb, Ysb, w=w):
        return np.ascontiguousarray((Ysb - centre) @ theta_hat - Xsb @ w)

    def moment_rows(Xsb, rb):
        # The tensor stage's moments in float32 (sums across blocks stay
        # float64): their rounding, about 1e-7, is far below their sampling
        # error, and the passes cost less (TENSOR_FLOAT32).
        if TENSOR_FLOAT32:
            return np.ascontiguousarray(Xsb, dtype=np.float32), rb.astype(np.float32)
        return Xsb, rb

    Z = X32 = None  # X32: the float32 rows, if any, that the refinement's CG products can reuse
    stream = None  # out of core, beyond the rows gathered in memory: _refine.StreamedRows
    if source is None:
        if standard:
            Xs = X
        elif opts.gaussian:
            Xs = workers.fill(np.empty((X.shape[0], r)), lambda start, stop: inputs.transform(X[start:stop]))
            counter.count("standardise")
        else:
            Z = inputs.standardise(X)
            Xs = inputs.whiten(Z)
            counter.count("standardise")
        # On Y / c (c a power of two per column: exact) so that labels near
        # the ends of the float64 range neither overflow nor underflow.
        c = stats.y_scale
        Ys = (Y / c - y_mean / c) / (y_scale / c)
        r_t = workers.fill(np.empty(Xs.shape[0]), lambda start, stop: residual(Xs[start:stop], Ys[start:stop]))
        counter.count("tensor")
        rows = ArraySource(Xs, Ys, block_rows, workers)
        op = None
        if opts.gaussian:
            Z = None  # the product densities' coordinates only: free it
            X_t, r_t32 = Xs, r_t
            if TENSOR_FLOAT32:
                X_t = workers.fill(np.empty(Xs.shape, np.float32), lambda start, stop: Xs[start:stop])
                r_t32 = r_t.astype(np.float32)
            X32 = X_t if X_t.dtype == np.float32 else None
            op = DataMoment.from_source(ArraySource(X_t, r_t32, block_rows, workers), r, counter, y=r_t32)
    elif sketch is not None:
        # The stages after the tensor stage run on the sample, standardised
        # as the full data; passes over it are not passes over the data.
        Xs, Ys = standardised(*sketch.sample)
        rows = ArraySource(Xs, Ys, block_rows, workers)
        op = sketch.operator
        counter = PassCounter()
        sizes = sketch.record
        notes.append(f"one pass: the tensor stage used the moments of all {n} rows projected on the "
                     f"{sizes['subspace_dimension']}-dimensional signal subspace of the first "
                     f"{sizes['pilot_rows']} (the pilot); the units' scales, the output layer, the refinement "
                     f"and the final checks used a uniform sample of {sizes['sample_rows']} rows")
        logger.info("fit: %s", notes[-1])
    else:
        rows = Mapped(source, standardised)

        def streamed_moment_rows(Xb, Yb):
            Xsb, Ysb = standardised(Xb, Yb)
            return moment_rows(Xsb, residual(Xsb, Ysb, w_streamed))

        op = DataMoment.from_source(Mapped(source, streamed_moment_rows), r, counter)
        # The stages that need rows rather than sums (the units' scales and
        # biases, the refinement's subsample, the residual check) run on rows
        # gathered in one pass: all of them when they fit the refinement's
        # two subsamples, else a uniform sample of that many, and the
        # refinement's round on all rows reads the source (StreamedRows).
        limit = gathered_rows(r, k, m)
        picked = None if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))
        Xs, Ys = gather(rows, picked)
        counter.count("gather")
        if picked is not None:  # the whitening goes into the weights
            stream = StreamedRows(Mapped(source, unwhitened), inputs.L, (Xs, Ys), activation, float(m), opts.alpha)
            notes.append(f"out of core: the units' scales, the refinement's first stage and the residual check "
                         f"used {limit} of the {n} rows, sampled uniformly; the moments, the output layer, the "
                         f"refinement's last stage and the training loss used all of them")
            logger.info("fit: %s", notes[-1])
    y_t = (Ys - centre) @ theta_hat
    fraction = Xs.shape[0] / n
    lap("standardise")

    # 2-3. Directions, then scales, signs and biases (fastten._directions).
    # The moments identify at most r directions; more units start at random.
    k_moments = min(k, r)
    score_record = None
    if not opts.gaussian:
        op, score_record = _score_moment(opts, inputs, Z, r_t, rng)
    init, directions = opts.init, None
    flat = ("the moments of the labels' residual after least squares on [1, x] vanish (labels linear in the "
            "inputs, or inputs of two distinct values): no moment of order >= 2 sees a direction, and the units "
            "start from random directions")
    if init == "tensor" and source is None and np.abs(r_t).max() <= 1e-12 * np.abs(y_t).max():
        note(flat, IdentifiabilityWarning)  # nothing for the tensor stage to decompose
        init = "random"
    if source is None:
        # The control variate (fastten._control): the default, the in-sample
        # linear residual r_t, costs nothing more; the others replace the
        # operator's labels (orders >= 3, and order 2 separately).
        control = control_labels(op, Xs if opts.gaussian else Z, y_t, opts.control_variate, opts.cross_fit,
                                 k_moments, rng, linear=r_t)
        if control.higher is not r_t or control.second is not r_t:
            if opts.gaussian:  # the passes of the tensor stage go on being counted in the fit's counter
                op = op._restricted(None, control.higher, control.second, counter=counter)
            else:
                op = op._restricted(None, control.higher, control.second)
        control_record, control_passes = control.record, control.passes
    else:
        control_record, control_passes = _streamed_control_record(opts, stats, w, theta_hat, y_scale, standard), 0
    counter.count("control_variate", control_passes)
    if init == "tensor":
        try:
            directions = tensor_directions(op, min(k_moments, op.dim), opts.method, rng)
        except ZeroTensorError:  # the moments vanish (out of core, or after the control variate)
            note(flat, IdentifiabilityWarning)
            init = "random"
    if directions is not None:
        if sketch is not None:
            # From the sketch's coordinates to the full data's whitened
            # inputs; a pilot of lower rank than the data leaves units over.
            directions.U = sketch.to_full(directions.U, inputs, len(directions.kept))
            if directions.U.shape[1] < k_moments:
                directions.U = np.hstack([directions.U,
                                          random_directions(r, k_moments - directions.U.shape[1], rng).U])
        if not opts.gaussian:
            counter.count("tensor", op.passes)
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
    A1, b1, units, used = initial_units(Xs, y_t, directions, activation, bias_method, rng, workers)
    counter.count("tensor", used * fraction)
    lap("tensor")

    # 4. Output layer: least squares (normal equations accumulated in one
    # pass), then for classification the penalised cross-entropy of the logits.
    A2, b2, output_cond = run_pass(rows, OutputLayer(A1, b1, activation), counter=counter,
                                   stage="output_layer").result(opts.ridge + opts.alpha / n)
    if opts.loss == "softmax":
        A2, b2 = softmax_output(derivative(activation, Xs @ A1 + b1, 0), Ys, opts.alpha, rng=rng)
    loss0 = network_loss(Xs, Ys, A1, b1, A2, b2, activation, opts.loss) if opts.callback or progress.active else None
    lap("output_layer", loss0)

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
        progress.step(loss)
        if stopper is not None and stopper.step(A1, b1, A2, b2):
            stopped = True
        if opts.callback is not None:
            stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), info("refine", loss))) or stopped
        return stopped

    if opts.callback is not None:
        stopped = bool(opts.callback(network(A1, b1, A2, b2, {}), info("init", loss0)))

    # 5. Refinement rounds (fastten._rounds).
    rounds, stages = [], []
    refining = opts.refine and opts.max_iter and not stopped
    if refining:
        hook = on_step if (opts.callback or stopper or progress.active) else None
        progress.begin_refinement()
        A1, b1, A2, b2 = refine_network(Xs, Ys, A1, b1, A2, b2, activation, opts.max_iter, opts.n_rounds,
                                        opts.ridge, rng, hook, lambda: stopped, rounds, stages, alpha=opts.alpha,
                                        loss=opts.loss, report=progress.record, X32=X32, workers=workers,
                                        stream=stream)
        if stopper is not None and stopper.best is not None:
            A1, b1, A2, b2 = stopper.best
        # In passes over all n rows: a pass over the subsample counts rows / n.
        counter.count("refine", sum(s["passes"] * s["rows"] / n + s["restart_passes"] * fraction for s in stages))
        last = stages[-1]
        if not last["converged"] and not stopped:
            note(f"refinement did not reach the optimum within {len(rounds)} rounds of max_iter={opts.max_iter} "
                 f"(final objective {last['loss']:.3e})", ConvergenceWarning)
    lap("refine")

    # 6. What the data still say: the training loss on every row (a pass
    # out of core), the residual's moments.
    if stream is None:
        outputs = derivative(activation, Xs @ A1 + b1, 0) @ A2 + b2
        final_loss = output_loss(outputs, Ys, opts.loss)
        errors = np.mean((outputs - Ys) ** 2, axis=0) if opts.loss == "squared" else None
    else:
        errors = stream.errors(A1, b1, A2, b2)
        final_loss = 0.5 * float(errors.sum())
    counter.count("training_loss", 1 if stream is not None else fraction)
    mse = relative_mse = None
    if opts.loss == "squared":
        with np.errstate(over="ignore"):  # inf for labels near float64's limit: an MSE beyond its range
            mse = float(np.mean((np.sqrt(errors) * y_scale) ** 2))
        # Training MSE / Var(y), in standardised units (Var(y) = y_scale^2):
        # finite wherever the labels are.
        weight = (y_scale / y_scale.max()) ** 2
        relative_mse = float(np.mean(errors * weight) / np.mean(weight))
    exact = opts.loss == "squared" and relative_mse <= EXACT_FIT
    structure = None
    if refining and not stopped and opts.loss == "squared" and opts.alpha == 0 and opts.gaussian and not exact:
        # No silent local optimum: a residual that still correlates with the
        # inputs' score functions means the network misses a unit.
        _, structure, used = residual_direction(Xs, Ys, A1, b1, A2, b2, activation, rng)
        counter.count("residual_check", used * fraction)
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
    if sketch is not None:  # the final moments of the sample (the sketch has the pilot's range only)
        r_s = residual(Xs, Ys)
        op = DataMoment.from_source(ArraySource(Xs, r_s, block_rows, workers), r, counter, y=r_s)
    op.stage = "residual_check"
    z_final = third_moment_z(op, unit if opts.gaussian else inputs.L @ unit)
    unseen = np.flatnonzero(np.abs(z_final) < VISIBLE_Z).tolist()
    if unseen and not opts.refine:
        note(f"units {unseen} have no detectable third moment (|z| < {VISIBLE_Z}): the tensor stage cannot "
             f"identify them from these {n} samples; use refine=True or more samples", IdentifiabilityWarning)
    times["total"] = time.perf_counter() - start
    progress.done(times["total"], final_loss)
    sub = directions.subspace
    diagnostics = {
        "init": init,
        "task": opts.task,
        "inputs": inputs.to_dict(),
        "input_model": opts.input_model if isinstance(opts.input_model, str) else "score",
        "score": score_record,
        "control_variate": control_record,
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
        "data_passes": {stage: round(count, 1) for stage, count in data_counter.by_stage.items()},
        "one_pass": sketch.record if sketch is not None else None,
        "rows": {"n": n, "in_memory": Xs.shape[0]} if source is not None else {"n": n, "in_memory": n},
        "times": times,
        "warnings": notes,
    }
    return network(A1, b1, A2, b2, _plain(diagnostics))
