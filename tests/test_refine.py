"""The refinement's structured Gauss-Newton preconditioner (issue #11):
its fast inverse against a dense reference, its agreement with the
empirical Gauss-Newton matrix at large n, and the refinement it drives.
The penalty and the softmax cross-entropy (issue #12): the generalised
Gauss-Newton product, gradient and preconditioners against dense
references, the penalised optimum against scipy, and a planted 3-class
problem."""

import numpy as np
import pytest
import scipy.optimize
from scipy.special import expit, logsumexp, softmax

from fastten import _refine
from fastten._output import softmax_output
from fastten._refine import refine
from fastten.datasets import make_planted_network


def _jacobian(X, state, net):
    """The explicit Jacobian (n m x p) of F = sigma(X A1 + b1) A2 + b2, one
    block of rows per output (as in test_fit)."""
    n = X.shape[0]
    d, k, m = net.d, net.k, net.m
    blocks = []
    for c in range(m):
        G = state.D * state.A2[:, c]
        out = np.zeros((n, k * m))
        out[:, c::m] = state.S
        ones = np.zeros((n, m))
        ones[:, c] = 1.0
        blocks.append(np.hstack([(G[:, :, None] * X[:, None, :]).reshape(n, k * d), G, out, ones]))
    return np.vstack(blocks)


def _output_hessians(state, n):
    """The loss's Hessian in each row's outputs, (n, m, m): the identity for
    least squares, diag(p_i) - p_i p_i^T for softmax."""
    m = state.A2.shape[1]
    if getattr(state, "P", None) is None:
        return np.broadcast_to(np.eye(m), (n, m, m))
    P = state.P
    return np.einsum("ic,ce->ice", P, np.eye(m)) - np.einsum("ic,ie->ice", P, P)


def _gauss_newton(J, H):
    """J^T blockdiag(H_i) J for J from ``_jacobian`` (rows c * n + i) and
    H (n, m, m): the (generalised) Gauss-Newton matrix, written out."""
    n, m = H.shape[:2]
    J3 = J.reshape(m, n, -1)
    return np.einsum("cip,ice,eiq->pq", J3, H, J3)


def _dense_structured(X, state, rows, net, ridge=0.0):
    """The structured matrix written out in the full parameters, from first
    principles: with P = Q Q^T the projector on span(A1) (here from a QR
    factorisation, not the implementation's SVD), the first layer's
    directions split as V = P V + (I - P) V, and

    - every block touching P V or (b1, A2, b2) is the Gram matrix J^T J / r
      (J^T H J / r for softmax) of the rows, with the first layer's columns
      projected by P;
    - the (I - P) V block is S (x) (I - P), S_ij = mean(sigma'_i sigma'_j
      (A2 H A2^T)_ij) over all n rows (H = I for least squares);
    - nothing couples the two;
    - the penalty's ``ridge`` on the weights' diagonal splits the same
      way: into H (T keeps its P part) and S (its I - P part)."""
    d, k = net.d, net.k
    A1 = net.unpack(state.theta)[0]
    Q, R = np.linalg.qr(A1)
    Q = Q[:, np.abs(np.diag(R)) > 1e-10 * np.abs(R).max()]
    P = Q @ Q.T
    J = _jacobian(X[rows], _Rows(state, rows), net)
    H = _gauss_newton(J, _output_hessians(_Rows(state, rows), len(rows))) / len(rows)
    H[np.diag_indices_from(H)] += ridge * net.weights
    T = np.eye(net.size)
    T[: d * k, : d * k] = np.kron(np.eye(k), P)
    W = _output_hessians(state, X.shape[0])
    S = np.einsum("ri,rj,ic,rce,je->ij", state.D, state.D, state.A2, W, state.A2) / X.shape[0]
    S[np.diag_indices_from(S)] += ridge
    M = T @ H @ T
    M[: d * k, : d * k] += np.kron(S, np.eye(d) - P)
    return M, S, H


class _Rows:
    def __init__(self, state, rows):
        self.S, self.D, self.A2 = state.S[rows], state.D[rows], state.A2
        self.P = None if state.P is None else state.P[rows]


def _targets(rng, n, m, loss):
    """Labels for a loss: Gaussian for least squares, soft targets (rows of
    a random softmax) for the cross-entropy."""
    Y = rng.standard_normal((n, m))
    return Y if loss == "squared" else softmax(2 * Y, axis=1)


