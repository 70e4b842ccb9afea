"""Scales, signs and biases of the hidden units from low-order moments (DESIGN 4.4).

The tensor stage gives unit directions u_j (columns of U, signs unknown) with
a_j = s_j u_j for some real s_j. Write e_m(t, b) = E[sigma^(m)(b + t g)],
g ~ N(0, 1). For x ~ N(0, I), Stein's identity gives

    E[y x]          = sum_j c1_j u_j,           c1_j = a2_j s_j   e_1(|s_j|, b1_j)
    E[y (xx^T - I)] = sum_j c2_j u_j u_j^T,     c2_j = a2_j s_j^2 e_2(|s_j|, b1_j)
    E[y S3(x)]      = sum_j c3_j u_j^(x)3,      c3_j = a2_j s_j^3 e_3(|s_j|, b1_j)

:func:`moment_coefficients` estimates (c1, c2, c3) from data,
:func:`scales_biases_from_moments` solves the three equations of each unit
for (s_j, b1_j, a2_j), and :func:`recover_units` chains the two. The paper's
Fourier estimator of b1 (Janzamin, Sedghi, Anandkumar 2015, Procedure 2) is
:func:`fourier_biases`: an option, not the default (DESIGN 3.4).

Identifiability from orders 1-3 (measured on s in [0.1, 5], b in [-4, 4]).
The Jacobian of (|s|, b) -> (c2/c1, c3/c1) is non-singular on the whole box
for sigmoid, tanh and softplus (its determinant keeps one sign), so no
interior point is degenerate, not even b = 0 for sigmoid and tanh, where
c2 = 0 pins b = 0 and c3/c1 then fixes |s|. What is not identified:

* a unit with a2 = 0 (c1 = c2 = c3 = 0);
* the symmetry of odd-symmetric activations, sigma(-t) = const - sigma(t)
  (sigmoid, tanh): (s, b, a2) and (-s, -b, -a2) are the same network up to
  the output offset b2, and give the same (c1, c2, c3); s > 0 is returned.
  Softplus has no such symmetry: the sign of s is sign(c2 / c1);
* the limits: |s| -> 0 (a linear unit: only a2 s e_1 is seen), |s| -> inf
  (a step: only b/|s| is seen), |b| -> inf (an exponential tail: only
  a2 exp(-|b|) is seen). These show as a large condition number or, once
  outside the box searched (|s| in [0.02, 8], |b| <= 20), as a fit on its
  bound or with a residual, and are flagged.

For sources with |s| in [0.1, 3], |b| <= 1.5 no second exact solution was
found in [0.1, 5] x [-4, 4] (grid search on the direction of (c1, c2, c3);
for sigmoid and softplus also in [5, 12] x [-8, 8]).

Expectations are computed by the trapezoidal rule of
:func:`fastten.activations.gaussian_expectation` (801 nodes, step 0.025, on
[-10, 10]), spectrally accurate for these analytic integrands: against
adaptive quadrature, relative error <= 1e-13 for |s| <= 8 (tanh, whose
poles are nearest the real axis, degrades to 5e-5 at |s| = 12; hence the
bound 8).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, betaincinv, gammaln

from ._random import check_random_state
from ._validation import check_int, check_labels, check_samples, check_vectors
from ._workers import SERIAL
from .activations import ACTIVATIONS, QUADRATURE_NODES, QUADRATURE_WEIGHTS, derivative, get_activation

__all__ = ["UnitEstimates", "FourierBiases", "moment_coefficients", "scales_biases_from_moments",
           "recover_units", "relu_units_from_moments", "fourier_biases"]

_NODES, _WEIGHTS = QUADRATURE_NODES, QUADRATURE_WEIGHTS

# Activations with sigma(-t) = const - sigma(t): (s, b, a2) ~ (-s, -b, -a2).
_ODD_SYMMETRIC = (ACTIVATIONS["sigmoid"], ACTIVATIONS["tanh"])

# Search box of the grid stage, and the box the polish may not leave.
_GRID_SCALES = np.geomspace(0.1, 5.0, 36)
_GRID_BIASES = np.linspace(-4.0, 4.0, 81)
_LOG_SCALE_BOUNDS = (math.log(0.02), math.log(8.0))
_BIAS_BOUNDS = (-20.0, 20.0)
_N_CANDIDATES = 4
_MAX_CONDITION = 1e6
_EXACT_FIT = 1e-9
# Flag a fit whose residual exceeds these: relative (exact input) or in standard errors.
_MAX_RESIDUAL = 1e-6
_MAX_CHI = 4.0
_MAX_STEPS = 100
_FREE_STEPS = 25


def gaussian_derivative_moments(activation, t, b):
    """Gaussian expectations of the activation's derivatives, and their slopes in t.

    Parameters
    ----------
    activation : str or Activation
    t, b : array_like, broadcastable
        Scale (>= 0) and mean.

    Returns
    -------
    e : ndarray, shape (4, *shape)
        e[m - 1] = E[sigma^(m)(b + t g)] for m = 1..4, g ~ N(0, 1).
    f : ndarray, shape (3, *shape)
        f[m - 1] = E[g sigma^(m+1)(b + t g)] = d e_m / dt for m = 1..3.
        (d e_m / db = e_{m+1}.)
    """
    t, b = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(b, dtype=np.float64))
    arg = b[..., None] + t[..., None] * _NODES
    e, f = [], []
    for m in range(1, 5):
        values = derivative(activation, arg, m)
        e.append(values @ _WEIGHTS)
        if m >= 2:
            f.append(values @ (_NODES * _WEIGHTS))
    return np.stack(e), np.stack(f)


@functools.lru_cache(maxsize=None)
def _grid(activation):
    """(t, b, e) on the search grid: t, b of shape (G,), e of shape (3, G)."""
    T, B = np.meshgrid(_GRID_SCALES, _GRID_BIASES, indexing="ij")
    e, _ = gaussian_derivative_moments(activation, T.ravel(), B.ravel())
    return T.ravel(), B.ravel(), e[:3]


def _model(e, s, a2):
    """(c1, c2, c3) = a2 (s e_1, s^2 e_2, s^3 e_3); e (4, P), s and a2 (P,) -> (P, 3)."""
    return (a2 * np.stack([s * e[0], s ** 2 * e[1], s ** 3 * e[2]])).T


def _jacobian(e, f, s, a2):
    """d(c1, c2, c3) / d(log|s|, b, a2), shape (P, 3, 3), for e (4, P), f (3, P), s and a2 (P,)."""
    powers = np.stack([s, s ** 2, s ** 3])
    orders = np.arange(1.0, 4.0)[:, None]
    return np.stack([a2 * powers * (orders * e[:3] + np.abs(s) * f),
                     a2 * powers * e[1:4],
                     powers * e[:3]]).transpose(2, 1, 0)


def _grid_candidates(activation, c, W, signs):
    """Up to _N_CANDIDATES starts (sign, log t, b, a2): the best local minima on
    the grid of the variable-projection residual |W c - a2 W v(s, b)|, a2 eliminated."""
    t, b, e = _grid(activation)
    shape = (_GRID_SCALES.size, _GRID_BIASES.size)
    Wc = W @ c
    found = []
    for sign in signs:
        V = W @ (np.array([sign * t, t ** 2, sign * t ** 3]) * e)
        vv = np.einsum("mg,mg->g", V, V)
        vc = Wc @ V
        rho = (Wc @ Wc - vc ** 2 / vv).reshape(shape)
        padded = np.pad(rho, 1, constant_values=np.inf)
        neighbours = np.stack([padded[1 + di:1 + di + shape[0], 1 + dj:1 + dj + shape[1]]
                               for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj])
        minima = np.flatnonzero((rho <= neighbours.min(axis=0)).ravel())
        found += [(rho.flat[g], sign, math.log(t[g]), b[g], vc[g] / vv[g]) for g in minima]
    found.sort(key=lambda item: item[0])
    return [item[1:] for item in found[:_N_CANDIDATES]]


def _levenberg_marquardt(activation, C, W, signs, X, owner, slack):
    """Minimise |W_p (c(x_p) - C_p)| for P independent problems at once.

    C (P, 3) targets, W (P, 3, 3) weights, signs (P,) fixed signs of s,
    X (P, 3) starts (log|s|, b, a2), kept in the box of _LOG_SCALE_BOUNDS
    and _BIAS_BOUNDS; owner (P,) the unit of each start. Each step
    evaluates the expectations of all active problems in one batch. After
    _FREE_STEPS steps, a start whose cost exceeds twice the best of its unit
    plus ``slack`` stops (it can be neither the answer nor a rival).
    Returns the final X and costs |W (c(x) - c)|, shape (P,).
    """
    lower = np.array([_LOG_SCALE_BOUNDS[0], _BIAS_BOUNDS[0], -np.inf])
    upper = np.array([_LOG_SCALE_BOUNDS[1], _BIAS_BOUNDS[1], np.inf])

    def evaluate(X, p):
        s = signs[p] * np.exp(X[:, 0])
        e, f = gaussian_derivative_moments(activation, np.abs(s), X[:, 1])
        r = np.einsum("pij,pj->pi", W[p], _model(e, s, X[:, 2]) - C[p])
        return r, W[p] @ _jacobian(e, f, s, X[:, 2])

    X = np.clip(X, lower, upper)
    r, J = evaluate(X, np.arange(len(X)))
    cost = np.linalg.norm(r, axis=1)
    mu = np.full(len(X), 1e-3)
    active = np.ones(len(X), dtype=bool)
    for step_count in range(_MAX_STEPS):
        if step_count == _FREE_STEPS:
            best = np.full(owner.max(initial=0) + 1, np.inf)
            np.minimum.at(best, owner, cost)
            active &= cost <= 2.0 * best[owner] + slack
        p = np.flatnonzero(active)
        if p.size == 0:
            break
        JTJ = np.transpose(J[p], (0, 2, 1)) @ J[p]
        diag = np.diagonal(JTJ, axis1=1, axis2=2)
        diag = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)
        damped = JTJ + np.eye(3) * (mu[p, None] * diag)[:, None, :]
        step = np.linalg.solve(damped, -np.einsum("pji,pj->pi", J[p], r[p])[..., None])[..., 0]
        X_new = np.clip(X[p] + step, lower, upper)
        r_new, J_new = evaluate(X_new, p)
        cost_new = np.linalg.norm(r_new, axis=1)
        better = cost_new < cost[p]
        tiny = better & (np.linalg.norm(X_new - X[p], axis=1) <= 1e-15 * (1.0 + np.linalg.norm(X[p], axis=1)))
        q = p[better]
        X[q], r[q], J[q], cost[q] = X_new[better], r_new[better], J_new[better], cost_new[better]
        mu[p] = np.where(better, mu[p] / 5.0, mu[p] * 5.0)
        active[p[(mu[p] > 1e12) | tiny | (cost[p] == 0.0)]] = False
    return X, cost


@dataclass
class UnitEstimates:
    """Per-unit solution of the moment equations; every array has shape (k,).

    s: signed scales (a_j = s_j u_j); b1: biases; a2: output weights;
    residual: relative misfit |c - c(s, b1, a2)| / |c| of the best fit;
    condition: relative condition number |c| / sigma_min(d c / d(log|s|, b1, log|a2|)),
    so that a relative error delta in c moves (log|s|, b1, log|a2|) by up to
    about condition * delta; identifiable: False when the unit cannot be
    recovered (see ``reasons``); reasons: one string per unit, "" when
    identifiable; se: (k, 3) delta-method standard errors of (s, b1, a2)
    when a covariance of the coefficients was given, else None.
    """

    s: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    residual: np.ndarray
    condition: np.ndarray
    identifiable: np.ndarray
    reasons: list
    se: np.ndarray = None


def _smooth_activation(activation):
    """The Activation, checked to have pointwise derivatives of orders 1-4."""
    act = get_activation(activation)
    if act.max_order < 4:
        homogeneous = (" (relu is also positively homogeneous, a2 relu(s u.x + b) = a2 s relu(u.x + b/s), "
                       "so only a2 s and b/s are identified)") if act.name == "relu" else ""
        raise ValueError(f"activation: {act.name!r} has pointwise derivatives up to order {act.max_order} only; "
                         f"scale and bias recovery needs orders 1-4 (a smooth activation){homogeneous}")
    return act


def _weighting(c, cov):
    """W with W^T W = cov^{-1} (whitening) when cov is given, else I / |c|."""
    if cov is None:
        return np.eye(3) / np.linalg.norm(c)
    return np.linalg.inv(np.linalg.cholesky(cov))


def _no_signal(c, W, weighted):
    """The reason a unit's coefficients carry no information, or ""."""
    if not np.any(c):
        return "no signal: c1 = c2 = c3 = 0 (a2 = 0 or no such unit)"
    size = np.linalg.norm(W @ c)
    if weighted and size < 3.0:
        return f"no signal: (c1, c2, c3) is within {size:.2g} standard errors of zero"
    return ""


