"""Local refinement of a two-layer network: Levenberg-Marquardt on the mean
squared error or the softmax cross-entropy, optionally with an L2 penalty,
with matrix-free Gauss-Newton products.

F = sigma(X A1 + b1) A2 + b2 with m outputs (A2 is k x m). The Jacobian J
of the n*m outputs is never formed: a product with J^T J costs two
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

Classification (``loss="softmax"``): F are logits, the data loss is the
mean cross-entropy -mean_i sum_c Y_ic log softmax(F_i)_c, and J^T J becomes
the generalised Gauss-Newton matrix J^T H J (Schraudolph 2002), H_i =
diag(p_i) - p_i p_i^T per row (``gn_softmax_product_acc``); the gradient is
J^T (P - Y). Everything else is the same, the preconditioners weighing each
row by H_i. Adding one constant to all m logits changes no probability, so
J^T H J is singular along (A2 + w 1^T, b2 + c 1): the damping keeps the
solves regular, and each network is moved to the gauge where every row of
(A2, b2) sums to zero (where |A2| is smallest).

Penalty (``alpha``): scikit-learn's alpha / (2 n) (|A1|^2 + |A2|^2), biases
free, added to the data loss; its Hessian alpha / n on the weights enters
the products, the preconditioners and the Marquardt scaling, and the
output layer's projection becomes ridge (penalised logistic) regression.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._output import softmax_loss, softmax_output
from ._sources import run_pass
from .accumulate import GaussNewtonProduct, NetworkGradient, NetworkLoss, gauss_newton_sums, gradient_sums
from .activations import value_and_slope
from ._workers import SERIAL

LOSSES = ("squared", "softmax")


@dataclass
class RefineResult:
    A1: np.ndarray
    b1: np.ndarray
    A2: np.ndarray
    b2: np.ndarray
    losses: list        # the penalised objective after each accepted step, starting value first
    n_iter: int
    n_cg: int
    n_passes: int       # passes over X (forward, gradient and Gauss-Newton products)
    n_gram: int         # preconditioner Gram matrices computed
    converged: bool
    loss: str = "squared"  # the data loss: "squared" (sum of squared residuals / (2 n)) or "softmax"


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

    @property
    def weights(self):
        """1 on the weights (A1, A2), 0 on the biases: where the penalty acts."""
        return self.pack(np.ones((self.d, self.k)), np.zeros(self.k), np.ones((self.k, self.m)), np.zeros(self.m))

    def centred(self, theta):
        """theta with every row of (A2, b2) centred over the m outputs: the
        same softmax probabilities, the smallest |A2|."""
        A1, b1, A2, b2 = self.unpack(theta)
        return self.pack(A1, b1, A2 - A2.mean(axis=1, keepdims=True), b2 - b2.mean())


def _data_loss(F, Y, loss):
    """(data loss, R = n times its gradient in the outputs F, softmax
    probabilities or None)."""
    if loss == "squared":
        R = F - Y
        return 0.5 * np.sum(R * R) / F.shape[0], R, None
    value, P = softmax_loss(F, Y)
    return value, P - Y, P


def _penalty(alpha, n, A1, A2):
    return 0.5 * alpha / n * (np.sum(A1 * A1) + np.sum(A2 * A2))


class _State:
    """The network's activations, slopes, residuals R (the outputs'
    gradient, times n: F - Y or P - Y), softmax probabilities P (None for
    the squared loss) and penalised loss at theta."""

    def __init__(self, X, Y, theta, net, activation, loss="squared", alpha=0.0, workers=SERIAL):
        A1, b1, self.A2, b2 = net.unpack(theta)
        self.theta, self.kind, self.alpha = theta, loss, alpha
        n, k = X.shape[0], net.k
        self.S, self.D = np.empty((n, k)), np.empty((n, k))
        A1x = A1.astype(X.dtype)  # the product in X's precision (a float32 X is not copied)

        def layer(start, stop):
            self.S[start:stop], self.D[start:stop] = value_and_slope(activation, X[start:stop] @ A1x + b1)

        workers.rows(layer, n)
        self.loss, self.R, self.P = _data_loss(self.S @ self.A2 + b2, Y, loss)
        if alpha:
            self.loss += _penalty(alpha, X.shape[0], A1, self.A2)

    def project_output(self, Y, net):
        """Replace (A2, b2) by their optimum given the hidden layer
        (variable projection, Golub and Pereyra 1973): least squares (ridge
        with alpha), or penalised logistic regression from the current
        layer for softmax. The loss can only drop, and the nonlinear steps
        no longer have to carry the linear parameters along. O(n k^2) for
        least squares, no pass over X."""
        n, k = self.S.shape
        A1, b1, A2, b2 = net.unpack(self.theta)
        if self.P is None:
            coef, F = _ridge_output(self.S, Y, self.alpha)
            A2, b2 = coef[:k], coef[k]
        else:
            A2, b2 = softmax_output(self.S, Y, self.alpha, init=(A2, b2))
            F = self.S @ A2 + b2
        loss, R, P = _data_loss(F, Y, self.kind)
        if self.alpha:
            loss += _penalty(self.alpha, n, A1, A2)
        if loss < self.loss:
            self.theta = net.pack(A1, b1, A2, b2)
            self.A2, self.R, self.P, self.loss = self.theta[net.d * k + k: -net.m].reshape(k, net.m), R, P, loss


def _ridge_output(S, Y, alpha):
    """(coef (k + 1, m), [S, 1] coef): the least squares of Y on [S, 1]
    with the penalty alpha |coef[:k]|^2 (rows sqrt(alpha) I appended)."""
    n, k = S.shape
    F = np.empty((n, k + 1))
    F[:, :k], F[:, k] = S, 1.0
    if alpha:
        penalty = np.zeros((k, k + 1))
        penalty[:, :k] = np.sqrt(alpha) * np.eye(k)
        coef, *_ = np.linalg.lstsq(np.vstack([F, penalty]), np.vstack([Y, np.zeros((k, Y.shape[1]))]), rcond=None)
    else:
        coef, *_ = np.linalg.lstsq(F, Y, rcond=None)
    return coef, F @ coef


def _gn_product(X, state, v, net, workers=SERIAL):
    """J^T J v (J^T H J v for softmax) in one pass over X, the chunks of
    rows summed in order. With X in float32 the two products per block run
    in float32 (the sums across blocks stay float64): relative error about
    1e-7."""
    V = net.unpack(v)

    def product(start, stop):
        rows = slice(start, stop)
        return gauss_newton_sums(X[rows], state.S[rows], state.D[rows], state.A2, V,
                                 None if state.P is None else state.P[rows])

    return net.pack(*workers.sum_rows(product, X.shape[0]))


def _gradient(X, state, net, workers=SERIAL):
    """J^T r (not divided by n), one pass over X: the data loss's gradient
    times n, r = F - Y or P - Y; X^T W in X's precision (a float32 X is not
    copied to float64), the chunks of rows summed in float64, in order."""
    def sums(start, stop):
        rows = slice(start, stop)
        return gradient_sums(X[rows], state.S[rows], state.D[rows], state.R[rows], state.A2)

    return net.pack(*workers.sum_rows(sums, X.shape[0]))


def _objective_gradient(X, state, net, alpha, workers=SERIAL):
    """The penalised loss's gradient: (J^T r + alpha theta_weights) / n."""
    g = _gradient(X, state, net, workers)
    if alpha:
        g += alpha * net.weights * state.theta
    return g / X.shape[0]


