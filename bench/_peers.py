"""The methods compared by ``python -m bench sgd``, each run on one problem.

Every runner takes a :class:`Problem`, a wall-clock budget and a seed, and
returns a :class:`Run`: the relative test error against wall time (a point
per epoch, refinement step or function evaluation), the fitted first layer,
data passes and warnings. The time spent evaluating the test error is
measured and subtracted from the method's clock (:class:`Clock`), so the
curves show training time only. A run stops at the budget, or when the
relative test error falls to ``floor`` (below every threshold reported).

The peers (PyTorch, scikit-learn) are imported inside their runners: a
missing one raises :class:`MissingPeer` with the line that installs it.
"""

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import expit

INSTALL_HINT = 'pip install -e ".[bench]"'
FLOOR = 1e-8  # stop a run once its relative test error is this small


class MissingPeer(Exception):
    """An optional peer is not installed; the message says how to add it."""


class _OverBudget(Exception):
    """Raised inside scikit-learn's L-BFGS objective to end the run."""


@dataclass
class Problem:
    """Training data, noise-free test outputs and the planted first layer."""

    name: str
    seed: int
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    f_test: np.ndarray
    A1: np.ndarray
    activation: str

    @property
    def n_hidden(self):
        return self.A1.shape[1]

    def relative_error(self, prediction):
        """mean((prediction - f_test)^2) / Var(f_test), in float64; inf if not finite."""
        err = float(np.mean((np.asarray(prediction, dtype=np.float64) - self.f_test) ** 2) / np.var(self.f_test))
        return err if np.isfinite(err) else float("inf")


@dataclass
class Run:
    """One method on one problem: the error curve and what it ended with."""

    curve: list = field(default_factory=list)   # (seconds, relative test error, data passes so far or None)
    final_error: float = float("inf")
    seconds: float = 0.0
    A1: np.ndarray = None
    passes: float = None
    passes_note: str = ""
    passes_per_point: bool = True  # False: only the total is known (fastten), an upper bound on passes to a threshold
    warnings: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Clock:
    """A method's wall clock, less the time spent evaluating it."""

    def __init__(self, problem, budget, floor=FLOOR):
        self.problem, self.budget, self.floor = problem, budget, floor
        self.curve = []
        self.excluded = 0.0
        self.start = time.perf_counter()

    def elapsed(self):
        return time.perf_counter() - self.start - self.excluded

    def over(self):
        return self.elapsed() >= self.budget

    def record(self, predict, passes=None):
        """Evaluate predict() on the test set, log it with the data passes
        made so far; True if the run should stop."""
        now = self.elapsed()
        t0 = time.perf_counter()
        err = self.problem.relative_error(predict())
        self.curve.append((now, err, passes))
        self.excluded += time.perf_counter() - t0
        return now >= self.budget or err <= self.floor or not np.isfinite(err)


def worst_cos(true_A1, est_A1):
    """Smallest |cos| between planted and fitted first-layer columns after
    matching them one to one (Hungarian, maximising the total |cos|)."""
    if est_A1 is None or not np.all(np.isfinite(est_A1)):
        return None  # no first layer to compare, or a diverged one (NaN weights)
    P = true_A1 / np.linalg.norm(true_A1, axis=0)
    norms = np.linalg.norm(est_A1, axis=0)
    Q = est_A1 / np.where(norms > 0, norms, 1.0)
    C = np.abs(P.T @ Q)
    rows, cols = linear_sum_assignment(-C)
    return float(C[rows, cols].min())


def _numpy_activation(name, t):
    if name == "sigmoid":
        return expit(t)
    if name == "tanh":
        return np.tanh(t)
    return np.logaddexp(0.0, t)


# ----------------------------------------------------------------------------
# fastten
# ----------------------------------------------------------------------------