def _summarise(activation, c, cov, fits):
    """(s, b, a2, residual, condition, reason, se) from one unit's polished fits [(cost, sign, x)]."""
    fits = sorted(fits, key=lambda item: item[0])
    cost, sign, (log_t, b, a2) = fits[0]
    s = sign * math.exp(log_t)
    e, f = gaussian_derivative_moments(activation, np.array([abs(s)]), np.array([b]))
    J = _jacobian(e, f, np.array([s]), np.array([a2]))[0]
    residual = float(np.linalg.norm(_model(e, np.array([s]), np.array([a2]))[0] - c) / np.linalg.norm(c))
    smallest = np.linalg.svd(J * np.array([1.0, 1.0, a2]), compute_uv=False)[-1]
    condition = np.linalg.norm(c) / smallest if smallest > 0 else np.inf
    se = np.full(3, np.nan)
    if cov is not None and smallest > 0:
        Jinv = np.linalg.inv(J / np.array([s, 1.0, 1.0]))
        se = np.sqrt(np.diag(Jinv @ cov @ Jinv.T))
    reason = _reason(fits, cost, log_t, b, condition, cov is not None)
    misfit = cost > _MAX_CHI if cov is not None else residual > _MAX_RESIDUAL
    if not reason and misfit:
        reason = (f"no exact solution: the best least-squares fit leaves relative residual {residual:.3g} "
                  f"(outside the search box, saturated, or not a single unit)")
    return s, b, a2, residual, condition, reason, se


