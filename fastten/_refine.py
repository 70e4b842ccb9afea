"""Local refinement of a two-layer network: Levenberg-Marquardt on the mean
squared error, with matrix-free Gauss-Newton products.

F = sigma(X A1 + b1) A2 + b2 with m outputs (A2 is k x m). The Jacobian J
of the n*m residuals is never formed: a product with J^T J costs two
matrix products with X (O(n d k), the kernel ``gn_product_acc``). Each
damped Gauss-Newton step (J^T J / n + mu D) delta = -g is solved by
conjugate gradients, loosely while the gradient is large (inexact Newton),
preconditioned by default with the Gauss-Newton matrix that standard
Gaussian inputs would give (``_StructuredPreconditioner``): by Stein's lemma
it is S (x) I off span(A1) and a small dense block on span(A1) and the other
parameters, so it applies in O(d k^2 + k^4) after an O(k^6) factorisation,
whatever n, and the CG products
(exact, on the data) correct its O(sqrt(p / n)) error - or, on request, with
J^T J / r + mu D of a fixed subsample of r rows (p x p, O(r p^2 + p^3)).
Steps that move a hidden unit by more than its norm are rejected (a trust
region per unit). After each accepted step the output layer (A2, b2) is
replaced by its least-squares optimum given the hidden layer (variable
projection), which cut the iterations by about a third (d=50, k=10: median
27 against 32 over six seeds, measured from init="random" before the planted
networks got their own random stream, so from starts at the planted
directions; not re-measured).

Near the optimum the loss is locally strongly convex (Zhong et al. 2017), and
Gauss-Newton converges quadratically to a zero-loss optimum.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._kernels import gn_product_acc
from .activations import value_and_slope


@dataclass
class RefineResult:
    A1: np.ndarray
    b1: np.ndarray
    A2: np.ndarray
    b2: np.ndarray
    losses: list        # sum of squared residuals / (2 n) after each accepted step, starting value first
    n_iter: int
    n_cg: int
    n_passes: int       # passes over X (forward, gradient and Gauss-Newton products)
    n_gram: int         # preconditioner Gram matrices computed
    converged: bool


class _Net:
    """Parameters packed as one vector: A1 (unit-major), b1, A2 (row-major), b2."""

    def __init__(self, d, k, m):
        self.d, self.k, self.m = d, k, m
        self.size = d * k + k + k * m + m

    def unpack(self, theta):
        d, k, m = self.d, self.k, self.m
        dk = d * k
        return (theta[:dk].reshape(k, d).T, theta[dk: dk + k], theta[dk + k: dk + k + k * m].reshape(k, m),
                theta[dk + k + k * m:])

    def pack(self, A1, b1, A2, b2):
        return np.concatenate([A1.T.reshape(-1), b1, A2.reshape(-1), b2])


class _State:
    """The network's activations, slopes and residuals at theta."""

    def __init__(self, X, Y, theta, net, activation):
        A1, b1, self.A2, b2 = net.unpack(theta)
        self.theta = theta
        self.S, self.D = value_and_slope(activation, X @ A1 + b1)
        self.R = self.S @ self.A2 + b2 - Y
        self.loss = 0.5 * np.sum(self.R * self.R) / X.shape[0]

    def project_output(self, Y, net):
        """Replace (A2, b2) by their least-squares optimum given the hidden
        layer (variable projection, Golub and Pereyra 1973): the loss can
        only drop, and the nonlinear steps no longer have to carry the
        linear parameters along. O(n k^2), no pass over X."""
        n, k = self.S.shape
        F = np.empty((n, k + 1))
        F[:, :k], F[:, k] = self.S, 1.0
        coef, *_ = np.linalg.lstsq(F, Y, rcond=None)
        R = F @ coef - Y
        loss = 0.5 * np.sum(R * R) / n
        if loss < self.loss:
            A1, b1, _, _ = net.unpack(self.theta)
            self.theta = net.pack(A1, b1, coef[:k], coef[k])
            self.A2, self.R, self.loss = self.theta[net.d * k + k: -net.m].reshape(k, net.m), R, loss


def _gn_product(X, state, v, net):
    """J^T J v in one pass over X."""
    VA, vb1, VA2, vb2 = net.unpack(v)
    outA, outb1 = np.zeros((net.d, net.k)), np.zeros(net.k)
    outA2, outb2 = np.zeros((net.k, net.m)), np.zeros(net.m)
    gn_product_acc(X, state.D, state.S, np.ascontiguousarray(state.A2), np.ascontiguousarray(VA), vb1,
                   np.ascontiguousarray(VA2), vb2, outA, outb1, outA2, outb2)
    return net.pack(outA, outb1, outA2, outb2)