def run_fastten(problem, budget, seed, variant="full", threads=None):
    """fastten.fit: variant "full" (default init, refined), "no-refine"
    (tensor stage and output layer only) or "random" (refinement from a
    random start), on ``threads`` threads (its n_threads; None: its
    default, every core). The callback stops the refinement at the budget."""
    from fastten import fit

    clock = Clock(problem, budget)

    def callback(network, info):
        return clock.record(lambda: network.predict(problem.X_test))

    kwargs = {"refine": False} if variant == "no-refine" else {"init": "random"} if variant == "random" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(problem.X, problem.y, problem.n_hidden, activation=problem.activation, random_state=seed,
                    callback=callback, n_threads=threads, **kwargs)
    seconds = clock.elapsed()
    final = problem.relative_error(model.predict(problem.X_test))
    diag = model.diagnostics
    passes = diag.get("data_passes", diag.get("data_passes_tensor_stage"))
    its, cg = diag.get("refinement_iterations"), diag.get("refinement_cg_iterations")
    if isinstance(passes, dict):  # passes per stage
        passes = sum(passes.values())
    # The callback does not see passes per step: only the last point (the
    # returned network, the best of the refinement rounds) carries the total.
    curve = clock.curve + [(seconds, final, passes)]
    return Run(curve=curve, final_error=final, seconds=seconds, A1=np.asarray(model.A1), passes=passes,
               passes_note="(fastten's count)", passes_per_point=False, warnings=[str(w.message) for w in caught],
               extra={"times": diag.get("times"), "data_passes": diag.get("data_passes"),
                      "refinement_iterations": its, "refinement_cg_iterations": cg})


# ----------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------

def _torch():
    try:
        import torch
    except ImportError:
        raise MissingPeer(f"PyTorch is not installed ({INSTALL_HINT} adds it)") from None
    return torch


def run_torch(problem, budget, seed, optimizer, lr, batch_size):
    """A two-layer MLP of the same width and activation, float32, MSE loss,
    mini-batches over a fresh shuffle each epoch; Adam, or SGD with momentum
    0.9. Errors are evaluated in float64 from the float32 weights."""
    torch = _torch()
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}[problem.activation]
    torch.manual_seed(seed)
    n, d = problem.X.shape
    k = problem.n_hidden
    clock = Clock(problem, budget)
    X = torch.from_numpy(problem.X.astype(np.float32))
    y = torch.from_numpy(problem.y.astype(np.float32))
    first, second = torch.nn.Linear(d, k), torch.nn.Linear(k, 1)
    model = torch.nn.Sequential(first, act(), second)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)

    def weights():
        with torch.no_grad():
            return (first.weight.double().numpy().T, first.bias.double().numpy(),
                    second.weight.double().numpy()[0], float(second.bias.item()))

    def predict():
        A1, b1, a2, b2 = weights()
        return _numpy_activation(problem.activation, problem.X_test @ A1 + b1) @ a2 + b2

    loss_fn = torch.nn.MSELoss()
    seen = 0
    stop = clock.record(predict, 0.0)
    while not stop:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            seen += len(idx)
            if clock.over():
                break
        stop = clock.record(predict, seen / n)
    seconds = clock.elapsed()
    A1 = weights()[0]
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=seconds, A1=A1, passes=seen / n,
               passes_note="epochs",
               extra={"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "dtype": "float32"})


def run_torch_lbfgs(problem, budget, seed, history_size, dtype="float64"):
    """The same MLP trained by full-batch L-BFGS (torch.optim.LBFGS, strong
    Wolfe line search, lr 1, the given history size; gradient and change
    tolerances 0, so only the budget or the error floor ends it), in float32
    or float64. One function evaluation = loss and gradient on all n rows =
    one data pass. The test error is logged at every evaluation that lowers
    the training loss (line-search trials that do not are skipped); the
    weights of the lowest training loss are the run's result."""
    torch = _torch()
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}[problem.activation]
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    torch.manual_seed(seed)
    n, d = problem.X.shape
    k = problem.n_hidden
    X = torch.from_numpy(np.ascontiguousarray(problem.X, dtype=dtype))
    y = torch.from_numpy(np.ascontiguousarray(problem.y, dtype=dtype))
    first, second = torch.nn.Linear(d, k), torch.nn.Linear(k, 1)
    model = torch.nn.Sequential(first, act(), second).to(tdtype)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=10**9, max_eval=None, tolerance_grad=0.0,
                            tolerance_change=0.0, history_size=history_size, line_search_fn="strong_wolfe")
    clock = Clock(problem, budget)

    def weights():
        with torch.no_grad():
            return (first.weight.double().numpy().T.copy(), first.bias.double().numpy().copy(),
                    second.weight.double().numpy()[0].copy(), float(second.bias.item()))

    def predict(params):
        A1, b1, a2, b2 = params
        return _numpy_activation(problem.activation, problem.X_test @ A1 + b1) @ a2 + b2

    loss_fn = torch.nn.MSELoss()
    evals, best = [0], {"loss": float("inf"), "params": weights()}

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(X).squeeze(1), y)
        loss.backward()
        evals[0] += 1
        value = float(loss.item())
        stop = clock.over()
        if value < best["loss"]:  # the weights being evaluated are the model's now
            best["loss"], best["params"] = value, weights()
            stop = clock.record(lambda: predict(best["params"]), evals[0])
        elif not np.isfinite(value) and not np.isfinite(best["loss"]):
            stop = True
        if stop:
            raise _OverBudget
        return loss

    with contextlib.suppress(_OverBudget):
        clock.record(lambda: predict(best["params"]), 0)
        while True:
            opt.step(closure)  # returns only when L-BFGS breaks down (no descent direction); go on
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=clock.elapsed(), A1=best["params"][0],
               passes=evals[0], passes_note="function evaluations",
               extra={"optimizer": "lbfgs", "history_size": history_size, "dtype": dtype,
                      "line_search": "strong_wolfe"})


