"""The refinement's structured Gauss-Newton preconditioner (issue #11):
its fast inverse against a dense reference, its agreement with the
empirical Gauss-Newton matrix at large n, and the refinement it drives."""

import numpy as np
import pytest

from fastten import _refine
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


def _dense_structured(X, state, rows, net):
    """The structured matrix written out in the full parameters, from first
    principles: with P = Q Q^T the projector on span(A1) (here from a QR
    factorisation, not the implementation's SVD), the first layer's
    directions split as V = P V + (I - P) V, and

    - every block touching P V or (b1, A2, b2) is the Gram matrix J^T J / r
      of the rows, with the first layer's columns projected by P;
    - the (I - P) V block is S (x) (I - P), S_ij = sum_c A2[i, c] A2[j, c]
      mean(sigma'_i sigma'_j) over all n rows;
    - nothing couples the two."""
    d, k = net.d, net.k
    A1 = net.unpack(state.theta)[0]
    Q, R = np.linalg.qr(A1)
    Q = Q[:, np.abs(np.diag(R)) > 1e-10 * np.abs(R).max()]
    P = Q @ Q.T
    J = _jacobian(X[rows], _Rows(state, rows), net)
    H = J.T @ J / len(rows)
    T = np.eye(net.size)
    T[: d * k, : d * k] = np.kron(np.eye(k), P)
    S = (state.D.T @ state.D / X.shape[0]) * (state.A2 @ state.A2.T)
    M = T @ H @ T
    M[: d * k, : d * k] += np.kron(S, np.eye(d) - P)
    return M, S, H


class _Rows:
    def __init__(self, state, rows):
        self.S, self.D, self.A2 = state.S[rows], state.D[rows], state.A2


def _problem(n, d, k, m, seed, scale=0.8):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    net = _refine._Net(d, k, m)
    theta = scale * rng.standard_normal(net.size)
    return X, net, _refine._State(X, rng.standard_normal((n, m)), theta, net, "sigmoid"), rng


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("mu", [1e-1, 1e-6])
@pytest.mark.parametrize("degenerate", [False, True])
def test_structured_inverse_equals_the_dense_reference(m, mu, degenerate):
    d, k, n = 6, 3, 400
    X, net, state, rng = _problem(n, d, k, m, seed=m)
    if degenerate:  # two coinciding units: span(A1) has rank 2
        A1, b1, A2, b2 = net.unpack(state.theta)
        A1 = A1.copy()
        A1[:, 2] = A1[:, 0]
        state = _refine._State(X, rng.standard_normal((n, m)), net.pack(A1, b1, A2, b2), net, "sigmoid")
    rows = np.sort(rng.choice(n, 150, replace=False))
    pre = _refine._StructuredPreconditioner(X, state, rows, net)
    assert pre.Q.shape == (d, 2 if degenerate else 3)
    M, S, H = _dense_structured(X, state, rows, net)
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
    net = _refine._Net(2, 2, 1)
    theta = net.pack(np.array([[1.0, 0.0], [0.0, 0.01]]), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    step = net.pack(np.array([[0.9, 0.0], [0.0, 0.0]]), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    assert not _refine._too_long(step, theta, net, 1.0)
    assert _refine._too_long(2 * step, theta, net, 1.0)
    # A small unit may still move by 0.1 of the largest unit's norm.
    small = net.pack(np.array([[0.0, 0.0], [0.0, 0.09]]), np.zeros(2), np.zeros((2, 1)), np.zeros(1))
    assert not _refine._too_long(small, theta, net, 1.0)
    assert _refine._too_long(2 * small, theta, net, 1.0)
    # All units zero: no limit.
    zero = net.pack(np.zeros((2, 2)), np.zeros(2), np.ones((2, 1)), np.zeros(1))
    assert not _refine._too_long(step, zero, net, 1.0)


def test_preconditioner_names():
    _, args = _near_truth()
    for name in ("structured", "full", "block", "empirical", "auto"):
        res = refine(*args, max_iter=2, preconditioner=name, rng=np.random.default_rng(0))
        assert res.losses[-1] < res.losses[0]
    with pytest.raises(ValueError, match="preconditioner"):
        refine(*args, preconditioner="diagonal", rng=np.random.default_rng(0))
