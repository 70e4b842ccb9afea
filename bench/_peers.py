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

    curve: list = field(default_factory=list)   # (seconds, relative test error)
    final_error: float = float("inf")
    seconds: float = 0.0
    A1: np.ndarray = None
    passes: float = None
    passes_note: str = ""
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

    def record(self, predict):
        """Evaluate predict() on the test set, log it; True if the run should stop."""
        now = self.elapsed()
        t0 = time.perf_counter()
        err = self.problem.relative_error(predict())
        self.curve.append((now, err))
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

def run_fastten(problem, budget, seed, variant="full"):
    """fastten.fit: variant "full" (default init, refined), "no-refine"
    (tensor stage and output layer only) or "random" (refinement from a
    random start). The callback stops the refinement at the budget."""
    from fastten import fit

    clock = Clock(problem, budget)

    def callback(network, info):
        return clock.record(lambda: network.predict(problem.X_test))

    kwargs = {"refine": False} if variant == "no-refine" else {"init": "random"} if variant == "random" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(problem.X, problem.y, problem.n_hidden, activation=problem.activation, random_state=seed,
                    callback=callback, **kwargs)
    seconds = clock.elapsed()
    final = problem.relative_error(model.predict(problem.X_test))
    curve = clock.curve + [(seconds, final)]  # the returned network (the best of the refinement rounds)
    diag = model.diagnostics
    passes = diag.get("data_passes", diag.get("data_passes_tensor_stage"))
    its, cg = diag.get("refinement_iterations"), diag.get("refinement_cg_iterations")
    if isinstance(passes, dict):  # passes per stage
        passes = sum(passes.values())
    return Run(curve=curve, final_error=final, seconds=seconds, A1=np.asarray(model.A1), passes=passes,
               passes_note="(fastten's count)", warnings=[str(w.message) for w in caught],
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
    stop = clock.record(predict)
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
        stop = clock.record(predict)
    seconds = clock.elapsed()
    A1 = weights()[0]
    return Run(curve=clock.curve, final_error=clock.curve[-1][1], seconds=seconds, A1=A1, passes=seen / n,
               passes_note="epochs",
               extra={"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "dtype": "float32"})


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
            stop = clock.record(lambda: _mlp_predict(problem, mlp))
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
        if clock.record(lambda: _mlp_predict(problem, mlp)):
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