# ----------------------------------------------------------------------------
# SciPy: Levenberg-Marquardt (MINPACK)
# ----------------------------------------------------------------------------

LM_MEMORY_FRACTION = 0.8  # of MemAvailable, for three copies of the n x p Jacobian


def lm_memory_note(n, d, k):
    """None if the SciPy peer's Jacobians fit in memory, else why not."""
    need, have = lm_jacobian_bytes(n, d, k), available_bytes()
    if have is None or need <= LM_MEMORY_FRACTION * have:
        return None
    return (f"needs about {need / 2**30:.1f} GiB for its {n:,} x {d * k + 2 * k + 1} Jacobians, "
            f"{have / 2**30:.1f} GiB available")


def available_bytes():
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def _activation_and_derivative(name):
    if name == "sigmoid":
        def pair(Z):
            S = expit(Z)
            return S, S * (1.0 - S)
    elif name == "tanh":
        def pair(Z):
            T = np.tanh(Z)
            return T, 1.0 - T * T
    else:
        def pair(Z):
            return np.logaddexp(0.0, Z), expit(Z)
    return pair


MINPACK_FLOPS = 1e9  # QR of a Jacobian too large for the caches, unblocked: measured 0.5-1 GFLOP/s here


def minpack_iteration_seconds(n, d, k):
    """Rough time of one MINPACK LM iteration (a QR of the n x p Jacobian,
    2 n p^2 flops, no BLAS), which the budget cannot interrupt."""
    p = d * k + 2 * k + 1
    return 2.0 * n * p * p / MINPACK_FLOPS


def lm_unpack(theta, d, k):
    """(A1 (d x k), b1, a2, b2) from the flat parameters [A1 raveled row-major, b1, a2, b2]."""
    dk = d * k
    return theta[:dk].reshape(d, k), theta[dk:dk + k], theta[dk + k:dk + 2 * k], theta[-1]