def _problem(n, d, k, m, seed, scale=0.8, loss="squared", alpha=0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    net = _refine._Net(d, k, m)
    theta = scale * rng.standard_normal(net.size)
    return X, net, _refine._State(X, _targets(rng, n, m, loss), theta, net, "sigmoid", loss, alpha), rng


@pytest.mark.parametrize("loss, m", [("squared", 1), ("squared", 2), ("softmax", 2), ("softmax", 3)])
@pytest.mark.parametrize("mu", [1e-1, 1e-6])
@pytest.mark.parametrize("degenerate", [False, True])
@pytest.mark.parametrize("ridge", [0.0, 0.05])
def test_structured_inverse_equals_the_dense_reference(loss, m, mu, degenerate, ridge):
    d, k, n = 6, 3, 400
    X, net, state, rng = _problem(n, d, k, m, seed=m, loss=loss)
    if degenerate:  # two coinciding units: span(A1) has rank 2
        A1, b1, A2, b2 = net.unpack(state.theta)
        A1 = A1.copy()
        A1[:, 2] = A1[:, 0]
        state = _refine._State(X, _targets(rng, n, m, loss), net.pack(A1, b1, A2, b2), net, "sigmoid", loss)
    rows = np.sort(rng.choice(n, 150, replace=False))
    pre = _refine._StructuredPreconditioner(X, state, rows, net, ridge)
    assert pre.Q.shape == (d, 2 if degenerate else 3)
    M, S, H = _dense_structured(X, state, rows, net, ridge)
    # The damping: S_jj on every weight of unit j, the Gram diagonal on (b1, A2, b2).
    expected_diag = np.concatenate([np.repeat(np.diag(S), d), np.diag(H)[d * k:]])
    np.testing.assert_allclose(pre.diag, expected_diag, rtol=1e-12)
    A = M + np.diag(mu * pre.diag + pre.eps)
    v = rng.standard_normal(net.size)
    ref = np.linalg.solve(A, v)
    # A well-posed solve (cond(A) <= 1e7 here): agreement to rounding.
    assert np.linalg.cond(A) < 1e8
    np.testing.assert_allclose(pre.damp(mu)(v), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    # And it is the inverse: applying A to the fast solve gives v back.
    np.testing.assert_allclose(A @ pre.damp(mu)(v), v, rtol=0, atol=1e-8 * np.abs(v).max())


def test_structured_matrix_matches_the_empirical_gram_at_large_n():
    # x ~ N(0, I), n = 2e5, p = 31 parameters. The structured matrix takes
    # its span block from the same rows (here all of them), so it differs
    # from J^T J / n only by the sample averages that vanish in the
    # population: the complement block (1/n) sum g(z) x_perp x_perp^T
    # against E[g] (I - P), and the span-complement coupling. Each is an
    # average of n terms of zero mean, so in the metric of the matrix itself
    # the error is O(sqrt(p / n)) = 0.0124 (a sample covariance of p
    # dimensions: eigenvalues within (1 +- sqrt(p / n))^2, times a constant
    # for the weights g). Bound used: 4 sqrt(p / n) = 0.05.
    n, d, k = 200_000, 8, 3
    X, net, state, _ = _problem(n, d, k, 1, seed=5)
    rows = np.arange(n)
    pre = _refine._StructuredPreconditioner(X, state, rows, net)
    M, _, _ = _dense_structured(X, state, rows, net)
    H, _ = _refine._subsample_gram(X, state, rows, net)
    bound = 4 * np.sqrt(net.size / n)
    # The preconditioned matrix M^{-1/2} H M^{-1/2}: its eigenvalues are
    # within [1 - bound, 1 + bound], so its condition number stays below
    # (1 + bound) / (1 - bound) = 1.11, while H's own is 2e4 (measured:
    # eigenvalues in [0.980, 1.028]).
    L = np.linalg.cholesky(M)
    Li = np.linalg.inv(L)
    ev = np.linalg.eigvalsh(Li @ H @ Li.T)
    assert 1 - bound <= ev.min() and ev.max() <= 1 + bound
    assert np.linalg.cond(H) > 1e3
    # The fast apply (damping 0) is that M's inverse.
    v = np.random.default_rng(0).standard_normal(net.size)
    np.testing.assert_allclose(pre.damp(0.0)(v), np.linalg.solve(M, v), rtol=1e-6, atol=0)


def _near_truth():
    net = make_planted_network(20_000, 10, 3, random_state=0)
    rng = np.random.default_rng(1)
    A1 = net.A1 + 0.05 * rng.standard_normal(net.A1.shape)
    return net, (net.X, net.y[:, None], A1, net.b1 + 0.05, net.a2[:, None] * 1.1, np.array([0.05]), "sigmoid")


@pytest.mark.parametrize("m", [1, 2])
def test_structured_refinement_converges_quadratically_from_near_the_truth(m):
    net, args = _near_truth()
    if m == 2:  # a second output, -0.5 f + 0.3: the planted network still fits both exactly
        X, Y, A1, b1, A2, b2, activation = args
        args = (X, np.hstack([Y, -0.5 * Y + 0.3]), A1, b1, np.hstack([A2, -0.5 * A2]), np.array([0.05, 0.2]),
                activation)
    res = refine(*args, preconditioner="structured", rng=np.random.default_rng(1))
    assert res.converged and res.losses[-1] <= 1e-20 * np.var(net.y)
    np.testing.assert_allclose(res.A1, net.A1, atol=1e-8)
    # Quadratic convergence: each step squares the relative loss, give or
    # take the damping (measured: 7 steps from 1e-3 of Var(y)).
    assert res.n_iter <= 10
    # A few CG iterations per step: the tight solves of the last steps
    # (forcing sqrt(|g| / |g0|) down to 1e-8) take most of them (measured 5.6).
    assert res.n_cg <= 8 * res.n_iter
    assert res.n_gram == res.n_iter  # rebuilt at each new network, nothing else


@pytest.mark.parametrize("start", ["near", "at"])
def test_float32_coarse_phase_hands_over_to_float64(monkeypatch, start):
    # With the float32 copy (MIXED_PRECISION_MIN lowered to include this
    # problem) the loss and the gradient are evaluated on it while the loss
    # is above COARSE_LOSS (of Var / 2), then on X: the fit still converges
    # to the exact network, its last losses are float64 ones (the floor,
    # 1e-26 of the variance, is below anything float32 data can reach:
    # about 1e-13), and the reported loss is the float64 loss of the result.
    # "at": a start already below COARSE_LOSS goes to float64 at once.
    monkeypatch.setattr(_refine, "MIXED_PRECISION_MIN", 1)
    net, args = _near_truth()
    X, Y, A1, b1, A2, b2, activation = args
    if start == "at":
        A1, b1, A2, b2 = net.A1 + 1e-6, net.b1, net.a2[:, None], np.array([net.b2])
    res = refine(X, Y, A1, b1, A2, b2, activation, rng=np.random.default_rng(1))
    variance = np.var(Y)
    assert res.converged and res.losses[-1] <= 1e-20 * variance
    np.testing.assert_allclose(res.A1, net.A1, atol=1e-8)
    state = _refine._State(X, Y, _refine._Net(10, 3, 1).pack(res.A1, res.b1, res.A2, res.b2),
                           _refine._Net(10, 3, 1), activation)
    assert res.losses[-1] == pytest.approx(state.loss, rel=1e-6, abs=1e-30)
    if start == "near":  # the path went through the coarse phase: it started above the threshold
        assert res.losses[0] > _refine.COARSE_LOSS * 0.5 * variance


def test_same_seed_same_bits():
    _, args = _near_truth()
    a = refine(*args, max_iter=4, rng=np.random.default_rng(3))
    b = refine(*args, max_iter=4, rng=np.random.default_rng(3))
    for x, y in zip((a.A1, a.b1, a.A2, a.b2), (b.A1, b.b1, b.A2, b.b2)):
        np.testing.assert_array_equal(x, y)
    assert a.losses == b.losses and a.n_cg == b.n_cg


@pytest.mark.parametrize("case", ["identical units", "zero output weight", "vanishing unit", "all zero"])
def test_degenerate_networks_give_finite_parameters(case):
    net = make_planted_network(5_000, 6, 3, random_state=2)
    A1, b1, A2 = net.A1.copy(), net.b1.copy(), net.a2[:, None].copy()
    if case == "identical units":
        A1[:, 1], b1[1], A2[1] = A1[:, 0], b1[0], A2[0]
    elif case == "zero output weight":
        A2[2] = 0.0
    elif case == "vanishing unit":
        A1[:, 2] = 0.0
    else:
        A1[:], b1[:], A2[:] = 0.0, 0.0, 0.0
    res = refine(net.X, net.y[:, None], A1, b1, A2, np.zeros(1), "sigmoid", max_iter=15,
                 rng=np.random.default_rng(0))
    for p in (res.A1, res.b1, res.A2, res.b2):
        assert np.all(np.isfinite(p))
    assert np.all(np.isfinite(res.losses)) and res.losses[-1] <= res.losses[0]
    assert all(b <= a for a, b in zip(res.losses, res.losses[1:]))


def test_singular_damped_matrix_falls_back_without_nan():
    # Cholesky fails on an indefinite-by-rounding matrix; the eigenvalue
    # fallback floors the spectrum and stays finite.
    A = np.ones((3, 3))
    A[0, 0] -= 1e-9
    solve = _refine._spd_solver(A)
    x = solve(np.array([1.0, -2.0, 0.5]))
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(_refine._spd_solver(np.diag([2.0, 4.0]))(np.array([2.0, 4.0])), [1.0, 1.0])


def test_unit_step_limit():
    # _overshoot: the largest factor by which a step leaves the per-unit
    # trust region (> 1: rejected, and the damping grows by that much).
    net = _refine._Net(2, 2, 1)
    theta = net.pack(np.array([[1.0, 0.0], [0.0, 0.01]]), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    step = net.pack(np.array([[0.9, 0.0], [0.0, 0.0]]), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    assert _refine._overshoot(step, theta, net, 1.0) == pytest.approx(0.9)
    assert _refine._overshoot(2 * step, theta, net, 1.0) == pytest.approx(1.8)
    assert _refine._overshoot(2 * step, theta, net, 2.0) == pytest.approx(0.9)
    # A small unit may still move by 0.1 of the largest unit's norm.
    small = net.pack(np.array([[0.0, 0.0], [0.0, 0.09]]), np.zeros(2), np.zeros((2, 1)), np.zeros(1))
    assert _refine._overshoot(small, theta, net, 1.0) == pytest.approx(0.9)
    assert _refine._overshoot(2 * small, theta, net, 1.0) == pytest.approx(1.8)
    # All units zero: no limit.
    zero = net.pack(np.zeros((2, 2)), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    assert _refine._overshoot(step, zero, net, 1.0) == 0.0


def test_preconditioner_names():
    _, args = _near_truth()
    for name in ("structured", "full", "block", "empirical", "auto"):
        res = refine(*args, max_iter=2, preconditioner=name, rng=np.random.default_rng(0))
        assert res.losses[-1] < res.losses[0]
    with pytest.raises(ValueError, match="preconditioner"):
        refine(*args, preconditioner="diagonal", rng=np.random.default_rng(0))


# ---------------------------------------------------------------------------
# Issue #12: the L2 penalty and the softmax cross-entropy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n, d, k, m", [(1, 3, 2, 2), (300, 4, 3, 3), (2 * 2048 + 17, 3, 2, 4)])
def test_softmax_gauss_newton_kernel_matches_dense_reference(n, d, k, m):
    # Reference: the explicit Jacobian J (n m x p) and the explicit
    # per-row Hessians H_i = diag(p_i) - p_i p_i^T of the cross-entropy in
    # the logits: J^T H J v. n covers one row and a partial second block.
    X, net, state, rng = _problem(n, d, k, m, seed=n + m, scale=1.0, loss="softmax")
    J = _jacobian(X, state, net)
    G = _gauss_newton(J, _output_hessians(state, n))
    v = rng.standard_normal(net.size)
    expected = G @ v
    got = _refine._gn_product(X, state, v, net)
    # A sum of n m^2 products of O(1) terms: float64 rounding stays below 1e-12 relative.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # The gradient J^T (P - Y) and the preconditioner's Gram J^T H J / n from the same J.
    np.testing.assert_allclose(_refine._gradient(X, state, net), J.T @ state.R.T.reshape(-1), rtol=1e-12,
                               atol=1e-12 * n)
    H, _ = _refine._subsample_gram(X, state, np.arange(n), net, ridge=0.3)
    G[np.diag_indices_from(G)] += 0.3 * n * net.weights
    np.testing.assert_allclose(H, G / n, rtol=1e-12, atol=1e-12 * np.abs(H).max())
    # The logits' gauge (A2 + w 1^T, b2 + c 1) changes no probability: it is
    # in the null space of J^T H J, and the gradient is orthogonal to it.
    gauge = net.pack(np.zeros((d, k)), np.zeros(k), np.outer(rng.standard_normal(k), np.ones(m)), np.ones(m))
    scale = np.abs(got).max() / np.abs(v).max()
    assert np.abs(_refine._gn_product(X, state, gauge, net)).max() <= 1e-12 * scale * np.abs(gauge).max()
    assert abs(_refine._gradient(X, state, net) @ gauge) <= 1e-12 * n * np.abs(gauge).max()


@pytest.mark.parametrize("loss, m", [("squared", 2), ("softmax", 3)])
@pytest.mark.parametrize("ridge", [0.0, 0.05])
def test_block_preconditioner_is_the_dense_diagonal_blocks(loss, m, ridge):
    # The diagonal blocks of the dense J^T H J / r + ridge: (A1[:, j], b1_j)
    # per unit, (A2[:, c], b2_c) per output, damped by mu D + eps.
    d, k, n, mu = 4, 3, 300, 1e-2
    X, net, state, rng = _problem(n, d, k, m, seed=3, loss=loss)
    rows = np.sort(rng.choice(n, 120, replace=False))
    pre = _refine._BlockPreconditioner(X, state, rows, net, ridge)
    G = _gauss_newton(_jacobian(X[rows], _Rows(state, rows), net), _output_hessians(_Rows(state, rows), 120)) / 120
    G[np.diag_indices_from(G)] += ridge * net.weights
    dk = d * k
    blocks = [np.append(np.arange(j * d, (j + 1) * d), dk + j) for j in range(k)]
    blocks += [np.append(dk + k + np.arange(k) * m + c, dk + k + k * m + c) for c in range(m)]
    M = np.zeros_like(G)
    for b in blocks:
        M[np.ix_(b, b)] = G[np.ix_(b, b)]
    np.testing.assert_allclose(pre.diag, np.maximum(np.diag(M), 1e-12), rtol=1e-12)
    A = M + np.diag(mu * pre.diag + 1e-12 * pre.diag.max())
    v = rng.standard_normal(net.size)
    np.testing.assert_allclose(pre.damp(mu)(v), np.linalg.solve(A, v), rtol=1e-9, atol=0)


def test_squared_kernel_is_the_softmax_one_with_unit_weights():
    # With H_i = I the generalised product is the plain one: the shared
    # loop computes both.
    X, net, state, rng = _problem(50, 4, 3, 2, seed=1)
    v = rng.standard_normal(net.size)
    J = _jacobian(X, state, net)
    np.testing.assert_allclose(_refine._gn_product(X, state, v, net), _gauss_newton(J, _output_hessians(state, 50)) @ v,
                               rtol=1e-12, atol=1e-12 * np.abs(J).max() ** 2 * 50)


def _finite_difference_gradient(f, theta, h=1e-6):
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


@pytest.mark.parametrize("loss, m", [("squared", 2), ("softmax", 2), ("softmax", 3)])
@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_gradient_matches_finite_differences_of_the_penalised_loss(loss, m, alpha):
    n, d, k = 40, 3, 2
    X, net, state, rng = _problem(n, d, k, m, seed=7, loss=loss, alpha=alpha)
    Y = _targets(np.random.default_rng(7), n, m, loss)
    state = _refine._State(X, Y, state.theta, net, "tanh", loss, alpha)

    def objective(theta):
        return _refine._State(X, Y, theta, net, "tanh", loss, alpha).loss

    got = _refine._objective_gradient(X, state, net, alpha)
    # Central differences with h = 1e-6: truncation h^2 |f'''| / 6 ~ 1e-13,
    # rounding 1e-16 |f| / h ~ 1e-10 on an O(1) loss.
    np.testing.assert_allclose(got, _finite_difference_gradient(objective, state.theta), rtol=1e-6, atol=1e-8)


def _direct_objective(theta, X, Y, net, loss, alpha):
    """The penalised objective and its gradient, written out independently:
    the forward pass by expit, the cross-entropy by scipy's logsumexp, the
    gradient from the dense Jacobian."""
    n = X.shape[0]
    A1, b1, A2, b2 = net.unpack(theta)
    Z = X @ A1 + b1
    S = expit(Z)
    F = S @ A2 + b2
    if loss == "squared":
        value, R = 0.5 * np.sum((F - Y) ** 2) / n, F - Y
    else:
        lse = logsumexp(F, axis=1, keepdims=True)
        value, R = -np.sum(Y * (F - lse)) / n, np.exp(F - lse) - Y
    value += 0.5 * alpha / n * (np.sum(A1 ** 2) + np.sum(A2 ** 2))
    rows = type("Rows", (), {"S": S, "D": S * (1 - S), "A2": A2})
    gradient = (_jacobian(X, rows, net).T @ R.T.reshape(-1) + alpha * net.weights * theta) / n
    return value, gradient


@pytest.mark.parametrize("loss, m", [("squared", 1), ("softmax", 3)])
def test_penalised_optimum_matches_scipy_and_shrinks_the_weights(loss, m):
    # A small well-posed problem: d=3, k=2, n=1000, orthogonal units of
    # norm 2, output weights of magnitude 1.5-3; labels = the network plus
    # N(0, 0.3^2) noise (squared) or sampled from its softmax. Both solvers
    # start 0.2 from the planted network and must reach the same
    # stationary point of the penalised objective.
    n, d, k, alpha = 1000, 3, 2, 2.0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    net = _refine._Net(d, k, m)
    A1, b1 = 2 * np.linalg.qr(rng.standard_normal((d, k)))[0], rng.uniform(-0.5, 0.5, k)
    A2, b2 = rng.choice([-1, 1], (k, m)) * rng.uniform(1.5, 3, (k, m)), 0.3 * rng.standard_normal(m)
    F = expit(X @ A1 + b1) @ A2 + b2
    if loss == "squared":
        Y = F + 0.3 * rng.standard_normal(F.shape)
    else:
        Y = np.eye(m)[[rng.choice(m, p=p) for p in softmax(F, axis=1)]]
    start = net.pack(A1, b1, A2, b2) + 0.2 * rng.standard_normal(net.size)
    if loss == "softmax":
        start = net.centred(start)
    res = refine(X, Y, *net.unpack(start), "sigmoid", loss=loss, alpha=alpha, tol=1e-15, max_iter=300,
                 rng=np.random.default_rng(0))
    assert res.converged and res.loss == loss
    direct = scipy.optimize.minimize(_direct_objective, start, args=(X, Y, net, loss, alpha), jac=True,
                                     method="L-BFGS-B", options={"gtol": 1e-11, "ftol": 0.0, "maxiter": 5000})
    theta = net.pack(res.A1, res.b1, res.A2, res.b2)
    if loss == "softmax":  # the same gauge: rows of (A2, b2) centred
        direct.x = net.centred(direct.x)
    # The same penalised objective, to rounding (measured: 3e-14 relative
    # or less over seeds 0-4), at a stationary point (gradient <= 1e-8).
    value, gradient = _direct_objective(theta, X, Y, net, loss, alpha)
    assert abs(value - res.losses[-1]) <= 1e-12 * value
    assert np.abs(gradient).max() <= 1e-7
    assert abs(value - direct.fun) <= 1e-12 * value
    # The same parameters: off the logits' gauge the penalised Hessian's
    # smallest eigenvalue is above 7e-4 here (seeds 0-4), so gradients
    # below 1e-7 place both within about 1.5e-4 of the minimum (measured:
    # 2e-6 apart).
    np.testing.assert_allclose(theta, direct.x, atol=1e-4)
    # The penalty shrinks both weight layers.
    free = refine(X, Y, *net.unpack(start), "sigmoid", loss=loss, max_iter=50, rng=np.random.default_rng(0))
    for name in ("A1", "A2"):
        assert np.linalg.norm(getattr(res, name)) < np.linalg.norm(getattr(free, name))


def _planted_classes(m, seed, n=5000, d=5, k=3):
    """Labels sampled from the softmax of a planted sigmoid network: units
    of norm 2, biases uniform on [-1, 1], output weights N(0, 9), b2
    N(0, 0.25)."""
    rng = np.random.default_rng(seed)
    A1 = rng.standard_normal((d, k))
    A1 *= 2 / np.linalg.norm(A1, axis=0)
    b1, A2, b2 = rng.uniform(-1, 1, k), 3 * rng.standard_normal((k, m)), 0.5 * rng.standard_normal(m)
    X = rng.standard_normal((n, d))
    P = softmax(expit(X @ A1 + b1) @ A2 + b2, axis=1)
    labels = (rng.random((n, 1)) > np.cumsum(P, axis=1)).sum(axis=1)
    return X, np.eye(m)[np.minimum(labels, m - 1)], (A1, b1, A2, b2), rng


@pytest.mark.parametrize("m", [2, 3])
def test_softmax_refinement_beats_the_planted_network(m):
    # From random unit directions (zero biases, the output layer fitted by
    # softmax_output), d=5, k=3, n=5000, alpha=1. The planted network is
    # one candidate for the penalised objective, so its value bounds the
    # optimum's; the optimum undercuts it by about p / (2 n) = 0.0026 to
    # 0.003 in expectation (measured median 0.0023 for m = 2, 0.0039 for
    # m = 3), far above the convergence error. Required: at or below the
    # planted network for every seed 0-4 (measured: every seed 0-19 for
    # m = 2 and 3, after a median 88 and 59 steps).
    alpha = 1.0
    for seed in range(5):
        X, Y, truth, rng = _planted_classes(m, seed)
        net = _refine._Net(5, 3, m)
        planted = _refine._State(X, Y, net.centred(net.pack(*truth)), net, "sigmoid", "softmax", alpha).loss
        A1, b1 = rng.standard_normal((5, 3)), np.zeros(3)
        A2, b2 = softmax_output(expit(X @ A1 + b1), Y, alpha)
        res = refine(X, Y, A1, b1, A2, b2, "sigmoid", loss="softmax", alpha=alpha, max_iter=150,
                     rng=np.random.default_rng(seed))
        assert res.losses[-1] <= planted, seed
        assert all(b <= a for a, b in zip(res.losses, res.losses[1:]))
        # The returned output layer is in the centred gauge.
        np.testing.assert_allclose(res.A2.sum(axis=1), 0, atol=1e-12 * np.abs(res.A2).max())
        assert abs(res.b2.sum()) <= 1e-12 * np.abs(res.b2).max()


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("preconditioner", ["structured", "full", "block"])
def test_softmax_without_penalty_stays_finite(m, preconditioner):
    # alpha = 0: J^T H J is singular along the logits' gauge, and on these
    # data units saturate (measured: |A1| up to 60 after 30 steps, while
    # the loss creeps down). Only the damping keeps the solves regular: the
    # steps must stay finite, decrease the loss and pass the planted
    # network's cross-entropy within a few steps (measured: 1 or 2).
    X, Y, truth, _ = _planted_classes(m, seed=2)
    net = _refine._Net(5, 3, m)
    planted = _refine._State(X, Y, net.pack(*truth), net, "sigmoid", "softmax").loss
    A1 = truth[0] + 0.3 * np.random.default_rng(0).standard_normal(truth[0].shape)
    A2, b2 = softmax_output(expit(X @ A1 + truth[1]), Y, 0.0)
    res = refine(X, Y, A1, truth[1], A2, b2, "sigmoid", loss="softmax", max_iter=30, preconditioner=preconditioner,
                 rng=np.random.default_rng(0))
    for p in (res.A1, res.b1, res.A2, res.b2):
        assert np.all(np.isfinite(p))
    assert all(b <= a for a, b in zip(res.losses, res.losses[1:]))
    assert res.losses[min(5, len(res.losses) - 1)] <= planted


def test_callback_sees_the_penalised_loss_and_stops():
    _, (X, Y, A1, b1, A2, b2, activation) = _near_truth()
    seen = []

    def callback(A1_, b1_, A2_, b2_, loss):
        seen.append(loss)
        return len(seen) == 2

    res = refine(X, Y, A1, b1, A2, b2, activation, alpha=50.0, callback=callback, rng=np.random.default_rng(0))
    assert res.n_iter == 2 and seen == res.losses[1:]
    state = _refine._State(X, Y, _refine._Net(10, 3, 1).pack(res.A1, res.b1, res.A2, res.b2), _refine._Net(10, 3, 1),
                           activation)
    penalty = 0.5 * 50.0 / X.shape[0] * (np.sum(res.A1 ** 2) + np.sum(res.A2 ** 2))
    assert seen[-1] == pytest.approx(state.loss + penalty, rel=1e-12)


def test_ridge_projection_is_the_ridge_regression():
    rng = np.random.default_rng(2)
    S, Y, alpha = rng.random((200, 4)), rng.standard_normal((200, 2)), 7.0
    coef, fitted = _refine._ridge_output(S, Y, alpha)
    F = np.hstack([S, np.ones((200, 1))])
    penalty = np.diag([alpha] * 4 + [0.0])
    np.testing.assert_allclose(coef, np.linalg.solve(F.T @ F + penalty, F.T @ Y), rtol=1e-10)
    np.testing.assert_allclose(fitted, F @ coef, rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "hinge"}, r"loss: expected one of \('squared', 'softmax'\), got 'hinge'"),
    ({"alpha": -1.0}, r"alpha: expected a number >= 0, got -1.0"),
    ({"loss": "softmax"}, r"Y: expected at least two columns"),
])
def test_loss_options_are_checked(kwargs, match):
    _, args = _near_truth()
    with pytest.raises(ValueError, match=match):
        refine(*args, rng=np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("loss, m", [("squared", 1), ("squared", 3), ("softmax", 3)])
@pytest.mark.parametrize("d", [3, 700])  # 700: blocks of 93 rows (gn_block), several per product
def test_float32_gauss_newton_product_matches_float64(loss, m, d):
    # The CG products of a large fit run on a float32 copy of X
    # (MIXED_PRECISION_MIN). Reference: the float64 product. Each entry sums
    # n products of O(1) float32-rounded terms, so the error relative to the
    # largest entry is a few float32 epsilons (1.2e-7), far below CG's 1e-4.
    X, net, state, rng = _problem(3 * 2048 + 5, d, 2, m, seed=d + m, scale=1.0, loss=loss)
    v = rng.standard_normal(net.size)
    expected = _refine._gn_product(X, state, v, net)
    got = _refine._gn_product(X.astype(np.float32), state, v, net)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    assert not np.array_equal(got, expected)  # the float32 path did run


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_streamed_rows_refine_as_the_rows_in_memory(alpha):
    # The same refinement with its rows in memory and read as a stream of
    # blocks (the passes of fastten.accumulate, the whitening L folded into
    # the weights): the stream's rows are Z = X L^-1, so Z L = X, and its
    # sample (the structured preconditioner's rows) is X itself, so the two
    # draw the same rows. Noisy labels, a start 0.05 from the truth: every
    # step's loss, gradient and products differ only by the order of the
    # sums (and the output layer's normal equations against lstsq): the
    # losses agreed to 1.2e-15 relative and the parameters to 3e-12 of
    # their largest entry (12 steps with alpha=2, where the flat valley of
    # the optimum lets rounding move b2 most; measured). 1e-9 leaves more
    # than two orders of margin, and a wrong L^T (the gradient's map back)
    # would move them by O(1). L has condition number 4, a whitening's
    # order; one of 1400 lets rounding grow to 6e-9.
    from fastten._sources import ArraySource
    net, (X, Y, A1, b1, A2, b2, activation) = _near_truth()
    Y = Y + 0.05 * np.random.default_rng(5).standard_normal(Y.shape)
    L = np.linalg.qr(np.random.default_rng(6).standard_normal((10, 10)))[0] * np.linspace(0.5, 2, 10)
    Z = np.linalg.solve(L.T, X.T).T
    stream = _refine.StreamedRows(ArraySource(Z, Y, 1000), L, (X, Y), activation, float(np.var(Y)), alpha)
    kwargs = dict(max_iter=12, alpha=alpha, preconditioner="structured")
    a = refine(X, Y, A1, b1, A2, b2, activation, rng=np.random.default_rng(2), **kwargs)
    b = refine(stream, None, A1, b1, A2, b2, activation, rng=np.random.default_rng(2), **kwargs)
    assert b.n_iter == a.n_iter > 3 and b.n_passes == a.n_passes
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-9)
    for x, z in zip((b.A1, b.b1, b.A2, b.b2), (a.A1, a.b1, a.A2, a.b2)):
        np.testing.assert_allclose(x, z, rtol=0, atol=1e-9 * np.abs(z).max())


def test_streamed_rows_take_the_structured_preconditioner_and_the_squared_loss_only():
    from fastten._sources import ArraySource
    _, (X, Y, A1, b1, A2, b2, activation) = _near_truth()
    stream = _refine.StreamedRows(ArraySource(X, Y, 1000), np.eye(10), (X, Y), activation, 1.0)
    with pytest.raises(ValueError, match="rows out of core take 'structured'"):
        refine(stream, None, A1, b1, A2, b2, activation, preconditioner="block", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rows out of core take 'squared'"):
        refine(stream, None, A1, b1, np.hstack([A2, A2]), np.zeros(2), activation, loss="softmax",
               rng=np.random.default_rng(0))
