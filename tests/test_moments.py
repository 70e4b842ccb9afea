"""The moment contractions against the dense references, and their algebra.

Tolerances. ``term_scale`` bounds the entries of one sample's term
y_i S_m(x_i)(...) (|x.u| <= |x||u|, at most 10 Hermite terms). A float64
mean of such terms is exact to a few eps64 = 2.2e-16 times that bound, so
the reference comparisons use rtol=1e-10 relative to the result plus an
absolute floor of 1e-14 * term_scale (45 eps64) for entries that cancel to
nearly zero; a wrong Hermite term is of order term_scale itself. For
float32 (eps32 = 1.2e-7) the observed error over 300 random shapes was at
most 1.2e-8 * term_scale; the test allows 2e-7 (about 1.7 eps32).
"""

import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastten.moments as M
from fastten import _kernels as K

from . import reference as ref

# name -> (fastten function, reference, order, which extra arguments)
CASES = {
    "first": (lambda X, y, U, t: M.first_moment(X, y), lambda X, y, U, t: ref.first(X, y), 1),
    "second_dot": (lambda X, y, U, t: M.second_moment_dot(X, y, U), lambda X, y, U, t: ref.second_dot(X, y, U), 2),
    "third_iuu": (lambda X, y, U, t: M.third_moment_iuu(X, y, U), lambda X, y, U, t: ref.third_iuu(X, y, U), 3),
    "third_uuu": (lambda X, y, U, t: M.third_moment_uuu(X, y, U), lambda X, y, U, t: ref.third_uuu(X, y, U), 3),
    "third_slice_dot": (lambda X, y, U, t: M.third_moment_slice_dot(X, y, t, U),
                        lambda X, y, U, t: ref.third_slice_dot(X, y, t, U), 3),
    "third_projected": (lambda X, y, U, t: M.third_moment_projected(X, y, U),
                        lambda X, y, U, t: ref.third_projected(X, y, U), 3),
    "fourth_iuuu": (lambda X, y, U, t: M.fourth_moment_iuuu(X, y, U), lambda X, y, U, t: ref.fourth_iuuu(X, y, U), 4),
    "fourth_projected": (lambda X, y, U, t: M.fourth_moment_projected(X, y, U),
                         lambda X, y, U, t: ref.fourth_projected(X, y, U), 4),
}


def problem(seed, n, d, m, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    U = rng.standard_normal((d, m)).astype(dtype)
    theta = rng.standard_normal(d).astype(dtype)
    return X, y, U, theta


def term_scale(X, y, U, order):
    """A bound on the entries of one sample's term, averaged over samples."""
    x = 1.0 + np.linalg.norm(X, axis=1)
    u = 1.0 + np.linalg.norm(U, axis=0).max()
    return 10.0 * np.mean(np.abs(y) * x ** order) * u ** order


def assert_close(actual, expected, scale, rtol=1e-10):
    assert actual.shape == np.shape(expected)
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= rtol * np.max(np.abs(expected), initial=0.0) + 1e-14 * scale, (err, scale)


shapes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 200), st.integers(1, 12), st.integers(1, 5))


@pytest.mark.parametrize("name", CASES)
@given(shape=shapes)
def test_matches_reference(name, shape):
    fast, slow, order = CASES[name]
    X, y, U, t = problem(*shape)
    assert_close(fast(X, y, U, t), slow(X, y, U, t), term_scale(X, y, U, order))


@pytest.mark.parametrize("name", CASES)
def test_matches_reference_over_many_blocks(name):
    # n spans several row blocks of every kernel (BLOCK = 2048, ROWS = 256),
    # with a ragged last block.
    fast, slow, order = CASES[name]
    X, y, U, t = problem(7, 2 * K.BLOCK + 77, 5, 3)
    assert_close(fast(X, y, U, t), slow(X, y, U, t), term_scale(X, y, U, order))


