"""Symmetric third-order tensor decomposition: T ~ sum_j w_j v_j^(x)3.

``decompose(T, rank)`` takes a dense symmetric array or any
:class:`fastten.operators.TensorOperator` (the implicit moment of a data set,
a sketch) and runs one of four engines:

* ``"orthogonal"``: the robust tensor power method (Anandkumar et al. 2014)
  on T(W, W, W), with W a whitening of a definite second-order matrix
  (``second_moment``); without one, the components are assumed orthogonal
  already. An indefinite whitening matrix is refused (DESIGN 3.3: it
  silently loses components).
* ``"nonorthogonal"``: on the projected tensor, candidates from greedy
  growth (components added one at a time, strongest first) and from
  Jennrich's algorithm on random slice pairs (several trials), each scored by
  its residual after a short Levenberg-Marquardt polish; the best is polished
  to convergence and then, when the subspace came from the range finder,
  polished again by Levenberg-Marquardt in T's own dimension (through
  contractions; see _nonorth.polish_operator).
* ``"power"``: the power method run on the operator itself, in its full
  dimension, with deflation applied to the operator (for a sketch, on the
  sketch). Components must be orthogonal.
* ``"sketch"``: the same power method on a TensorSketch (Wang, Tung, Smola,
  Anandkumar 2015): T itself if it is one, else a sketch built from the
  dense array or, in one pass, from the data of a DataMoment. Each
  iteration then costs O(B (d + b log b)), independent of n.

``method="auto"`` picks "orthogonal" when ``second_moment`` is given and
definite, or, for an operator with ``second_moment_dot`` (a DataMoment), when
E[y S2] restricted to the found subspace is definite with condition number at
most WHITEN_MAX_COND (one more pass); else "nonorthogonal".

"orthogonal" and "nonorthogonal" work in a k-dimensional subspace found by a
randomised range finder on the operator (the columns T(I, u, u) for random u
lie in the span of the components; see _subspace): two rounds of two
batched contractions, so an implicit data moment is read a fixed small
number of times (five in all with the residual probes, six when "auto" checks a
DataMoment's second moment, plus at most n_polish for the full-dimension polish
when the range finder's subspace is smaller than d) and nothing of size d^2 or
d^3 is formed.

Odd order makes (w, v) and (-w, -v) the same component: results carry
w >= 0 and put the sign in v.
"""

import logging
import numbers
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _nonorth
from ._power import polish_in_place, power_method
from ._random import check_random_state
from ._validation import _as_real_array, check_int
from .operators import DataMoment, DenseTensor, as_operator
from .sketch import MIN_SIZE, TensorSketch

__all__ = ["decompose", "Decomposition", "ConvergenceWarning", "WhiteningError", "RankWarning"]

logger = logging.getLogger("fastten")

# Largest condition number of E[y S2] in the subspace for which "auto"
# whitens a DataMoment: beyond it, sampling noise in the small eigenvalues
# would be amplified (and their signs are not trustworthy).
WHITEN_MAX_COND = 10.0

_ZERO = "T: the tensor is zero on every probe (all contractions vanish); there is nothing to decompose"

# Largest entries of a dense tensor that the engines take as given; outside
# this range the tensor is rescaled first (squares and cubes of its
# contractions stay within float64's range of about 1e+-308).
DENSE_RANGE = (1e-100, 1e100)

METHODS = ("auto", "orthogonal", "nonorthogonal", "power", "sketch")


class ConvergenceWarning(UserWarning):
    """An iteration limit was reached before the stopping tolerance."""


class RankWarning(UserWarning):
    """The tensor does not support the requested rank."""


class ZeroTensorError(ValueError):
    """The tensor vanishes on every probe (private: fit's stages catch it
    when the data leave no moment to decompose; users see a ValueError)."""


class WhiteningError(ValueError):
    """The second-order matrix cannot whiten: it is indefinite or rank deficient."""