def lm_residuals(theta, X, y, k, activation):
    """f(X) - y for the network with flat parameters theta."""
    A1, b1, a2, b2 = lm_unpack(theta, X.shape[1], k)
    H, _ = _activation_and_derivative(activation)(X @ A1 + b1)
    return H @ a2 + (b2 - y)


def lm_jacobian(theta, X, k, activation):
    """The n x p Jacobian of lm_residuals, analytic, as one dense array."""
    n, d = X.shape
    p = d * k + 2 * k + 1
    A1, b1, a2, b2 = lm_unpack(theta, d, k)
    H, dH = _activation_and_derivative(activation)(X @ A1 + b1)
    G = dH * a2
    J = np.empty((n, p))
    # Column i*k + j of the A1 block is X[:, i] * G[:, j] (A1 raveled row-major):
    # write the products straight into J through a strided (n, d, k) view.
    block = np.lib.stride_tricks.as_strided(J, shape=(n, d, k), strides=(8 * p, 8 * k, 8))
    np.multiply(X[:, :, None], G[:, None, :], out=block)
    J[:, d * k:d * k + k] = G
    J[:, d * k + k:d * k + 2 * k] = H
    J[:, -1] = 1.0
    return J


def lm_jacobian_bytes(n, d, k):
    """Memory the scipy LM peer needs for its Jacobian: ours plus MINPACK's
    copy plus one in flight (float64, n x p, p = dk + 2k + 1)."""
    return 3 * 8 * n * (d * k + 2 * k + 1)


def run_scipy_lm(problem, budget, seed, method="lm"):
    """scipy.optimize.least_squares on the residuals f(x_i) - y_i, float64,
    with the analytic Jacobian (a dense n x p array), tolerances at their
    smallest, started like PyTorch's default Linear initialisation (uniform
    in +-1/sqrt(fan-in)). method "lm": MINPACK's Levenberg-Marquardt (lmder,
    a QR of the whole Jacobian every iteration, O(n p^2), not interruptible);
    "trf-lsmr": SciPy's trust-region method with the damped (regularised)
    Gauss-Newton step solved by LSMR, products with the Jacobian only. Data
    passes = residual evaluations + Jacobian evaluations. The test error is
    logged at every residual evaluation that lowers the loss (the methods
    accept only such steps); the budget ends the run from inside the residual
    or Jacobian function, so a run may overrun it by one iteration."""
    from scipy.optimize import least_squares

    n, d = problem.X.shape
    k = problem.n_hidden
    p = d * k + 2 * k + 1
    X = np.ascontiguousarray(problem.X, dtype=np.float64)
    y = np.asarray(problem.y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    theta0 = np.concatenate([rng.uniform(-1, 1, d * k + k) / np.sqrt(d), rng.uniform(-1, 1, k + 1) / np.sqrt(k)])

    def predict(theta):
        A1, b1, a2, b2 = lm_unpack(theta, d, k)
        return _numpy_activation(problem.activation, problem.X_test @ A1 + b1) @ a2 + b2

    clock = Clock(problem, budget)
    counts = {"fun": 0, "jac": 0}
    best = {"cost": float("inf"), "theta": theta0.copy()}

    def residuals(theta):
        r = lm_residuals(theta, X, y, k, problem.activation)
        counts["fun"] += 1
        cost = float(r @ r)
        stop = clock.over()
        if cost < best["cost"]:
            best["cost"], best["theta"] = cost, theta.copy()
            stop = clock.record(lambda: predict(best["theta"]), counts["fun"] + counts["jac"])
        if stop:
            raise _OverBudget
        return r

    def jacobian(theta):
        J = lm_jacobian(theta, X, k, problem.activation)
        counts["jac"] += 1
        if clock.over():
            raise _OverBudget
        return J

    eps = np.finfo(np.float64).eps
    status = "budget"
    with contextlib.suppress(_OverBudget):
        clock.record(lambda: predict(theta0), 0)
        if method == "lm":
            result = least_squares(residuals, theta0, jac=jacobian, method="lm", ftol=eps, xtol=eps, gtol=eps,
                                   max_nfev=10**9)
        else:
            result = least_squares(residuals, theta0, jac=jacobian, method="trf", tr_solver="lsmr", ftol=eps,
                                   xtol=eps, gtol=eps, max_nfev=10**9)
        status = result.message
    A1 = lm_unpack(best["theta"], d, k)[0].copy()
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=clock.elapsed(), A1=A1,
               passes=counts["fun"] + counts["jac"], passes_note="function + Jacobian evaluations",
               extra={"residual_evaluations": counts["fun"], "jacobian_evaluations": counts["jac"],
                      "status": status, "jacobian_mb": 8 * n * p / 2**20})