@pytest.mark.parametrize("name", CASES)
@given(shape=shapes, alpha=st.floats(-3, 3), beta=st.floats(-3, 3))
def test_linear_in_labels(name, shape, alpha, beta):
    fast, _, order = CASES[name]
    X, y, U, t = problem(*shape)
    y2 = np.random.default_rng(shape[0] + 1).standard_normal(X.shape[0])
    combined = fast(X, alpha * y + beta * y2, U, t)
    separate = alpha * fast(X, y, U, t) + beta * fast(X, y2, U, t)
    assert_close(combined, separate, (abs(alpha) + abs(beta) + 1) * term_scale(X, y, U, order))


@pytest.mark.parametrize("name", CASES)
@given(shape=shapes)
def test_invariant_to_sample_order(name, shape):
    fast, _, order = CASES[name]
    X, y, U, t = problem(*shape)
    perm = np.random.default_rng(shape[0]).permutation(X.shape[0])
    assert_close(fast(X[perm], y[perm], U, t), fast(X, y, U, t), term_scale(X, y, U, order))


@given(shape=shapes)
def test_projected_moments_are_symmetric_and_consistent(shape):
    X, y, U, _ = problem(*shape)
    scale = term_scale(X, y, U, 4)
    R3 = M.third_moment_projected(X, y, U)
    R4 = M.fourth_moment_projected(X, y, U)
    for perm in [(1, 0, 2), (0, 2, 1), (2, 1, 0)]:
        np.testing.assert_array_equal(R3, R3.transpose(perm))
    np.testing.assert_array_equal(R4, R4.transpose(3, 1, 2, 0))
    np.testing.assert_array_equal(R4, R4.transpose(1, 0, 3, 2))
    # Different kernels, one tensor: R3[j, j, j] = T(u_j, u_j, u_j) = u_j . T(I, u_j, u_j).
    diag3 = np.einsum("jjj->j", R3)
    assert_close(diag3, M.third_moment_uuu(X, y, U), scale)
    assert_close(diag3, np.einsum("aj,aj->j", U, M.third_moment_iuu(X, y, U)), scale)
    assert_close(np.einsum("jjjj->j", R4), np.einsum("aj,aj->j", U, M.fourth_moment_iuuu(X, y, U)), scale)


@given(shape=shapes)
def test_slice_is_symmetric(shape):
    X, y, _, t = problem(*shape)
    d = X.shape[1]
    S = M.third_moment_slice_dot(X, y, t, np.eye(d))
    assert_close(S, S.T, term_scale(X, y, np.eye(d), 3))