def _subsample_gram(X, state, rows, net, ridge=0.0):
    """J^T J / r (J^T H J / r) on r rows plus ``ridge`` on the weights, and
    its diagonal (the Marquardt scaling)."""
    P = None if state.P is None else state.P[rows]
    return _gram(X[rows], state.S[rows], state.D[rows], state.A2, net, P, ridge)


def _gram(Xs, Ss, Ds, A2, net, Ps=None, ridge=0.0):
    """J^T J / r of the network with inputs Xs (r, net.d), activations Ss and
    slopes Ds (r, k) and output layer A2 (k, m), plus ``ridge`` on the
    diagonal of the weights, and its diagonal. O(r p^2 m).

    With softmax probabilities Ps (r, m): J^T H J / r, from the m rank-one
    terms of H_i = sum_c p_c (e_c - p)(e_c - p)^T, the c-th one's row of
    the Jacobian being sqrt(p_c) (e_c - p)^T J_i."""
    r = Xs.shape[0]
    dk, k, m = net.d * net.k, net.k, net.m
    H = np.zeros((net.size, net.size))
    J = np.zeros((r, net.size))
    for c in range(m):
        if Ps is None:
            G = Ds * A2[:, c]
        else:
            E = -np.sqrt(Ps[:, c: c + 1]) * Ps
            E[:, c] += np.sqrt(Ps[:, c])
            G = Ds * (E @ A2.T)
        J[:, :dk] = (G[:, :, None] * Xs[:, None, :]).reshape(r, -1)
        J[:, dk: dk + k] = G
        if Ps is None:
            J[:, dk + k: dk + k + k * m] = 0.0
            J[:, dk + k + c: dk + k + k * m: m] = Ss
            J[:, dk + k + k * m:] = 0.0
            J[:, dk + k + k * m + c] = 1.0
        else:
            J[:, dk + k: dk + k + k * m] = (Ss[:, :, None] * E[:, None, :]).reshape(r, -1)
            J[:, dk + k + k * m:] = E
        H += J.T @ J
    H /= max(r, 1)
    if ridge:
        H[np.diag_indices_from(H)] += ridge * net.weights
    return H, np.maximum(np.diag(H).copy(), 1e-12)