@dataclass
class Decomposition:
    """The result of :func:`decompose`: T ~ sum_j weights[j] * factors[:, j]^(x)3.

    Parameters
    ----------
    weights : numpy.ndarray, shape (r,)
        Component weights, >= 0, in decreasing order.
    factors : numpy.ndarray, shape (d, r)
        Unit components, one per column, in the order of the weights.
    method : str
        The engine that ran ("orthogonal", "nonorthogonal", "power" or
        "sketch").
    history : list
        Per component, in the order of the factors, its step sizes (power
        method: ``|theta_t - theta_{t-1}|`` of the winning restart;
        non-orthogonal: the relative change of the component per
        Levenberg-Marquardt step).
    n_restarts : int
        Restarts per component (power method) or slice trials (Jennrich).
    n_iter : int
        Iterations run in all.
    residual : float
        Relative residual estimated on random probes u of the operator,
        ``|T(I,u,u) - sum_j w_j (v_j.u)^2 v_j| / |T(I,u,u)|``.
    converged : bool
        Whether every component reached the tolerance.
    component_converged : numpy.ndarray of bool, shape (r,)
        Per component (the non-orthogonal polish converges jointly, so its
        entries are equal).
    loss_history : list of float
        The non-orthogonal polish's relative residual per step.
    warnings : list of str
        Messages also issued as Python warnings.
    times : dict
        Seconds per stage.
    """

    weights: np.ndarray
    factors: np.ndarray
    method: str
    history: list
    n_restarts: int
    n_iter: int
    residual: float
    converged: bool
    component_converged: np.ndarray
    loss_history: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    times: dict = field(default_factory=dict)

    def to_dense(self):
        """The dense reconstruction sum_j weights[j] factors[:, j]^(x)3.

        For tests and small d only: it allocates d^3 numbers.

        Returns
        -------
        numpy.ndarray, shape (d, d, d)
            The symmetric tensor of the components.
        """
        return np.einsum("j,aj,bj,cj->abc", self.weights, self.factors, self.factors, self.factors)


def whitening(M, rank):
    """(W, B) with W^T M W = +-I on the top-`rank` eigenspace of M.

    B = pinv(W^T) maps whitened vectors back. Raises WhiteningError when the
    top-`rank` eigenvalues (by magnitude) have mixed signs or vanish.
    """
    vals, vecs = np.linalg.eigh(M)
    top = np.argsort(-np.abs(vals))[:rank]
    vals, vecs = vals[top], vecs[:, top]
    scale = np.abs(vals).max(initial=0.0)
    if scale == 0 or np.abs(vals).min() <= 1e-12 * scale * M.shape[0]:
        raise WhiteningError(
            f"second_moment: its top {rank} eigenvalues include zero ({np.array2string(vals, precision=3)}); "
            f"it cannot whiten rank {rank}"
        )
    if not (np.all(vals > 0) or np.all(vals < 0)):
        raise WhiteningError(
            f"second_moment is indefinite on its top-{rank} eigenspace (eigenvalues "
            f"{np.array2string(np.sort(vals), precision=3)}); whitening with |eigenvalues| does not "
            f"orthogonalise the components (DESIGN 3.3): use method='nonorthogonal'"
        )
    root = np.sqrt(np.abs(vals))
    return vecs / root, vecs * root


def _given_subspace(op, rank, U):
    """The quantities of _subspace for a basis U supplied by the caller."""
    m = U.shape[1]
    Rm = op.project(U)
    Q, s, _ = np.linalg.svd(Rm.reshape(m, m * m), full_matrices=False)
    return U, Rm, Q[:, :rank], s