def _reason(fits, cost, log_t, b, condition, weighted):
    """Why a unit is not identifiable, or "" when it is."""
    if not np.isfinite(condition) or condition > _MAX_CONDITION:
        return (f"ill-conditioned: condition number {condition:.3g} > {_MAX_CONDITION:g} "
                f"(nearly linear, step-like or saturated unit)")
    at_bound = (min(abs(log_t - _LOG_SCALE_BOUNDS[0]), abs(log_t - _LOG_SCALE_BOUNDS[1])) < 1e-6
                or min(abs(b - _BIAS_BOUNDS[0]), abs(b - _BIAS_BOUNDS[1])) < 1e-6)
    if at_bound:
        return f"at search bound: |s| = {math.exp(log_t):.3g}, b = {b:.3g} (no solution inside the box)"
    slack = 1.0 if weighted else _EXACT_FIT
    sign = fits[0][1]
    for other_cost, other_sign, x in fits[1:]:
        same = abs(x[0] - log_t) + abs(x[1] - b) <= 1e-4 and other_sign == sign
        mirror = abs(x[0] - log_t) + abs(x[1] + b) <= 1e-4 and other_sign == -sign  # the odd symmetry
        if other_cost <= cost + slack and not (same or mirror):
            return (f"ambiguous: a second solution |s| = {math.exp(x[0]):.4g}, b = {x[1]:.4g} fits as well "
                    f"(residual {other_cost:.3g} vs {cost:.3g})")
    return ""