def _gradient(X, state, net):
    """J^T r (not divided by n), one pass over X."""
    W = (state.R @ state.A2.T) * state.D
    return net.pack(X.T @ W, W.sum(axis=0), state.S.T @ state.R, state.R.sum(axis=0))


def _subsample_gram(X, state, rows, net):
    """J^T J / r on r rows, and its diagonal (the Marquardt scaling)."""
    return _gram(X[rows], state.S[rows], state.D[rows], state.A2, net)


def _gram(Xs, Ss, Ds, A2, net):
    """J^T J / r of the network with inputs Xs (r, net.d), activations Ss and
    slopes Ds (r, k) and output layer A2 (k, m), and its diagonal.
    O(r p^2 m)."""
    r = Xs.shape[0]
    dk, k, m = net.d * net.k, net.k, net.m
    H = np.zeros((net.size, net.size))
    J = np.zeros((r, net.size))
    for c in range(m):
        G = Ds * A2[:, c]
        J[:, :dk] = (G[:, :, None] * Xs[:, None, :]).reshape(r, -1)
        J[:, dk: dk + k] = G
        J[:, dk + k: dk + k + k * m] = 0.0
        J[:, dk + k + c: dk + k + k * m: m] = Ss
        J[:, dk + k + k * m:] = 0.0
        J[:, dk + k + k * m + c] = 1.0
        H += J.T @ J
    H /= max(r, 1)
    return H, np.maximum(np.diag(H).copy(), 1e-12)


class _FullPreconditioner:
    """(J^T J / r + mu D)^{-1} with the whole p x p Gram matrix of r rows:
    O(r p^2) to build, O(p^3) to factor, p^2 memory."""

    def __init__(self, X, state, rows, net):
        self.H, self.diag = _subsample_gram(X, state, rows, net)

    def damp(self, mu):
        A = self.H.copy()
        A[np.diag_indices_from(A)] += mu * self.diag + 1e-12 * self.diag.max()
        factor = scipy.linalg.cho_factor(A)
        return lambda v: scipy.linalg.cho_solve(factor, v)


class _BlockPreconditioner:
    """The same with only the diagonal blocks of J^T J / r: one (d+1) block per
    hidden unit over (A1[:, j], b1_j), and one (k+1) block, shared by the
    outputs, over (A2[:, c], b2_c). O(r k d^2) to build, O(k d^3) to factor,
    k d^2 memory: for large p = dk, where the full matrix is too big; the
    CG iterations then also correct the coupling between units."""

    def __init__(self, X, state, rows, net):
        d, k, m = net.d, net.k, net.m
        r = rows.shape[0]
        X1 = np.hstack([X[rows], np.ones((r, 1))])
        w = state.D[rows] ** 2 * np.sum(state.A2 ** 2, axis=1)
        self.units = np.stack([(X1 * w[:, j: j + 1]).T @ X1 / r for j in range(k)])
        S1 = np.hstack([state.S[rows], np.ones((r, 1))])
        self.out = S1.T @ S1 / r
        self.net = net
        unit_diag = np.diagonal(self.units, axis1=1, axis2=2)
        self.diag = np.maximum(net.pack(unit_diag[:, :d].T, unit_diag[:, d],
                                        np.repeat(np.diag(self.out)[:k, None], m, axis=1),
                                        np.full(m, self.out[k, k])), 1e-12)

    def damp(self, mu):
        net = self.net
        d, k, m = net.d, net.k, net.m
        eps = 1e-12 * self.diag.max()
        DA, Db1, DA2, Db2 = net.unpack(mu * self.diag + eps)
        unit_factors = []
        for j in range(k):
            A = self.units[j].copy()
            A[np.diag_indices(d + 1)] += np.append(DA[:, j], Db1[j])
            unit_factors.append(scipy.linalg.cho_factor(A))
        out = self.out.copy()
        out[np.diag_indices(k + 1)] += np.append(DA2[:, 0], Db2[0])  # equal for every output
        out_factor = scipy.linalg.cho_factor(out)

        def solve(v):
            VA, vb1, VA2, vb2 = net.unpack(v)
            XA, xb1 = np.empty_like(VA), np.empty_like(vb1)
            for j in range(k):
                z = scipy.linalg.cho_solve(unit_factors[j], np.append(VA[:, j], vb1[j]))
                XA[:, j], xb1[j] = z[:d], z[d]
            Z = scipy.linalg.cho_solve(out_factor, np.vstack([VA2, vb2[None, :]]))
            return net.pack(XA, xb1, Z[:k], Z[k])

        return solve