class _FullPreconditioner:
    """(J^T J / r + mu D)^{-1} with the whole p x p Gram matrix of r rows:
    O(r p^2) to build, O(p^3) to factor, p^2 memory."""

    def __init__(self, X, state, rows, net, ridge=0.0):
        self.H, self.diag = _subsample_gram(X, state, rows, net, ridge)

    def damp(self, mu):
        A = self.H.copy()
        A[np.diag_indices_from(A)] += mu * self.diag + 1e-12 * self.diag.max()
        return _spd_solver(A)


class _BlockPreconditioner:
    """The same with only the diagonal blocks of J^T J / r: one (d+1) block per
    hidden unit over (A1[:, j], b1_j), and one (k+1) block, shared by the
    outputs, over (A2[:, c], b2_c). O(r k d^2) to build, O(k d^3) to factor,
    k d^2 memory: for large p = dk, where the full matrix is too big; the
    CG iterations then also correct the coupling between units. For
    softmax each output has its own block, weighted by p_c (1 - p_c)."""

    def __init__(self, X, state, rows, net, ridge=0.0):
        d, k, m = net.d, net.k, net.m
        r = rows.shape[0]
        X1 = np.hstack([X[rows], np.ones((r, 1))])
        S1 = np.hstack([state.S[rows], np.ones((r, 1))])
        if state.P is None:
            w = state.D[rows] ** 2 * np.sum(state.A2 ** 2, axis=1)
            self.out = (S1.T @ S1 / r)[None]  # shared by the outputs
        else:  # diag(A2 H_i A2^T) and H_i's diagonal p_c (1 - p_c)
            P = state.P[rows]
            w = state.D[rows] ** 2 * (P @ (state.A2 ** 2).T - (P @ state.A2.T) ** 2)
            self.out = np.stack([(S1 * (P[:, c: c + 1] * (1 - P[:, c: c + 1]))).T @ S1 / r for c in range(m)])
        self.units = np.stack([(X1 * w[:, j: j + 1]).T @ X1 / r for j in range(k)])
        if ridge:
            self.units[:, np.arange(d), np.arange(d)] += ridge
            self.out[:, np.arange(k), np.arange(k)] += ridge
        self.net = net
        unit_diag = np.diagonal(self.units, axis1=1, axis2=2)
        out_diag = np.diagonal(self.out, axis1=1, axis2=2)
        self.diag = np.maximum(net.pack(unit_diag[:, :d].T, unit_diag[:, d],
                                        np.broadcast_to(out_diag[:, :k].T, (k, m)),
                                        np.broadcast_to(out_diag[:, k], (m,))), 1e-12)

    def damp(self, mu):
        net = self.net
        d, k = net.d, net.k
        eps = 1e-12 * self.diag.max()
        DA, Db1, DA2, Db2 = net.unpack(mu * self.diag + eps)
        unit_factors = []
        for j in range(k):
            A = self.units[j].copy()
            A[np.diag_indices(d + 1)] += np.append(DA[:, j], Db1[j])
            unit_factors.append(_spd_solver(A))
        out_factors = []
        for c, block in enumerate(self.out):  # one block shared by every output for least squares
            out = block.copy()
            out[np.diag_indices(k + 1)] += np.append(DA2[:, c], Db2[c])
            out_factors.append(_spd_solver(out))

        def solve(v):
            VA, vb1, VA2, vb2 = net.unpack(v)
            XA, xb1 = np.empty_like(VA), np.empty_like(vb1)
            for j in range(k):
                z = unit_factors[j](np.append(VA[:, j], vb1[j]))
                XA[:, j], xb1[j] = z[:d], z[d]
            rhs = np.vstack([VA2, vb2[None, :]])
            if len(out_factors) == 1:
                Z = out_factors[0](rhs)
            else:
                Z = np.column_stack([f(rhs[:, c]) for c, f in enumerate(out_factors)])
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

    For softmax the rows' weights H_i = diag(p_i) - p_i p_i^T depend on x
    only through z as well, so the same split holds for J^T H J: S_ij =
    mean(sigma'_i sigma'_j (A2 H A2^T)_ij), and the span block is the
    H-weighted Gram matrix. The penalty ``ridge`` (alpha / n on the
    weights) is isotropic and keeps the split too.
    """

    def __init__(self, X, state, rows, net, ridge=0.0, slope_gram=None):
        d, k, m = net.d, net.k, net.m
        A1 = net.unpack(state.theta)[0]
        U, sv, _ = np.linalg.svd(A1, full_matrices=False)  # O(d k^2)
        # Rank tolerance: coinciding or vanishing units leave a smaller span;
        # the complement then has d - r dimensions (I - Q Q^T covers them).
        rank = int(np.sum(sv > max(d, k) * np.finfo(float).eps * sv[0])) if sv.size and sv[0] > 0 else 0
        self.Q = np.ascontiguousarray(U[:, :rank])
        self.net, self.span = net, _Net(rank, k, m)
        n = X.shape[0]
        if state.P is None:
            # D^T D / n from all the rows: here, or from a pass over rows out of core.
            self.S = (state.D.T @ state.D / n if slope_gram is None else slope_gram) * (state.A2 @ state.A2.T)
            P = None
        else:  # (A2 H_i A2^T)_ij = sum_c p_c A2_ic A2_jc - (A2 p)_i (A2 p)_j
            DA = state.D * (state.P @ state.A2.T)
            self.S = -(DA.T @ DA)
            for c in range(m):
                self.S += ((state.D * state.P[:, c: c + 1]).T @ state.D) * np.outer(state.A2[:, c], state.A2[:, c])
            self.S /= n
            P = state.P[rows]
        if ridge:
            self.S[np.diag_indices(k)] += ridge
        self.H, span_diag = _gram(X[rows] @ self.Q, state.S[rows], state.D[rows], state.A2, self.span, P, ridge)
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


class _Memory:
    """Rows X (n, d) and targets Y (n, m) in memory: each state keeps the
    rows' activations, which the gradient and the CG products reuse. The CG
    products run on a float32 copy of a large float64 X
    (MIXED_PRECISION_MIN, or ``X32`` if the caller has it), and so do the
    loss and the gradient until the loss falls below COARSE_LOSS."""

    def __init__(self, X, Y, net, activation, loss, alpha, workers, X32=None):
        self.X, self.Y, self.net, self.activation = X, Y, net, activation
        self.kind, self.alpha, self.workers = loss, alpha, workers
        self.n = X.shape[0]
        # The CG products need only CG's accuracy: in float32 they cost
        # less, and the solves stop at 1e-4 (float32 products cannot go much
        # further), so the steps converge linearly at that rate instead of
        # quadratically at the very end.
        mixed = X.dtype == np.float64 and X.size >= MIXED_PRECISION_MIN
        self.X_cg = (X.astype(np.float32) if X32 is None else X32) if mixed else X
        self.rtol_min = 1e-4 if mixed else 0.0
        self.variance = max(np.sum(np.var(Y, axis=0)), np.finfo(float).tiny)
        self.coarse = COARSE_LOSS * 0.5 * self.variance if mixed else 0.0

    def state(self, theta, precise):
        """The state at theta, on X (``precise``) or the float32 copy: one pass."""
        X = self.X if precise else self.X_cg
        state = _State(X, self.Y, theta, self.net, self.activation, self.kind, self.alpha, self.workers)
        state.X = X
        return state

    def settle(self, state):
        """(state, passes): a state on the copy whose loss fell below the
        coarse threshold, again on X (one pass)."""
        if state.X is not self.X and state.loss <= self.coarse:
            return self.state(state.theta, True), 1
        return state, 0

    def gradient(self, state):
        return _objective_gradient(state.X, state, self.net, self.alpha, self.workers)

    def product(self, state, v):
        return _gn_product(self.X_cg, state, v, self.net, self.workers) / self.n

    def project(self, state):
        state.project_output(self.Y, self.net)

    def sample(self, size, rng):
        return np.sort(rng.choice(self.n, size=min(self.n, size), replace=False))

    def preconditioner(self, kind, state, rows, ridge):
        return kind(self.X, state, rows, self.net, ridge)


class StreamedRows:
    """Rows out of core for ``refine`` (the squared loss): every state,
    gradient and Gauss-Newton product is a pass over ``source`` feeding the
    accumulators ``NetworkLoss``, ``NetworkGradient`` and
    ``GaussNewtonProduct``, so memory does not grow with n.

    ``source`` gives blocks (Z_block (b, e) float64, Y_block (b, m)) whose
    rows are the refinement's inputs times L: x = z L, L (e, d) (the
    whitening, which the passes fold into the weights, L A1, instead of
    applying it to every block: O(b e k) rather than O(b e d)). ``sample``
    = (X_s, Y_s): rows in the refinement's coordinates, a uniform sample
    held in memory, for the structured preconditioner's dense block (the
    only preconditioner here). ``variance``: the sum over the outputs of
    the targets' variances. ``workers`` come with the source.
    """

    def __init__(self, source, L, sample, activation, variance, alpha=0.0):
        self.source, self.L, self.activation, self.alpha = source, L, activation, alpha
        self.X_s, self.Y_s = sample
        self.n = source.n
        self.variance = variance
        self.rtol_min, self.coarse = 0.0, 0.0

    def bind(self, net):
        self.net = net
        return self

    def _weights(self, theta):
        A1, b1, A2, b2 = self.net.unpack(theta)
        return self.L @ A1, b1, A2, b2

    def _penalty(self, theta):
        A1, _, A2, _ = self.net.unpack(theta)
        return _penalty(self.alpha, self.n, A1, A2) if self.alpha else 0.0

    def state(self, theta, precise=True):
        state = _Streamed(theta, self.net)
        if np.isfinite(theta).all():
            state.equations = run_pass(self.source, NetworkLoss(*self._weights(theta), self.activation))
            state.loss = state.equations.result() + self._penalty(theta)
        return state

    def errors(self, A1, b1, A2, b2):
        """The mean squared error of each output (m,) of a network over
        every row (no penalty): one pass."""
        return run_pass(self.source, NetworkLoss(self.L @ A1, b1, A2, b2, self.activation)).errors()

    def settle(self, state):
        return state, 0

    def gradient(self, state):
        res = run_pass(self.source, NetworkGradient(*self._weights(state.theta), self.activation)).result()
        state.loss, state.slope_gram = res.loss + self._penalty(state.theta), res.slope_gram
        g = self.net.pack(self.L.T @ res.A1, res.b1, res.A2, res.b2)
        return g + (self.alpha / self.n) * self.net.weights * state.theta if self.alpha else g

    def product(self, state, v):
        VA, vb1, VA2, vb2 = self.net.unpack(v)
        acc = GaussNewtonProduct(*self._weights(state.theta), self.activation, (self.L @ VA, vb1, VA2, vb2))
        outA, outb1, outA2, outb2 = run_pass(self.source, acc).result()
        return self.net.pack(self.L.T @ outA, outb1, outA2, outb2)

    def project(self, state):
        """The output layer's optimum for the hidden layer, from the normal
        equations of the state's pass (no pass): kept if it lowers the loss."""
        A1, b1, _, _ = self.net.unpack(state.theta)
        A2, b2, loss = state.equations.output_layer(self.alpha / self.n)
        if self.alpha:
            loss += 0.5 * self.alpha / self.n * float(np.sum(A1 * A1))
        if loss < state.loss:
            state.theta = self.net.pack(A1, b1, A2, b2)
            state.A2, state.loss = self.net.unpack(state.theta)[2], loss

    def sample(self, size, rng):
        return np.sort(rng.choice(self.X_s.shape[0], size=min(self.X_s.shape[0], size), replace=False))

    def preconditioner(self, kind, state, rows, ridge):
        if kind is not _StructuredPreconditioner:
            raise ValueError("preconditioner: rows out of core take 'structured' (or 'auto') only")
        on_sample = _State(self.X_s, self.Y_s, state.theta, self.net, self.activation)
        return kind(self.X_s, on_sample, rows, self.net, ridge, slope_gram=state.slope_gram)