def scales_biases_from_moments(c1, c2, c3, activation, *, cov=None):
    """Solve c_m = a2 s^m E[sigma^(m)(|s| g + b)], m = 1, 2, 3, unit by unit.

    Parameters
    ----------
    c1, c2, c3 : array_like, shape (k,)
        Coefficients of the first three moments in the basis of unit
        directions u_j (see the module docstring).
    activation : str or Activation
        A smooth activation ("sigmoid", "tanh", "softplus", or an Activation
        with pointwise derivatives up to order 4).
    cov : array_like, shape (k, 3, 3), optional
        Covariance of (c1_j, c2_j, c3_j) per unit (from
        :func:`moment_coefficients` with ``return_cov=True``). When given, the
        fit is weighted by its inverse and standard errors are returned.

    Returns
    -------
    UnitEstimates
        s (signed: a_j = s_j u_j), b1, a2, and per-unit residual, condition
        number, identifiable flag, reason and standard errors.

    Notes
    -----
    a2 enters linearly and is eliminated (variable projection); the residual
    over (|s|, b) is scanned on a grid (|s| in [0.1, 5] geometric, b in
    [-4, 4]); its best local minima are polished by bounded least squares on
    (log|s|, b, a2) with the analytic Jacobian. Three equations in three
    unknowns: exact coefficients are fitted exactly; noisy ones that no unit
    can produce get the least-squares best fit, with its residual. A unit is
    flagged when its coefficients vanish, its condition number exceeds 1e6,
    the fit sits on the box |s| in [0.02, 8], |b| <= 20, or two distinct
    solutions fit equally well, or when the best fit leaves a relative
    residual above 1e-6 (above 4 standard errors when ``cov`` is given).
    """
    activation = _smooth_activation(activation)
    C = np.column_stack([np.atleast_1d(np.asarray(c, dtype=np.float64)) for c in (c1, c2, c3)])
    if not np.isfinite(C).all():
        raise ValueError("c1, c2, c3: expected finite coefficients, got NaN or infinite entries")
    k = C.shape[0]
    if cov is not None:
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (k, 3, 3):
            raise ValueError(f"cov: expected shape ({k}, 3, 3), got {cov.shape}")
    covs = [None] * k if cov is None else list(cov)
    weights = np.array([_weighting(C[j], covs[j]) if np.any(C[j]) else np.eye(3) for j in range(k)])
    empty = [_no_signal(C[j], weights[j], cov is not None) for j in range(k)]
    signs = (1.0,) if activation in _ODD_SYMMETRIC else (1.0, -1.0)
    owner, starts = [], []
    for j in range(k):
        if not empty[j]:
            found = _grid_candidates(activation, C[j], weights[j], signs)
            owner += [j] * len(found)
            starts += found
    owner = np.array(owner, dtype=int)
    starts = np.array(starts, dtype=np.float64).reshape(-1, 4)
    X, costs = _levenberg_marquardt(activation, C[owner], weights[owner], starts[:, 0], starts[:, 1:].copy(),
                                    owner, 1.0 if cov is not None else _EXACT_FIT)
    rows = []
    for j in range(k):
        if empty[j]:
            rows.append((0.0, 0.0, 0.0, 1.0, np.inf, empty[j], np.full(3, np.nan)))
            continue
        fits = [(costs[p], starts[p, 0], X[p]) for p in np.flatnonzero(owner == j)]
        rows.append(_summarise(activation, C[j], covs[j], fits))
    s, b1, a2, residual, condition, reasons, se = zip(*rows)
    reasons = list(reasons)
    return UnitEstimates(np.array(s), np.array(b1), np.array(a2), np.array(residual), np.array(condition),
                         np.array([not r for r in reasons]), reasons, None if cov is None else np.array(se))