def _subspace(op, rank, oversample, n_rounds, rng):
    """(U, Rm, Q, s): an orthonormal (d, m) basis U holding the components,
    m = min(d, rank + oversample), the projected tensor Rm = T(U, U, U), the
    leading rank-dimensional subspace Q (m, rank) of Rm, and the singular
    values s of Rm's flattening (their drop after the rank-th is the gap).

    A randomised range finder: the columns T(I, u, u) lie in the span of the
    components, so m of them for random unit u span it (approximately, under
    noise). Q, the left singular vectors of Rm's flattening, uses all of the
    projected tensor's energy, not only the probes'. Later rounds probe with
    random unit vectors inside U Q (plus `oversample` fresh ones): there
    (v_j . u)^2 ~ 1/rank instead of 1/d, so the signal in the probes grows
    by d/rank. Each round costs two batched contractions.
    """
    d = op.dim
    m = min(d, rank + oversample)
    W = None
    for _ in range(n_rounds):
        Omega = rng.standard_normal((d, m))
        if W is not None:
            Omega[:, :rank] = W @ rng.standard_normal((rank, rank))
        Omega /= np.linalg.norm(Omega, axis=0)
        U = np.linalg.svd(op.iuu(Omega), full_matrices=False)[0]
        Rm = op.project(U)
        Q, s, _ = np.linalg.svd(Rm.reshape(m, m * m), full_matrices=False)
        Q = Q[:, :rank]
        W = U @ Q
    return U, Rm, Q, s


def _probe_residual(op, weights, factors, rng, n_probes=8):
    P = rng.standard_normal((op.dim, n_probes))
    P /= np.linalg.norm(P, axis=0)
    exact = op.iuu(P)
    C = factors.T @ P
    model = factors @ (weights[:, None] * C * C)
    return float(np.linalg.norm(exact - model) / max(np.linalg.norm(exact), np.finfo(float).tiny))


def _sketch_of(op, b, B, rng):
    if isinstance(op, TensorSketch):
        return op
    if isinstance(op, DataMoment):
        return TensorSketch.from_data(op.X, op.y, b, B, rng)
    if isinstance(op, DenseTensor):
        return TensorSketch.from_dense(op.T, b, B, rng)
    raise TypeError(f"T: method='sketch' needs a dense array, a DataMoment or a TensorSketch, "
                    f"got {type(op).__name__}")


def _check_second_moment(M, dim):
    M = _as_real_array(M, "second_moment")
    if M.shape != (dim, dim):
        raise ValueError(f"second_moment: expected a symmetric array of shape ({dim}, {dim}), got shape {M.shape}")
    M = M.astype(np.float64)
    if not np.isfinite(M).all():
        raise ValueError("second_moment: expected finite values, got NaN or infinite entries")
    if np.abs(M - M.T).max() > 1e-10 * max(np.abs(M).max(), np.finfo(float).tiny):
        raise ValueError("second_moment: expected a symmetric matrix, got M != M.T")
    return M