def _spd_solver(A):
    """v -> A^{-1} v for a symmetric positive (semi-)definite, already damped
    A: Cholesky, or where rounding makes it fail (a singular Gauss-Newton
    matrix under a vanishing damping), the eigendecomposition with the
    eigenvalues floored at 1e-12 of the largest. Never raises, never NaN."""
    A = np.nan_to_num(A, nan=0.0, posinf=0.0, neginf=0.0)
    try:
        factor = scipy.linalg.cho_factor(A)
        return lambda v: scipy.linalg.cho_solve(factor, v)
    except (np.linalg.LinAlgError, ValueError):
        w, V = np.linalg.eigh(0.5 * (A + A.T))
        w = np.maximum(w, 1e-12 * max(w.max(initial=0.0), np.finfo(float).tiny))
        return lambda v: V @ ((V.T @ v) / (w[:, None] if v.ndim == 2 else w))


class _StructuredPreconditioner:
    """The population Gauss-Newton matrix for standard Gaussian inputs,
    applied inversely in O(d k^2 + q^2), q = k^2 + k + k m + m (docs/method.md).

    With Q (d x r) an orthonormal basis of span(A1), a direction V of the
    first layer splits into Q C (C = Q^T V, r x k) and its complement
    V_perp = (I - Q Q^T) V. For x ~ N(0, I) every entry of the Gauss-Newton
    matrix is E[g(z) ...] with z = Q^T x independent of the complement of
    x, so the matrix is block diagonal in that split:

    - on the complement, S (x) (I - Q Q^T) with
      S_ij = sum_c A2[i, c] A2[j, c] E[sigma'_i sigma'_j] (from all n rows,
      O(n k^2));
    - on (C, b1, A2, b2), the Gauss-Newton matrix of the same network on the
      r-dimensional inputs Z = X Q, computed on the subsample's rows
      (O(rows q^2)) - exact there, whatever the input distribution.

    The damping is isotropic per hidden unit on the first layer (S_jj times
    the identity for unit j, so that it keeps the split) and the diagonal of
    the small Gram matrix on (b1, A2, b2). CG runs on the exact empirical
    products: on non-Gaussian inputs only the number of iterations changes.
    """

    def __init__(self, X, state, rows, net):
        d, k, m = net.d, net.k, net.m
        A1 = net.unpack(state.theta)[0]
        U, sv, _ = np.linalg.svd(A1, full_matrices=False)  # O(d k^2)
        # Rank tolerance: coinciding or vanishing units leave a smaller span;
        # the complement then has d - r dimensions (I - Q Q^T covers them).
        rank = int(np.sum(sv > max(d, k) * np.finfo(float).eps * sv[0])) if sv.size and sv[0] > 0 else 0
        self.Q = np.ascontiguousarray(U[:, :rank])
        self.net, self.span = net, _Net(rank, k, m)
        n = X.shape[0]
        self.S = (state.D.T @ state.D / n) * (state.A2 @ state.A2.T)
        self.H, span_diag = _gram(X[rows] @ self.Q, state.S[rows], state.D[rows], state.A2, self.span)
        s = np.diag(self.S).copy()
        other = span_diag[rank * k:]  # b1, A2, b2
        scale = max(s.max(initial=0.0), other.max(initial=0.0), np.finfo(float).tiny)
        s = np.maximum(s, 1e-12 * scale)
        other = np.maximum(other, 1e-12 * scale)
        self.diag = np.concatenate([np.repeat(s, d), other])
        self.eps = 1e-12 * scale

    def damp(self, mu):
        """v -> (M + mu diag + eps I)^{-1} v, M the structured matrix: O(k^3 + q^3)
        to factor, O(d k r + k^2 d + q^2) per application."""
        net, span, Q = self.net, self.span, self.Q
        unit = self.diag[: net.d * net.k: net.d]  # the first layer's damping, one value per unit
        S = self.S.copy()
        S[np.diag_indices_from(S)] += mu * unit + self.eps
        H = self.H.copy()
        span_damping = np.concatenate([np.repeat(unit, span.d), self.diag[net.d * net.k:]])
        H[np.diag_indices_from(H)] += mu * span_damping + self.eps
        solve_perp, solve_span = _spd_solver(S), _spd_solver(H)

        def solve(v):
            VA, vb1, VA2, vb2 = net.unpack(v)
            C = Q.T @ VA
            perp = solve_perp((VA - Q @ C).T).T
            yC, yb1, yA2, yb2 = span.unpack(solve_span(span.pack(C, vb1, VA2, vb2)))
            return net.pack(Q @ yC + perp, yb1, yA2, yb2)

        return solve