def relu_units_from_moments(c1, c2, c3, *, max_bias=3.0):
    """Orientation, bias and output weight of ReLU units, in closed form.

    ReLU is positively homogeneous, a2 relu(s u.x + b) = a2 s relu(u.x + b/s)
    for s > 0, so only the unit-norm form (a2' = a2 |s|, b' = b / |s|) is
    identified. With u = o a / |a| (orientation o = +-1), Stein's identity
    and the Gaussian expectations of relu's derivatives at g + b' (Phi(b'),
    phi(b') and -b' phi(b')) give

        c1 = o a2' Phi(b'),   c2 = a2' phi(b'),   c3 = -o a2' b' phi(b'),

    so o = sign(c1 c2), b' = -o c3 / c2 and a2' = c2 / phi(b'). b' is
    clipped to [-max_bias, max_bias] (a noisy c2 near zero would send it
    far). Returns (o, b', a2'), each of shape (k,).
    """
    c1, c2, c3 = (np.atleast_1d(np.asarray(c, dtype=np.float64)) for c in (c1, c2, c3))
    orientation = np.where(c1 * c2 < 0, -1.0, 1.0)
    safe = np.where(c2 == 0, np.finfo(float).tiny, c2)
    bias = np.clip(-orientation * c3 / safe, -max_bias, max_bias)
    a2 = c2 * math.sqrt(2 * math.pi) * np.exp(bias ** 2 / 2)
    return orientation, bias, a2


def _projected_scores(Z, G):
    """Per-sample Hermite scores along each u_j: (z, z^2 - |u|^2, z^3 - 3|u|^2 z), each (n, k)."""
    g = np.diag(G)
    return Z, Z * Z - g, Z * (Z * Z - 3.0 * g)


def moment_coefficients(X, y, U, *, return_cov=False, workers=SERIAL, check=True):
    """Coefficients of E[y S_m(x)] (m = 1, 2, 3) in the basis of the columns of U.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised inputs (x ~ N(0, I)).
    y : array_like, shape (n,)
        Labels; centred here (which leaves the moments of order >= 1 unchanged
        and lowers their variance).
    U : array_like, shape (d, k)
        Directions (need not be orthogonal; linearly independent).
    return_cov : bool
        Also return the per-unit covariance of (c1_j, c2_j, c3_j).
    workers : fastten._workers.Workers
        The threads that share the rows (fixed chunks: the same result on
        any number).
    check : bool
        Check X, y and U (False: the caller has; X float64 C-contiguous
        and finite, y (n,), U (d, k)).

    Returns
    -------
    c1, c2, c3 : ndarray, shape (k,)
    cov : ndarray, shape (k, 3, 3)
        Only when ``return_cov``: sample covariance of the per-sample
        influence of each coefficient, divided by n.

    Notes
    -----
    The fit is least squares in the ambient space,
    min |M_m - sum_j c_mj u_j^(x)m|_F, whose normal equations are

        (G o ... o G) c_m = (M_m(u_j, ..., u_j))_j,   G = U^T U  (m-fold Hadamard power),

    and M_m(u_j, ..., u_j) is the mean of y He_m(z_j) with z = X U and the
    Hermite polynomials He_1 = z, He_2 = z^2 - |u_j|^2, He_3 = z^3 - 3|u_j|^2 z.
    Cost O(ndk) for Z plus O(nk); nothing of size d^2, d^3 or k^3 is formed.
    (Fitting the projected moments M_m(U, ..., U) entrywise, e.g.
    M_2(U, U) = G diag(c2) G, by least squares in z-coordinates is also exact
    for exact moments, but weighs span(U) by the non-orthonormal coordinates z
    rather than isotropically.) In population every consistent solve returns
    the same c_m; they differ only in how noise is weighted.
    """
    if check:
        X = np.asarray(check_samples(X), dtype=np.float64)
        y = check_labels(y, X.shape[0], np.float64)
        U, _ = check_vectors(U, X.shape[1], np.float64, "U")
    n, k = X.shape[0], U.shape[1]
    G = U.T @ U
    y = y - y.mean()
    # Per-sample influence (score * y) H^{-1} (H symmetric): one BLAS product
    # per order rather than a solve with n right-hand sides.
    inverses = [np.linalg.inv(H) for H in (G, G * G, G * G * G)]
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]

    def chunk(start, stop):
        """(rows, the influences' mean (3, k), their centred cross-products (6, k)) on rows start:stop."""
        scores = _projected_scores(X[start:stop] @ U, G)
        influence = [(score * y[start:stop, None]) @ inverse for inverse, score in zip(inverses, scores)]
        mean = np.stack([q.mean(axis=0) for q in influence])
        if not return_cov:
            return stop - start, mean, None
        centred = [q - c for q, c in zip(influence, mean)]
        return stop - start, mean, np.stack([np.einsum("ij,ij->j", centred[a], centred[b]) for a, b in pairs])

    # Chunks combined by Chan et al.'s pairwise update: the same sums as on
    # all rows at once, up to rounding, in the same order on any number of
    # threads.
    rows, mean, scatter = 0, np.zeros((3, k)), np.zeros((len(pairs), k))
    for count, chunk_mean, chunk_scatter in workers.rows(chunk, n):
        delta = chunk_mean - mean
        total = rows + count
        if return_cov:
            scatter += chunk_scatter + np.stack([delta[a] * delta[b] for a, b in pairs]) * (rows * count / total)
        mean += delta * (count / total)
        rows = total
    c1, c2, c3 = mean
    if not return_cov:
        return c1, c2, c3
    cov = np.empty((k, 3, 3))
    for (a, b), values in zip(pairs, scatter):
        cov[:, a, b] = cov[:, b, a] = values
    return c1, c2, c3, cov / (n * max(n - 1, 1))