class _Streamed:
    """A state of ``StreamedRows``: theta, the penalised loss (inf for a
    non-finite theta) and the pass's normal equations; the gradient's pass
    adds the slopes' Gram matrix."""

    def __init__(self, theta, net):
        self.theta, self.A2, self.P = theta, net.unpack(theta)[2], None
        self.loss, self.equations, self.slope_gram = np.inf, None, None


PRECONDITIONERS = {"structured": _StructuredPreconditioner, "full": _FullPreconditioner,
                   "block": _BlockPreconditioner}

# Parameters up to which the preconditioner holds the whole Gram matrix.
FULL_PRECONDITIONER_MAX = 1200
# Largest cost of a structured preconditioner's build, in units of n d k
# (about one Gauss-Newton product), for which "auto" picks it ("block"
# above). Planted sigmoid networks: 1.1 and 14 at d=50, k=10 (all rows,
# the 8336-row subsample); 7 and 42 at d=100, k=20, n=2e5, where "block"
# on the subsample made the fit 2.5 times slower (61 s against 25 s, seeds
# 0-1). Digits (n=1347, 10 classes): 200 at k=16 and 980 at k=32, where
# "block" was 6 and 18 times faster.
STRUCTURED_MAX_COST = 100.0

# The loss at which a fit counts as exact, relative to the targets'
# variance: rounding keeps the squared loss of an exact network at 1e-32 to
# 1e-30 of it (planted sigmoid networks, d=50 to 1000), where the steps
# stop decreasing it and, before this floor was raised from 1e-30, ran on
# for max_iter steps of rejected trials (a d=1000 fit spent 250 of its 580
# s there).
LOSS_FLOOR = 1e-26
# The structured preconditioner's dense block is built on
# PRECONDITION_BALANCE n d k / q^2 rows (at least 2048, at most 32 q): its
# build, O(rows q^2), then costs about two Gauss-Newton products, O(n d k)
# each. 32 q rows everywhere built it on 14112 rows at d=100, k=20 (19% of
# the fit's CPU time); balanced, CG needs about twice the iterations but
# the fits took 12% less CPU time at d=100, k=20, n=2e5 (5.4-6.1 s against
# 6.5-6.7 s) and at d=50, k=10, n=1e5 (1.0-1.6 s against 1.2-2.2 s), seeds
# 0-2, equally exact.
PRECONDITION_BALANCE = 4.0
# The CG products run on a float32 copy of X from this many entries on
# (n d); see refine.
MIXED_PRECISION_MIN = 1 << 20