@given(shape=shapes, cuts=st.lists(st.integers(0, 200), max_size=4))
def test_blocked_equals_one_pass(shape, cuts):
    """Streaming row chunks through the accumulate kernels gives the one-pass sums."""
    X, y, U, t = problem(*shape)
    edges = [0] + sorted(c % (X.shape[0] + 1) for c in cuts) + [X.shape[0]]
    kernels = [
        (lambda Xb, yb, o: K.t3_iuu_acc(Xb, yb, U, o), U.shape),
        (lambda Xb, yb, o: K.s2_dot_acc(Xb, yb, U, o), U.shape),
        (lambda Xb, yb, o: K.t3_slice_dot_acc(Xb, yb, t, U, o), U.shape),
        (lambda Xb, yb, o: K.t4_iuuu_acc(Xb, yb, U, o), U.shape),
        (lambda Xb, yb, o: K.t3_uuu_acc(Xb, yb, U, o), (U.shape[1],)),
        (lambda Xb, yb, o: K.first_acc(Xb, yb, o), (X.shape[1],)),
        (lambda Xb, yb, o: K.sym_packed_acc(Xb @ U, yb, *K.packed_plan(U.shape[1], 3), o),
         (U.shape[1] * (U.shape[1] + 1) * (U.shape[1] + 2) // 6,)),
    ]
    for run, shape_out in kernels:
        whole = np.zeros(shape_out)
        run(X, y, whole)
        streamed = np.zeros(shape_out)
        for a, b in zip(edges[:-1], edges[1:]):
            run(X[a:b], y[a:b], streamed)
        # Sums, not means: the floor scales with n.
        assert_close(streamed, whole, X.shape[0] * term_scale(X, y, U, 4))


@pytest.mark.parametrize("name", CASES)
@given(shape=shapes)
def test_float32_close_to_float64(name, shape):
    fast, _, order = CASES[name]
    X, y, U, t = problem(*shape, dtype=np.float32)
    r32 = fast(X, y, U, t)
    assert r32.dtype == np.float32
    r64 = fast(X.astype(np.float64), y.astype(np.float64), U.astype(np.float64), t.astype(np.float64))
    # Same inputs, float32 arithmetic within row blocks (see module docstring).
    err = np.max(np.abs(r32 - r64))
    assert err <= 2e-7 * term_scale(X, y, U, order), err


def test_result_independent_of_blas_thread_count():
    # threadpoolctl comes with the test extra; without it the thread count cannot be set.
    threadpoolctl = pytest.importorskip("threadpoolctl",
                                        reason="the thread count is set through threadpoolctl (in the test extra)")
    X, y, U, t = problem(3, 3 * K.BLOCK + 5, 96, 24)
    runs = []
    for limit in (1, None):
        with threadpoolctl.threadpool_limits(limits=limit, user_api="blas"):
            runs.append([fast(X, y, U[:, :6], t) for fast, _, _ in CASES.values()])
    for one, many in zip(*runs):
        np.testing.assert_array_equal(one, many)


def test_safe_and_identical_from_user_threads():
    X, y, U, t = problem(4, K.BLOCK + 300, 20, 4)
    expected = {name: fast(X, y, U, t) for name, (fast, _, _) in CASES.items()}
    results, errors = [], []

    def work():
        try:
            results.append({name: fast(X, y, U, t) for name, (fast, _, _) in CASES.items()})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 4
    for got in results:
        for name in CASES:
            np.testing.assert_array_equal(got[name], expected[name])


def test_single_vectors_give_vectors():
    X, y, U, t = problem(5, 50, 4, 1)
    u = U[:, 0]
    assert M.third_moment_iuu(X, y, u).shape == (4,)
    assert np.ndim(M.third_moment_uuu(X, y, u)) == 0
    np.testing.assert_array_equal(M.third_moment_iuu(X, y, u), M.third_moment_iuu(X, y, U)[:, 0])
    assert M.second_moment_dot(X, y, u).shape == (4,)


def test_unpack_symmetric_places_every_permutation():
    k = 4
    packed = np.random.default_rng(0).standard_normal(k * (k + 1) * (k + 2) // 6)
    full = M.unpack_symmetric(packed, k, 3)
    i = 0
    for a in range(k):
        for b in range(a, k):
            for c in range(b, k):
                for p in [(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)]:
                    assert full[p] == packed[i]
                i += 1
    with pytest.raises(ValueError, match="packed: expected 20 entries"):
        M.unpack_symmetric(packed[:-1], k, 3)


def test_float32_at_many_rows():
    # 400k rows: per-block float32 products summed in float64 keep the error
    # near the float32 rounding of the inputs' projections (measured 6.1e-7
    # and 2.8e-6 relative for the third and fourth order); 2e-5 leaves 7x.
    X, y, U, _ = problem(11, 400_000, 6, 3, dtype=np.float32)
    for fast in (M.third_moment_projected, M.fourth_moment_projected, M.third_moment_iuu):
        r32 = fast(X, y, U).astype(np.float64)
        r64 = fast(X.astype(np.float64), y.astype(np.float64), U.astype(np.float64))
        assert np.max(np.abs(r32 - r64)) <= 2e-5 * np.max(np.abs(r64)), fast.__name__