def recover_units(X, y, U, activation, workers=SERIAL, check=True):
    """First layer, biases and output weights from directions and data.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised inputs.
    y : array_like, shape (n,)
    U : array_like, shape (d, k)
        Recovered directions (any norms and signs); normalised here.
    activation : str or Activation
        A smooth activation ("sigmoid", "tanh", "softplus", or an Activation
        with pointwise derivatives up to order 4).
    workers : fastten._workers.Workers
        As in :func:`moment_coefficients`.
    check : bool
        Check X and y (False: the caller has, as in :func:`moment_coefficients`).

    Returns
    -------
    A1 : ndarray, shape (d, k)
        U (unit columns) times s: the sign and scale of each column resolved.
    b1 : ndarray, shape (k,)
    a2 : ndarray, shape (k,)
    diagnostics : list of dict, one per unit
        keys: identifiable, reason, residual, condition, coefficients (c1, c2, c3),
        se (standard errors of s, b1, a2).

    For sigmoid the sign convention s > 0 changes the output offset b2 by
    a2 when it flips a unit; b2 is left to the output-layer fit.
    """
    activation = _smooth_activation(activation)
    if check:
        X = np.asarray(check_samples(X), dtype=np.float64)
        y = check_labels(y, X.shape[0], np.float64)
    U, _ = check_vectors(U, X.shape[1], np.float64, "U")
    norms = np.linalg.norm(U, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"U: expected nonzero columns, got zero column(s) {np.flatnonzero(norms == 0).tolist()}")
    U = U / norms
    c1, c2, c3, cov = moment_coefficients(X, y, U, return_cov=True, workers=workers, check=False)
    fit = scales_biases_from_moments(c1, c2, c3, activation, cov=cov)
    diagnostics = [
        {"identifiable": bool(fit.identifiable[j]), "reason": fit.reasons[j], "residual": float(fit.residual[j]),
         "condition": float(fit.condition[j]), "coefficients": (c1[j], c2[j], c3[j]),
         "se": tuple(float(v) for v in fit.se[j])}
        for j in range(U.shape[1])
    ]
    return U * fit.s, fit.b1, fit.a2, diagnostics


# ----------------------------------------------------------------------------
# The paper's Fourier estimator of b1 (an option; DESIGN 3.4)
# ----------------------------------------------------------------------------

# Kernel e^{-i kappa <omega, x>}: kappa = 2 pi ("2pi", the paper's constant
# 1/pi at |omega| = 1/2) or 1 ("angular", constant 2).
_CONVENTIONS = {"2pi": 2.0 * math.pi, "angular": 1.0}


def _transform_phase(activation):
    """Phase of Sigma(xi) = int sigma(t) e^{-i xi t} dt at xi > 0 (a distribution;
    its value off xi = 0 is FT(sigma^(r))(xi) / (i xi)^r for the first r with
    sigma^(r) integrable). sigma' of sigmoid is the logistic density, with
    FT pi xi / sinh(pi xi) > 0; tanh' = 4 sigmoid'(2t) has FT
    pi xi / sinh(pi xi / 2) > 0; softplus'' = sigmoid'. So the phase is
    -pi/2 (sigmoid, tanh: r = 1) and pi (softplus: r = 2)."""
    phases = {"sigmoid": -0.5 * math.pi, "tanh": -0.5 * math.pi, "softplus": math.pi}
    name = get_activation(activation).name
    if get_activation(activation) is not ACTIVATIONS.get(name) or name not in phases:
        raise ValueError(f"activation: the Fourier method needs the transform of sigma, known here for "
                         f"{sorted(phases)}; got {name!r}")
    return phases[name]