# ----------------------------------------------------------------------------
# scikit-learn
# ----------------------------------------------------------------------------

SKLEARN_ACTIVATION = {"sigmoid": "logistic", "tanh": "tanh"}


def _mlp(problem, seed, **kwargs):
    try:
        from sklearn.neural_network import MLPRegressor
    except ImportError:
        raise MissingPeer(f"scikit-learn is not installed ({INSTALL_HINT} adds it)") from None
    if problem.activation not in SKLEARN_ACTIVATION:
        raise MissingPeer(f"scikit-learn's MLPRegressor has no {problem.activation} activation")
    return MLPRegressor(hidden_layer_sizes=(problem.n_hidden,), activation=SKLEARN_ACTIVATION[problem.activation],
                        alpha=0.0, random_state=seed, **kwargs)


def _mlp_predict(problem, mlp):
    W0, W1 = mlp.coefs_
    c0, c1 = mlp.intercepts_
    return _numpy_activation(problem.activation, problem.X_test @ W0 + c0) @ W1[:, 0] + c1[0]


def run_sklearn_adam(problem, budget, seed):
    """MLPRegressor(solver="adam"), defaults (batch 200, lr 1e-3) but alpha=0;
    one partial_fit call (one epoch) between evaluations."""
    mlp = _mlp(problem, seed, solver="adam")
    clock = Clock(problem, budget)
    epochs = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stop = False
        while not stop:
            mlp.partial_fit(problem.X, problem.y)
            epochs += 1
            stop = clock.record(lambda: _mlp_predict(problem, mlp), epochs)
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=clock.elapsed(), A1=mlp.coefs_[0].copy(),
               passes=epochs, passes_note="epochs", warnings=sorted({str(w.message) for w in caught}),
               extra={"batch_size": 200, "lr": 1e-3})


def run_sklearn_lbfgs(problem, budget, seed):
    """MLPRegressor(solver="lbfgs"), alpha=0, tol=0, unlimited iterations: one
    L-BFGS run, its objective wrapped to log the test error at every function
    evaluation (one data pass each) and to end the run at the budget."""
    mlp = _mlp(problem, seed, solver="lbfgs", max_iter=10**7, max_fun=10**8, tol=0.0)
    if not hasattr(mlp, "_loss_grad_lbfgs"):
        raise MissingPeer("this scikit-learn has no MLPRegressor._loss_grad_lbfgs to log L-BFGS progress")
    clock = Clock(problem, budget)
    objective = mlp._loss_grad_lbfgs
    evals = [0]

    def logged(packed, *args, **kwargs):
        out = objective(packed, *args, **kwargs)  # unpacks packed into coefs_
        evals[0] += 1
        if clock.record(lambda: _mlp_predict(problem, mlp), evals[0]):
            raise _OverBudget
        return out

    mlp._loss_grad_lbfgs = logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(_OverBudget):  # the budget ran out: coefs_ hold the last evaluation
            mlp.fit(problem.X, problem.y)
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=clock.elapsed(), A1=mlp.coefs_[0].copy(),
               passes=evals[0], passes_note="function evaluations",
               warnings=sorted({str(w.message) for w in caught}))