def decompose(T, rank, *, method="auto", second_moment=None, n_restarts=10, n_iter=30,
              tol=1e-10, oversample=10, n_subspace_rounds=2, n_polish=10, subspace=None,
              sketch_size=None, n_sketches=None, random_state=None):
    """Rank-``rank`` symmetric CP decomposition of a third-order tensor.

    The engines and how ``"auto"`` picks one are in the API overview
    (docs/api.md); none forms more than the d^3 numbers of a dense input.

    Parameters
    ----------
    T : array (d, d, d) or TensorOperator
        A dense symmetric array (checked for shape, finiteness and symmetry
        to 1e-10) or an operator (:class:`fastten.operators.DataMoment`,
        :class:`fastten.ScoreMoment`,
        :class:`fastten.sketch.TensorSketch`, or a user's subclass of
        :class:`fastten.operators.TensorOperator`).
    rank : int
        The number of components, 1 <= rank <= d.
    method : {"auto", "orthogonal", "nonorthogonal", "power", "sketch"}
        The engine. "orthogonal": components orthogonal, or
        ``second_moment`` definite; "nonorthogonal": general signed,
        non-orthogonal components (Jennrich, then Levenberg-Marquardt);
        "power": the robust power method on the operator itself; "sketch":
        the same on a tensor sketch; "auto": "orthogonal" when whitening is
        safe, else "nonorthogonal".
    second_moment : array (d, d), optional
        A symmetric matrix sum_j m_j v_j v_j^T sharing T's components, used to
        whiten on the orthogonal path; it must be definite on its top-`rank`
        eigenspace.
    n_restarts, n_iter : int
        Power method: restarts per component and iterations per restart (the
        winner gets n_iter more). Non-orthogonal: slice trials and the
        Levenberg-Marquardt iteration limit (10 * n_iter).
    tol : float
        Stopping tolerance (power step size, or relative loss decrease).
    oversample : int
        Extra probes of the range finder.
    n_subspace_rounds : int
        Rounds of the range finder (two contractions each; see _subspace).
    n_polish : int
        Most contractions of the full-dimension polish after the projected
        solve (it stops earlier at `tol`): batched power sweeps on the
        orthogonal path without whitening, Levenberg-Marquardt trial steps on
        the non-orthogonal path when the range finder chose the subspace.
    subspace : array (d, m), optional
        An orthonormal basis, m >= rank, known to hold the components (for
        example from a second-order moment); replaces the range finder.
    sketch_size, n_sketches : int, optional
        method="sketch": the sketch length b and the number B of independent
        sketches (defaults: Wang et al.'s 2**11 and 20; see docs/performance.md).
    random_state : None, int or numpy.random.Generator
        Drives every random choice.

    Returns
    -------
    Decomposition
        The weights (decreasing, >= 0), the unit factors and how the engine
        ran.

    Raises
    ------
    ValueError, TypeError
        A bad argument, naming it; ``ValueError`` also when the tensor is
        zero on every probe (for instance all labels zero).
    WhiteningError
        ``method="orthogonal"`` with a ``second_moment`` that is indefinite
        or singular on its top-``rank`` eigenspace.
    FloatingPointError
        When the engine produced non-finite factors (a tensor too badly
        conditioned for ``rank``).

    Warns
    -----
    RankWarning
        When the flattening of the projected tensor shows no gap after the
        ``rank``-th singular value, or a component comes back with zero
        weight (factors stay finite and unit).
    ConvergenceWarning
        When an iteration limit is reached before ``tol``.
    """
    op = as_operator(T)
    d = op.dim
    scale = 1.0
    if isinstance(op, DenseTensor):
        # The engines square and cube contractions of T: a dense tensor whose
        # entries are far from 1 is decomposed divided by a power of two
        # (exact), and the weights are scaled back (they are linear in T).
        top = float(np.abs(op.T).max())
        if top > 0 and not DENSE_RANGE[0] <= top <= DENSE_RANGE[1]:
            scale = float(np.ldexp(1.0, np.frexp(top)[1] - 1))
            op = DenseTensor._trusted(op.T / scale, symmetrise=False)
    rank = check_int(rank, "rank", 1, d)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    n_restarts = check_int(n_restarts, "n_restarts", 1)
    n_iter = check_int(n_iter, "n_iter", 1)
    oversample = check_int(oversample, "oversample", 0)
    n_subspace_rounds = check_int(n_subspace_rounds, "n_subspace_rounds", 1)
    n_polish = check_int(n_polish, "n_polish", 0)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    M = None if second_moment is None else _check_second_moment(second_moment, d)
    if subspace is not None:
        subspace = _as_real_array(subspace, "subspace").astype(np.float64)
        if subspace.ndim != 2 or subspace.shape[0] != d or not rank <= subspace.shape[1] <= d:
            raise ValueError(f"subspace: expected an orthonormal basis of shape ({d}, m) with {rank} <= m <= {d}, "
                             f"got shape {subspace.shape}")
        if not np.allclose(subspace.T @ subspace, np.eye(subspace.shape[1]), atol=1e-8):
            raise ValueError("subspace: expected orthonormal columns (U^T U = I)")
        if method in ("power", "sketch"):
            raise ValueError(f"subspace: not used by method={method!r}")
        if M is not None:
            raise ValueError("subspace, second_moment: pass one of them (whitening by second_moment "
                             "defines its own subspace)")
    if method != "sketch" and (sketch_size is not None or n_sketches is not None):
        raise ValueError(f"sketch_size, n_sketches: only used with method='sketch', got method={method!r}")
    if sketch_size is not None:
        sketch_size = check_int(sketch_size, "sketch_size", MIN_SIZE)
    if n_sketches is not None:
        n_sketches = check_int(n_sketches, "n_sketches", 1)
    rng = check_random_state(random_state)
    issued = []
    times = {}

    def warn(message, category):
        issued.append(message)
        warnings.warn(message, category, stacklevel=3)

    start = time.perf_counter()
    loss_history = []
    # "auto" on an operator that knows its second moment (a DataMoment): look
    # for a definite, well-conditioned whitening inside the found subspace.
    data_whitening = method == "auto" and M is None and hasattr(op, "second_moment_dot")
    if method == "auto":
        method = "nonorthogonal"
        if M is not None:
            try:
                whitening(M, rank)
                method = "orthogonal"
            except WhiteningError as exc:
                logger.info("decompose: %s; using the non-orthogonal engine", exc)

    if method in ("power", "sketch"):
        engine_op = _sketch_of(op, sketch_size, n_sketches, rng) if method == "sketch" else op
        times["sketch"] = time.perf_counter() - start
        result = power_method(engine_op, rank, n_restarts=n_restarts, n_iter=n_iter, tol=tol, rng=rng)
        weights, factors, history, converged = result.weights, result.vectors, result.history, result.converged
        total_iter = result.n_iter
    else:
        whitened = M is not None and method == "orthogonal"
        if whitened:
            W, B = whitening(M, rank)
            R = op.project(W)
            if not np.any(R):
                raise ZeroTensorError(_ZERO)
        else:
            if subspace is None:
                U, Rm, Q, s = _subspace(op, rank, oversample, n_subspace_rounds, rng)
            else:
                U, Rm, Q, s = _given_subspace(op, rank, subspace)
            if s[0] == 0:
                raise ZeroTensorError(_ZERO)
            R = np.einsum("abc,ax,by,cz->xyz", Rm, Q, Q, Q, optimize=True)
            B = U @ Q
            if data_whitening:
                M2 = B.T @ op.second_moment_dot(B)  # one more pass: E[y S2] in the subspace
                M2 = (M2 + M2.T) / 2
                ev = np.linalg.eigvalsh(M2)
                definite = np.all(ev > 0) or np.all(ev < 0)
                ev = np.abs(ev)
                if definite and ev.min() >= ev.max() / WHITEN_MAX_COND:
                    Wk, Bk = whitening(M2, rank)
                    R = np.einsum("abc,ax,by,cz->xyz", R, Wk, Wk, Wk, optimize=True)
                    B = B @ Bk
                    method, whitened = "orthogonal", True
                    logger.info("decompose: E[y S2] is definite in the subspace (condition %.3g): "
                                "orthogonal engine", ev.max() / ev.min())
            below = s[rank] / s[0] if s.shape[0] > rank else 0.0
            if s[rank - 1] <= 1e-12 * s[0] or s[rank - 1] < 1.5 * below * s[0]:
                warn(f"rank {rank}: no clear gap after the {rank}-th singular value of the projected "
                     f"tensor's flattening (s[{rank - 1}]/s[0] = {s[rank - 1] / s[0]:.3g} against "
                     f"s[{rank}]/s[0] = {below:.3g}); the tensor, or its sampling noise, does not single "
                     f"out {rank} components", RankWarning)
        times["project"] = time.perf_counter() - start
        if method == "orthogonal":
            result = power_method(DenseTensor._trusted(R), rank, n_restarts=n_restarts, n_iter=n_iter,
                                  tol=tol, rng=rng)
            V, small_w, history, converged = result.vectors, result.weights, result.history, result.converged
            total_iter = result.n_iter
        else:
            # Jennrich needs a square factor, so it runs on the rank-dimensional
            # R; the growth and the polish run on the m-dimensional Rm when
            # there is one, so a component that the truncation to rank
            # dimensions cut (a weak one, under noise) can still be reached.
            big = not whitened
            small_w, V, loss_history, ok, history, record = _nonorth.solve(
                Rm if big else R, rank, rng, Q=Q if big else None, small=R, n_trials=n_restarts,
                max_iter=10 * n_iter, tol=tol)
            logger.debug("decompose: non-orthogonal candidates %s, kept %s", record["screened"], record["chosen"])
            if big:
                B = U
            converged = np.full(rank, ok)
            total_iter = len(loss_history) - 1
        # Back to the caller's coordinates. With T = sum lam_j a_j^(x)3 and
        # R = T(W, W, W) = sum nu_j v_j^(x)3, B v_j = sqrt|m_j| a_j, so
        # lam_j a_j^(x)3 = nu_j (B v_j)^(x)3: the factor is B v_j normalised
        # and the weight nu_j |B v_j|^3 (|B v_j| = 1 for an orthonormal U).
        back = B @ V
        norms = np.linalg.norm(back, axis=0)
        factors = back / np.where(norms > 0, norms, 1.0)
        weights = small_w * norms ** 3
        if np.any(norms == 0):
            # A component the engine drove to zero (the tensor has lower rank):
            # weight 0 and a unit vector orthogonal to the others, flagged below.
            zero = norms == 0
            basis = np.linalg.qr(np.hstack([factors[:, ~zero], B, rng.standard_normal((d, rank))]))[0]
            factors[:, zero] = basis[:, (~zero).sum(): (~zero).sum() + zero.sum()]
            weights[zero] = 0.0
        if method == "orthogonal" and not whitened and n_polish:
            # Orthogonal components in T's own coordinates: sweeps in the full
            # dimension remove what the projection lost.
            weights, factors, steps = polish_in_place(op, weights, factors, n_polish, tol=tol)
            logger.debug("decompose: full-dimension polish steps %s", steps)
        elif method == "nonorthogonal" and not whitened and subspace is None and U.shape[1] < d and n_polish:
            # The range finder's subspace holds the components only up to the
            # noise of its probes: Levenberg-Marquardt in T's own dimension
            # removes what the projection lost (a subspace given by the
            # caller is trusted instead).
            weights, factors, steps, full_ok = _nonorth.polish_operator(op, weights, factors,
                                                                        max_steps=n_polish, tol=tol)
            logger.debug("decompose: full-dimension polish steps %s", steps)
            if not full_ok:
                warn(f"decompose: the full-dimension polish did not reach tol={tol:g} within "
                     f"n_polish={n_polish} contractions (last relative step "
                     f"{steps[-1] if steps else float('nan'):.3g})", ConvergenceWarning)
    if not np.all(np.isfinite(weights)) or not np.all(np.isfinite(factors)):
        raise FloatingPointError(
            "decompose: the engine produced non-finite factors; the tensor is likely too badly "
            "conditioned for rank {rank} (try a smaller rank or method='nonorthogonal')".format(rank=rank))
    negligible = np.abs(weights) <= 1e-12 * max(np.abs(weights).max(), np.finfo(float).tiny)
    if np.abs(weights).max() == 0:
        raise ZeroTensorError(_ZERO)
    if np.any(negligible):
        warn(f"rank {rank} is not supported by the tensor: {int(negligible.sum())} of the {rank} "
             f"components have zero weight", RankWarning)
    order = np.argsort(-np.abs(weights))
    weights, factors = weights[order], factors[:, order]
    history = [history[j] for j in order]
    converged = np.asarray(converged)[order]
    flip = weights < 0
    weights[flip] *= -1
    factors[:, flip] *= -1
    if not np.all(converged):
        warn(f"decompose: {int(np.sum(~np.asarray(converged)))} of {rank} components did not reach "
             f"tol={tol:g} within n_iter={n_iter}", ConvergenceWarning)
    residual = _probe_residual(op, weights, factors, rng)
    weights = weights * scale
    times["total"] = time.perf_counter() - start
    logger.debug("decompose: method=%s rank=%d residual=%.3g", method, rank, residual)
    return Decomposition(weights, factors, method, history, n_restarts, total_iter, residual,
                         bool(np.all(converged)), converged, loss_history, issued, times)