def _cap_frequencies(u, n, n_freq, eps, rng):
    """(n, n_freq, d) frequencies uniform on the one-sided cap
    {omega : |omega| = 1/2, <omega, u> >= (1 - eps^2/2) / 2}, sampled directly.

    For omega/|omega| uniform on S^{d-1}, w = (1 - <omega/|omega|, u>) / 2 is
    Beta((d-1)/2, (d-1)/2); the cap is w <= eps^2/4, so w is drawn by
    inverting the Beta CDF on [0, I_{eps^2/4}] (no rejection), and the
    direction orthogonal to u is uniform on the sphere of u's complement.
    """
    d = u.shape[0]
    if d == 1:
        return np.broadcast_to(0.5 * u, (n, n_freq, 1)).copy()
    alpha = 0.5 * (d - 1)
    top = betainc(alpha, alpha, 0.25 * eps ** 2)
    w = betaincinv(alpha, alpha, top * rng.uniform(size=(n, n_freq)))
    cos = 1.0 - 2.0 * w
    g = rng.standard_normal((n, n_freq, d))
    g -= (g @ u)[..., None] * u
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    return 0.5 * (cos[..., None] * u + np.sqrt(np.maximum(1.0 - cos * cos, 0.0))[..., None] * g)


def _log_cap_area(d, eps):
    """log of the (d-1)-dimensional area of the cap of the sphere of radius 1/2."""
    if d == 1:
        return 0.0
    alpha = 0.5 * (d - 1)
    log_sphere = math.log(2.0) + 0.5 * d * math.log(math.pi) - gammaln(0.5 * d)
    return (d - 1) * math.log(0.5) + log_sphere + math.log(betainc(alpha, alpha, 0.25 * eps ** 2))


@dataclass
class FourierBiases:
    """Result of :func:`fourier_biases`; arrays of shape (k,).

    b1: the bias estimates; phase: angle of the Fourier moment v_j;
    log_abs_v: log |v_j| (v_j itself overflows for large d);
    a2_abs: |a2_j| implied by |v_j| (population:
    |v_j| = |a2_j| (2 pi / kappa)^(d-1) |Sigma(kappa / (2 |a_j|))| / (|a_j| |Omega_j|)).
    """

    b1: np.ndarray
    phase: np.ndarray
    log_abs_v: np.ndarray
    a2_abs: np.ndarray