PRECONDITIONERS = {"structured": _StructuredPreconditioner, "full": _FullPreconditioner,
                   "block": _BlockPreconditioner}

# Parameters up to which the preconditioner holds the whole Gram matrix.
FULL_PRECONDITIONER_MAX = 1200


def refine(X, Y, A1, b1, A2, b2, activation, *, max_iter=50, tol=1e-12, max_cg=50, cg_tol=0.1,
           n_precondition=None, refresh_cg=None, project=True, preconditioner="auto", block=None, max_step=1.0,
           stall=None, rng, callback=None):
    """Minimise sum((F(X) - Y)^2) / (2 n) from the given network.

    Y is (n, m) and A2 (k, m). ``preconditioner`` of the CG solves:
    "structured" (the default "auto": the Gauss-Newton matrix of standard
    Gaussian inputs, O(d k^2 + k^4) per application whatever n, its small
    dense block from ``n_precondition`` rows, None: max(2048, 32 q);
    _StructuredPreconditioner), "full" (J^T J on ``n_precondition`` rows,
    None: 2048, O(rows p^2 + p^3) per rebuild), "block" (its diagonal
    blocks) or
    "empirical" (full up to FULL_PRECONDITIONER_MAX parameters, block
    above; the former default). ``block`` (True/False) is the former flag
    for "block"/"full". The preconditioner is rebuilt at the current network
    when the last solve needed more than ``refresh_cg`` CG iterations (None:
    after every accepted step for "structured", 10 otherwise).
    ``max_step``: a step that moves some hidden unit's weight vector by more
    than max_step times its norm (at least 0.1 of the largest unit's norm)
    is rejected like one that does not decrease the loss (the damping grows
    fourfold); None or 0: no such limit. ``project`` replaces the output
    layer by its least squares optimum after each accepted step.
    ``callback(A1, b1, A2, b2, loss)``, if given, is called after every
    accepted step; returning True stops there. Converged means the relative
    decrease of a step fell below ``tol``, the loss reached 1e-30 of the
    labels' variance, or no step could decrease it. ``stall=(w, f)`` also stops, not converged, when the last w
    accepted steps lowered the loss by less than the fraction f together.
    """
    n, d = X.shape
    k, m = A2.shape
    net = _Net(d, k, m)
    state = _State(X, Y, net.pack(A1, b1, A2, b2), net, activation)
    floor = 1e-30 * 0.5 * max(np.sum(np.var(Y, axis=0)), np.finfo(float).tiny)
    losses, mu, n_cg, passes, it = [state.loss], 1e-3, 0, 1, 0
    converged = state.loss <= floor
    gram, built_at, g, g0, used, n_gram = None, None, None, None, 0, 0
    if block is not None:  # the former flag
        preconditioner = "block" if block else "full"
    if preconditioner == "empirical":
        preconditioner = "block" if net.size > FULL_PRECONDITIONER_MAX else "full"
    elif preconditioner == "auto":
        preconditioner = "structured"
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner: expected one of {('auto', 'empirical') + tuple(PRECONDITIONERS)}, "
                         f"got {preconditioner!r}")
    if refresh_cg is None:
        # The structured matrix costs about one Gauss-Newton product to
        # rebuild, and a stale one (an old span(A1)) costs CG iterations; the
        # empirical ones are kept while solves stay short.
        refresh_cg = 0 if preconditioner == "structured" else 10
    if n_precondition is None:
        # The structured matrix's dense block has q = k^2 + k + k m + m
        # parameters; its sampling error sqrt(q / rows) is what CG corrects
        # (d=100, k=20, n=2e5 from 0.3 away: 11, 5.9 and 5.0 CG iterations
        # per step on 2048, 8192 and 32 q = 14112 rows, for a build that costs
        # about one Gauss-Newton product on all rows).
        n_precondition = max(2048, 32 * (k * k + k + k * m + m)) if preconditioner == "structured" else 2048
    rows = np.sort(rng.choice(n, size=min(n, n_precondition), replace=False))
    preconditioner = PRECONDITIONERS[preconditioner]
    while not converged and it < max_iter:
        it += 1
        if g is None:
            g = _gradient(X, state, net) / n
            passes += 1
        if gram is None or (used > refresh_cg and built_at is not state):
            gram, built_at = preconditioner(X, state, rows, net), state
            n_gram += 1
        diag, precondition = gram.diag, gram.damp(mu)

        def hvp(v):
            return _gn_product(X, state, v, net) / n + mu * diag * v

        # Inexact Newton (Eisenstat and Walker 1996): solve loosely while
        # the gradient is large, tightly near the optimum.
        g_norm = np.linalg.norm(g)
        g0 = g_norm if g0 is None else g0
        rtol = min(cg_tol, np.sqrt(g_norm / g0))
        delta, residual, used = _pcg(hvp, -g, precondition, max_cg, rtol)
        n_cg += used
        passes += used
        # The model's decrease -g.delta - delta.J^TJ.delta / 2, with J^TJ delta
        # = -g - residual - mu D delta from the CG equations (no extra pass).
        predicted = 0.5 * (-(g @ delta) + residual @ delta + mu * (delta * diag) @ delta)
        if max_step and _too_long(delta, state.theta, net, max_step):
            rho = -1.0  # outside the trust region: a failed step, without a pass
        else:
            trial = _State(X, Y, state.theta + delta, net, activation)
            passes += 1
            rho = (state.loss - trial.loss) / predicted if predicted > 0 else -1.0
        if rho > 0:
            if project:
                trial.project_output(Y, net)
            decrease = state.loss - trial.loss
            state, g = trial, None
            losses.append(state.loss)
            # Nielsen (1999) with a floor of 1/10 (his 1/3 took 11 steps
            # instead of 8 from 0.3 away at d=50, k=10, 8192 rows, seeds 0-5,
            # with the structured preconditioner; docs/method.md).
            mu *= max(0.1, 1 - (2 * rho - 1) ** 3)
            if callback is not None and callback(*net.unpack(state.theta), state.loss):
                break
            converged = decrease <= tol * state.loss or state.loss <= floor
            if stall and not converged and len(losses) > stall[0]:
                window, fraction = stall
                if losses[-1] > (1 - fraction) * losses[-1 - window]:
                    break  # a plateau: stop, not converged
        else:
            mu *= 4.0
            converged = mu > 1e12  # no decrease possible from here
    A1, b1, A2, b2 = (p.copy() for p in net.unpack(state.theta))
    return RefineResult(A1, b1, A2, b2, losses, it, n_cg, passes, n_gram, converged)