# The loss, below which (times half the labels' variance) refine evaluates
# the loss and the gradient in float64 rather than on the float32 copy of X:
# the copy's rounding (about 6e-8 of each entry) moves the loss by about
# 1e-13 of the variance, far below the decreases the steps are judged by
# until about here.
COARSE_LOSS = 1e-8

# Softmax (issue #12), measured with one BLAS thread on labels sampled from
# planted sigmoid networks, alpha = 1, starts 0.3 from the truth, tol 1e-10,
# medians. d=5, k=3, m=2 and 3, n=5000, 12 problems: steps / CG iterations
# / passes over X were 43.5 / 87.5 / 170 with "structured", 52.5 / 260 / 368
# with "full", 49 / 481 / 570 with "block"; d=30, k=6, m=4, n=2e4, 4
# problems: 41 / 142 / 224 structured, 39 / 241 / 320 full. So "auto" is
# "structured" for both losses. The output layer's projection
# (softmax_output, Newton) took 15-17% of the steps and passes away but
# 1.4-1.8 times the time (0.27 against 0.19 s, 3.2 against 1.8 s): off by
# default for softmax.


def refine(X, Y, A1, b1, A2, b2, activation, *, loss="squared", alpha=0.0, max_iter=50, tol=1e-12, max_cg=50,
           cg_tol=0.1, n_precondition=None, refresh_cg=None, project=None, preconditioner="auto", block=None,
           max_step=1.0, stall=None, rng, callback=None, X32=None, workers=SERIAL):
    """Minimise data_loss + alpha / (2 n) (|A1|^2 + |A2|^2) from the given
    network (the biases are not penalised).

    Y is (n, m) and A2 (k, m). ``loss``: "squared", data_loss =
    sum((F(X) - Y)^2) / (2 n); or "softmax" (m >= 2), the mean
    cross-entropy of the logits F(X) against targets Y whose rows sum to
    one (one-hot or soft labels). With softmax the returned (A2, b2) are
    centred over the outputs (every row sums to zero). ``alpha`` >= 0: the
    L2 penalty, scikit-learn's convention. ``preconditioner`` of the CG solves:
    "structured" (what "auto", the default, picks for both losses when its
    build costs at most STRUCTURED_MAX_COST Gauss-Newton products, "block"
    otherwise: few rows and many parameters; the Gauss-Newton
    matrix of standard Gaussian inputs, O(d k^2 + k^4) per application
    whatever n, its small dense block from ``n_precondition`` rows, None:
    ``_structured_rows``;
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
    by the factor it overshoots by, at least fourfold); None or 0: no such
    limit. ``project`` replaces the output
    layer by its optimum given the hidden layer after each accepted step
    (ridge regression, or penalised logistic regression for softmax:
    ``fastten._output.softmax_output``); None: for the squared loss only
    (for softmax it saved 15% of the steps but took 1.4-1.8 times as long:
    its Newton solves cost O(n k^2 m^2) each; measured above).
    ``callback(A1, b1, A2, b2, loss)``, if given, is called after every
    accepted step with the penalised objective; returning True stops there.
    ``X32``: X in float32, if the caller has it, for the CG products (else
    refine copies X when it is large: MIXED_PRECISION_MIN). ``workers``
    (``fastten._workers.Workers``): the threads that share each pass over
    X, by fixed chunks of rows (the same result on any number).
    X may also be a ``StreamedRows`` (Y None): rows out of core, the
    squared loss, every state, gradient and product a pass over them.
    ``losses`` and every test below are on the penalised objective too.
    Converged means the relative
    decrease of a step fell below ``tol``, the loss reached LOSS_FLOOR of the
    labels' variance, or no step could decrease it. ``stall=(w, f)`` also stops, not converged, when the last w
    accepted steps lowered the loss by less than the fraction f together.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha: expected a number >= 0, got {alpha!r}")
    k, m = A2.shape
    if loss == "softmax" and m < 2:
        raise ValueError(f"Y: expected at least two columns (classes) for loss='softmax', got {m}")
    if project is None:
        project = loss == "squared"
    if isinstance(X, StreamedRows):
        if loss != "squared":
            raise ValueError(f"loss: rows out of core take 'squared', got {loss!r}")
        net = _Net(A1.shape[0], k, m)
        data = X.bind(net)
    else:
        net = _Net(X.shape[1], k, m)
        data = _Memory(X, Y, net, activation, loss, alpha, workers, X32)
    n, d = data.n, net.d
    gauge = net.centred if loss == "softmax" else (lambda theta: theta)
    ridge = alpha / n
    # The loss and the gradient run on the CG products' float32 copy of X
    # (_Memory) until the loss falls below its coarse threshold, then on X.
    floor = LOSS_FLOOR * 0.5 * data.variance
    state, passes = data.settle(data.state(gauge(net.pack(A1, b1, A2, b2)), False))
    passes += 1
    losses, mu, n_cg, it = [state.loss], 1e-3, 0, 0
    converged = state.loss <= floor
    gram, built_at, g, g0, used, n_gram = None, None, None, None, 0, 0
    if block is not None:  # the former flag
        preconditioner = "block" if block else "full"
    if preconditioner == "empirical":
        preconditioner = "block" if net.size > FULL_PRECONDITIONER_MAX else "full"
    elif preconditioner == "auto":
        # The structured matrix's build, O(rows q^2 m), against the CG
        # products it saves, O(n d k m) each: on few rows the products are
        # cheap and the block preconditioner's extra CG iterations cost
        # less than the builds (digits, n=1347, d=61, 10 classes, 50
        # steps: k=16 0.39 s against 2.5 s, k=32 0.6 s against 11 s, k=80
        # 10 steps 0.8 s against 66 s, the same test accuracy); on the
        # planted problems the structured one wins (STRUCTURED_MAX_COST).
        q = k * k + k + k * m + m
        ratio = min(n, _structured_rows(n, d, k, q)) * q * q / (n * d * k)
        preconditioner = "structured" if ratio <= STRUCTURED_MAX_COST else "block"
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
        # per step on 2048, 8192 and 32 q = 14112 rows); PRECONDITION_BALANCE
        # weighs that against the cost of the build.
        n_precondition = _structured_rows(n, d, k, k * k + k + k * m + m) if preconditioner == "structured" else 2048
    rows = data.sample(n_precondition, rng)
    preconditioner = PRECONDITIONERS[preconditioner]
    weights = net.weights
    while not converged and it < max_iter:
        it += 1
        precise = state.loss <= data.coarse
        if g is None:
            g = data.gradient(state)
            passes += 1
        if gram is None or (used > refresh_cg and built_at is not state):
            gram, built_at = data.preconditioner(preconditioner, state, rows, ridge), state
            n_gram += 1
        diag, precondition = gram.diag, gram.damp(mu)

        def hvp(v):
            out = data.product(state, v) + mu * diag * v
            return out + ridge * weights * v if alpha else out

        # Inexact Newton (Eisenstat and Walker 1996): solve loosely while
        # the gradient is large, tightly near the optimum.
        g_norm = np.linalg.norm(g)
        g0 = g_norm if g0 is None else g0
        rtol = min(cg_tol, max(np.sqrt(g_norm / g0), data.rtol_min))
        delta, residual, used = _pcg(hvp, -g, precondition, max_cg, rtol)
        n_cg += used
        passes += used
        # The model's decrease -g.delta - delta.B.delta / 2 (B = J^TJ / n, or
        # J^T H J / n, plus the penalty's alpha / n), with B delta = -g -
        # residual - mu D delta from the CG equations (no extra pass).
        predicted = 0.5 * (-(g @ delta) + residual @ delta + mu * (delta * diag) @ delta)
        over = _overshoot(delta, state.theta, net, max_step) if max_step else 0.0
        if over > 1:
            rho = -1.0  # outside the trust region: a failed step, without a pass
        else:
            trial = data.state(gauge(state.theta + delta), precise)
            passes += 1
            rho = (state.loss - trial.loss) / predicted if predicted > 0 else -1.0
        if rho > 0:
            if project:
                data.project(trial)
            decrease = state.loss - trial.loss
            state, g = trial, None
            state, more = data.settle(state)  # from here on in float64
            passes += more
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
            # A step f times too long for the trust region: the damping grows
            # f-fold (at least 4-fold). From the tensor start at n/d = 100
            # the first steps overshoot up to 120x (docs/method.md).
            mu *= max(4.0, over)
            converged = mu > 1e12  # no decrease possible from here
    A1, b1, A2, b2 = (p.copy() for p in net.unpack(state.theta))
    return RefineResult(A1, b1, A2, b2, losses, it, n_cg, passes, n_gram, converged, loss)


def _structured_rows(n, d, k, q):
    """Rows of the structured preconditioner's dense block (PRECONDITION_BALANCE)."""
    return max(2048, min(32 * q, int(PRECONDITION_BALANCE * n * d * k / q ** 2)))


def _overshoot(delta, theta, net, max_step):
    """The largest factor by which delta moves a hidden unit's weights
    A1[:, j] beyond max_step times max(|A1[:, j]|, 0.1 max_i |A1[:, i]|):
    a trust region per unit, left when the factor exceeds 1. From random
    starts, Gauss-Newton steps along a unit of small output weight (little
    damping there) threw it 5-30 times its norm away,
    into a saturated unit and a local minimum: with the structured
    preconditioner 2 of 12 random starts at d=50, k=10 (8192 rows) reached
    the optimum, 24 of 24 with this limit (docs/method.md)."""
    norms = np.linalg.norm(net.unpack(theta)[0], axis=0)
    largest = norms.max(initial=0.0)
    if not largest > 0:
        return 0.0
    steps = np.linalg.norm(net.unpack(delta)[0], axis=0)
    return float(np.max(steps / (max_step * np.maximum(norms, 0.1 * largest))))


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