def fourier_biases(X, y, A1, activation, *, a2=None, eps=0.2, n_freq=1, convention="2pi", random_state=None):
    """The paper's Fourier estimator of b1 (Janzamin et al. 2015, Procedure 2).

    WARNING: for Gaussian inputs this estimator has infinite variance and
    does not converge at the n^{-1/2} rate; the default recovery is
    :func:`recover_units`. Shipped as an option, faithfully (DESIGN 3.4).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised inputs, x ~ N(0, I); p is the standard normal density.
    y : array_like, shape (n,)
    A1 : array_like, shape (d, k)
        First-layer weights with their signs and norms (e.g. from
        :func:`recover_units`); the cap of unit j is centred on A1[:, j].
    activation : "sigmoid", "tanh" or "softplus"
    a2 : array_like, shape (k,), optional
        Only the signs are used (a2 < 0 turns the phase by pi). None: the
        sign of the first-order coefficient c1_j in the basis A1, which is
        sign(a2_j) because E[sigma'] > 0 for these activations.
    eps : float in (0, 2]
        Cap width: <omega, a_j / |a_j|> >= (1 - eps^2 / 2) / 2 (the paper's
        epsilon-tilde_1). The caps of different units must not overlap.
    n_freq : int
        Frequencies drawn per sample (1 = the paper: one omega_i per x_i).
    convention : "2pi" or "angular"
        Kernel e^{-2 pi i <omega, x>} or e^{-i <omega, x>}.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    FourierBiases

    Notes
    -----
    With the Fourier transform F(omega) = int f(x) e^{-i kappa <omega, x>} dx
    of f(x) = sum_j a2_j sigma(a_j.x + b1_j) + b2, the term of unit j is
    (2 pi / kappa)^(d-1) delta(omega_perp) (a2_j / |a_j|) e^{i kappa omega_par b1_j / |a_j|}
    Sigma(kappa omega_par / |a_j|), on the line through a_j. The one-sided cap
    Omega_j on the sphere |omega| = 1/2 meets that line once, at a_j / (2|a_j|),
    so v_j = mean_i y_i e^{-i kappa <omega_i, x_i>} / p(x_i), omega_i uniform on
    Omega_j, estimates E_omega F(omega), whose phase is
    arg(a2_j) + kappa b1_j / (2 |a_j|) + arg Sigma(kappa / (2 |a_j|)). Hence

        b1_j = (2 |a_j| / kappa) wrap(arg v_j - arg a2_j - arg Sigma),

    i.e. (1/pi)(arg v - arg Sigma(1/2)) for unit |a_j| and kappa = 2 pi (the
    paper's formula), 2 (arg v - arg Sigma) for kappa = 1. arg Sigma = -pi/2
    for sigmoid and tanh, pi for softplus (see _transform_phase). b1 is
    identified modulo 4 pi |a_j| / kappa: within [-|a_j|, |a_j|) for "2pi",
    [-2 pi |a_j|, 2 pi |a_j|) for "angular". A two-sided cap (|<omega, u>|)
    would average F(omega) with its conjugate F(-omega) and lose the phase.

    Variance. E|y / p(x)|^2 = int f^2 / p dx = infinity for Gaussian p, and
    for sigmoid even E|y / p(x)| = int |f| dx = infinity: the mean is
    dominated by the few samples of largest |x|, where 1/p(x) ~ e^{|x|^2/2}.
    Measured (sigmoid, d = 2, one unit with |a| = 1, a2 = 1, b1 = 0.5,
    eps = 0.2, centred y, 20 seeds): the median over seeds of the sample
    mean of |y / p(x)|^2 is 1.5e4, 1.0e5, 1.8e6, 4.8e7 at n = 1e3, 1e4, 1e5,
    1e6 (it grows faster than n); the standard deviation of b1 over seeds is
    0.61, 0.57, 0.50, 0.54 ("2pi"; the uniform law on the identified
    interval [-1, 1) has 0.58) and 0.34, 0.40, 0.30, 0.60 ("angular"), with
    root-mean-square errors 0.5-0.8 throughout: no convergence at all, where
    an n^{-1/2} estimator would shrink thirtyfold. d = 1 behaves the same
    (spread 0.47-0.57). :func:`recover_units` on the same data has errors of
    about 0.01 at n = 1e5. The population identity itself is exact (checked
    by quadrature in d = 1 to 1e-9 in tests/test_bias.py).
    """
    kappa = _CONVENTIONS.get(convention)
    if kappa is None:
        raise ValueError(f"convention: expected one of {sorted(_CONVENTIONS)}, got {convention!r}")
    phase_sigma = _transform_phase(activation)
    X = np.asarray(check_samples(X), dtype=np.float64)
    n, d = X.shape
    y = check_labels(y, n, np.float64)
    A1, _ = check_vectors(A1, d, np.float64, "A1")
    n_freq = check_int(n_freq, "n_freq", 1)
    if not 0.0 < eps <= 2.0:
        raise ValueError(f"eps: expected a number in (0, 2], got {eps!r}")
    rng = check_random_state(random_state)
    norms = np.linalg.norm(A1, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"A1: expected nonzero columns, got zero column(s) {np.flatnonzero(norms == 0).tolist()}")
    U = A1 / norms
    y = y - y.mean()  # the constant's transform sits at omega = 0, off the caps: only its noise goes
    signs = np.sign(moment_coefficients(X, y, U)[0] if a2 is None else np.asarray(a2, dtype=np.float64))
    log_weight = 0.5 * d * math.log(2.0 * math.pi) + 0.5 * np.einsum("ia,ia->i", X, X)  # log 1/p(x)
    top = log_weight.max()
    scaled = y * np.exp(log_weight - top)
    k = U.shape[1]
    phase, log_abs_v, b1, a2_abs = (np.empty(k) for _ in range(4))
    for j in range(k):
        omega = _cap_frequencies(U[:, j], n, n_freq, eps, rng)
        waves = np.exp(-1j * kappa * np.einsum("ira,ia->ir", omega, X)).mean(axis=1)
        v = np.mean(scaled * waves)
        phase[j] = np.angle(v)
        log_abs_v[j] = top + math.log(abs(v)) if v != 0 else -np.inf
        b1[j] = _bias_from_phase(phase[j], norms[j], signs[j], phase_sigma, kappa)
        xi = kappa / (2.0 * norms[j])
        log_sigma = math.log(_transform_modulus(activation, xi))
        a2_abs[j] = math.exp(log_abs_v[j] + math.log(norms[j]) + _log_cap_area(d, eps)
                             - (d - 1) * math.log(2.0 * math.pi / kappa) - log_sigma)
    return FourierBiases(b1, phase, log_abs_v, a2_abs)


def _bias_from_phase(phase, norm, sign, phase_sigma, kappa):
    """b1 = (2 |a| / kappa) wrap(arg v - arg a2 - arg Sigma), wrap to [-pi, pi)."""
    turn = phase - (math.pi if sign < 0 else 0.0) - phase_sigma
    return 2.0 * norm / kappa * (np.mod(turn + math.pi, 2.0 * math.pi) - math.pi)


def _transform_modulus(activation, xi):
    """|Sigma(xi)| for xi > 0 (angular frequency), from FT(sigma'') or FT(sigma')."""
    name = get_activation(activation).name
    if name == "sigmoid":
        return math.pi / math.sinh(math.pi * xi)
    if name == "tanh":
        return math.pi / math.sinh(0.5 * math.pi * xi)
    return math.pi / (xi * math.sinh(math.pi * xi))