def _too_long(delta, theta, net, max_step):
    """Whether delta moves some hidden unit's weights A1[:, j] by more than
    max_step times max(|A1[:, j]|, 0.1 max_i |A1[:, i]|): a trust region
    per unit. From random starts, Gauss-Newton steps along a unit of small
    output weight (little damping there) threw it 5-30 times its norm away,
    into a saturated unit and a local minimum: with the structured
    preconditioner 2 of 12 random starts at d=50, k=10 (8192 rows) reached
    the optimum, 24 of 24 with this limit (docs/method.md)."""
    norms = np.linalg.norm(net.unpack(theta)[0], axis=0)
    largest = norms.max(initial=0.0)
    if not largest > 0:
        return False
    steps = np.linalg.norm(net.unpack(delta)[0], axis=0)
    return bool(np.any(steps > max_step * np.maximum(norms, 0.1 * largest)))


def _pcg(apply, b, precondition, max_iter, rtol):
    x = np.zeros_like(b)
    r = b.copy()
    b_norm = np.linalg.norm(b)
    if not b_norm > 0:
        return x, r, 0
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    for i in range(1, max_iter + 1):
        Ap = apply(p)
        pAp = p @ Ap
        if not (pAp > 0 and np.isfinite(pAp) and rz > 0):
            return x, r, i  # breakdown (rounding on a singular system): keep the last iterate
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        if np.linalg.norm(r) <= rtol * b_norm:
            return x, r, i
        z = precondition(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return x, r, max_iter
