"""The sketched tensor operator against dense references.

What is checked, and to what tolerance:

* Builders agree on shared hashes (``like=``): from_data, from_components and
  deflated() against from_dense of the dense tensor (einsum), to 1e-10 of the
  sketch's largest entry. Every sketch entry is a sum of at most d^3 (or n
  times d^3) terms and the FFT paths round at the 1e-15 level relative to the
  largest entry, so 1e-10 leaves five orders of margin while any wrong term
  (a Hermite term, a sign, a hash offset) is of the order of the entries.
* Algebra of the estimators, sketch by sketch: slice_dot(u, u) == iuu(u),
  u . iuu(u) == uuu(u) (Euler), iuu == grad(uuu)/3, project(W)[a,b,c] ==
  w_a . slice_dot(w_b, w_c), exact symmetry of project.
* Unbiasedness: means over N independent sketches (B = N, b = 64 and 63)
  against the exact contractions of the dense tensor, within 5 empirical
  standard errors per entry.
* Error against b: the median-of-B error of T(I, u, u) falls monotonically
  and like b^-1/2 (fitted log-log slope in [-0.75, -0.3]).
* Reproducibility and input validation.
"""

import numpy as np
import pytest
import scipy.fft as sfft
from hypothesis import given, strategies as st

import fastten.sketch as S
from fastten.sketch import TensorSketch, draw_hashes

from . import reference as ref


def sym_tensor(rng, d):
    A = rng.standard_normal((d, d, d))
    return sum(A.transpose(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6


def cubes(w, V):
    return np.einsum("j,aj,bj,cj->abc", w, V, V, V)


def assert_same_sketch(actual, expected, rtol=1e-10, terms=0.0):
    """Equal to rtol of the larger of the expected sketch's largest entry
    and ``terms``, a bound on the summed terms' magnitudes: where they
    cancel, rounding is relative to them, not to the result."""
    assert actual.hashes is expected.hashes or np.array_equal(actual.hashes, expected.hashes)
    scale = max(np.abs(expected.sketches).max(), terms)
    err = np.abs(actual.sketches - expected.sketches).max()
    assert err <= rtol * scale, (err, scale)


sizes = st.sampled_from([8, 13, 16, 64, 100])


# --------------------------------------------------------------- builders


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), d=st.integers(1, 8), b=sizes, B=st.integers(1, 3))
def test_from_data_matches_dense_moment(seed, n, d, b, B):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    sk = TensorSketch.from_data(X, y, b, B, rng)
    assert_same_sketch(sk, TensorSketch.from_dense(ref.moment_tensor(X, y, 3), like=sk))


def test_from_data_over_many_blocks_and_float32():
    # n spans several row blocks of from_data with a ragged last block.
    rng = np.random.default_rng(5)
    n, d = 3 * S.ROWS + 5, 6
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    sk = TensorSketch.from_data(X, y, 32, 2, 0)
    dense = TensorSketch.from_dense(ref.moment_tensor(X, y, 3), like=sk)
    assert_same_sketch(sk, dense)
    # float32 data: single-precision FFTs; cubes accumulated in complex128.
    # Measured 2.4e-7 relative at b = 2**11, d = 200; 1e-5 leaves margin.
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    sk32 = TensorSketch.from_data(X32, y32, like=sk)
    ref32 = TensorSketch.from_dense(ref.moment_tensor(X32.astype(float), y32.astype(float), 3), like=sk)
    assert_same_sketch(sk32, ref32, rtol=1e-5)


@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 8), r=st.integers(1, 4), b=sizes, B=st.integers(1, 3))
def test_from_components_matches_dense(seed, d, r, b, B):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(r)
    V = rng.standard_normal((d, r))
    sk = TensorSketch.from_components(w, V, b, B, rng)
    # Every bucket sums terms of w_j v_aj v_bj v_cj: at most
    # sum_j |w_j| |v_j|_1^3 in all (hypothesis found a d=2 draw whose
    # buckets cancel to 3e-17, with rounding of the same size).
    terms = float(np.sum(np.abs(w) * np.sum(np.abs(V), axis=0) ** 3))
    assert_same_sketch(sk, TensorSketch.from_dense(cubes(w, V), like=sk), terms=terms)


@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 8), r=st.integers(1, 4), b=sizes, B=st.integers(1, 3))
def test_deflated_subtracts_exactly(seed, d, r, b, B):
    rng = np.random.default_rng(seed)
    T = sym_tensor(rng, d)
    w = rng.standard_normal(r)
    V = rng.standard_normal((d, r))
    sk = TensorSketch.from_dense(T, b, B, rng)
    defl = sk.deflated(w, V)
    assert isinstance(defl, TensorSketch) and defl is not sk
    assert_same_sketch(defl, TensorSketch.from_dense(T - cubes(w, V), like=sk))
    # deflating twice equals deflating once by both (the sketch is linear)
    twice = defl.deflated(w[:1], V[:, :1])
    both = sk.deflated(np.r_[w, w[:1]], np.c_[V, V[:, :1]])
    assert_same_sketch(twice, both)


def test_deflating_the_components_leaves_nothing():
    rng = np.random.default_rng(2)
    w, V = rng.standard_normal(3), rng.standard_normal((9, 3))
    sk = TensorSketch.from_components(w, V, 64, 3, rng)
    scale = np.abs(sk.sketches).max()
    assert np.abs(sk.deflated(w, V).sketches).max() <= 1e-12 * scale
    assert np.abs(sk.deflated(w[0], V[:, 0]).sketches - sk.deflated([w[0]], V[:, :1]).sketches).max() == 0


# ---------------------------------------------------- algebra of estimators


def test_estimators_are_one_consistent_polynomial():
    rng = np.random.default_rng(11)
    d, m = 7, 4
    X, y = rng.standard_normal((30, d)), rng.standard_normal(30)
    U = rng.standard_normal((d, m))
    one = TensorSketch.from_data(X, y, 64, 1, rng)  # B = 1: the median is the estimate itself
    G = one.iuu(U)
    assert G.shape == (d, m) and G.dtype == np.float64
    vals = one.uuu(U)
    # Euler for a homogeneous cubic: u . (grad/3) = value
    np.testing.assert_allclose(np.einsum("aj,aj->j", U, G), vals, rtol=1e-12, atol=1e-12 * np.abs(vals).max())
    # iuu is one third of the gradient of uuu; central differences of a cubic are
    # off by eps^2/6 times its third derivative, ~1e-9 relative here
    u, eps = U[:, 0], 1e-4
    E = np.eye(d) * eps
    fd = (one.uuu(u[:, None] + E) - one.uuu(u[:, None] - E)) / (2 * eps) / 3
    np.testing.assert_allclose(fd, G[:, 0], rtol=1e-6, atol=1e-6 * np.abs(G[:, 0]).max())
    # slice_dot is the polarised iuu: T(I, I, u) u == T(I, u, u), bit for bit
    many = TensorSketch.from_data(X, y, 64, 4, rng)
    np.testing.assert_array_equal(many.slice_dot(U[:, 0], U[:, :1]), many.iuu(U[:, :1]))
    th, Om = U[:, 1], U[:, 2:]
    pol = (one.iuu(th[:, None] + Om) - one.iuu(th[:, None] - Om)) / 4
    np.testing.assert_allclose(one.slice_dot(th, Om), pol, rtol=1e-12, atol=1e-12 * np.abs(pol).max())
    # project is the trilinear form: R[a, b, c] = w_a . T(I, w_b, w_c)
    W = U[:, :3]
    R = one.project(W)
    expect = np.stack([W.T @ one.slice_dot(W[:, c], W) for c in range(3)], axis=2)
    np.testing.assert_allclose(R, expect, rtol=1e-12, atol=1e-12 * np.abs(R).max())
    np.testing.assert_allclose(np.einsum("aaa->a", R), one.uuu(W), rtol=1e-12, atol=1e-12 * np.abs(R).max())
    Rm = many.project(W)
    for p in [(0, 2, 1), (1, 0, 2), (2, 1, 0)]:
        np.testing.assert_array_equal(Rm, Rm.transpose(p))
    # single vectors in, single results out
    assert one.iuu(u).shape == (d,) and np.ndim(one.uuu(u)) == 0
    np.testing.assert_array_equal(one.iuu(u), G[:, 0])


# --------------------------------------------------------------- unbiasedness


def hermite_heavy_tensor(rng, d):
    """A data moment plus a strong Hermite (trace) term: the case the
    pair-collision correction exists for."""
    X, y = rng.standard_normal((25, d)), rng.standard_normal(25)
    m = rng.standard_normal(d)
    I = np.eye(d)
    return ref.moment_tensor(X, y, 3) - 2 * (np.einsum("a,bc->abc", m, I) + np.einsum("b,ac->abc", m, I)
                                             + np.einsum("c,ab->abc", m, I))


def assert_unbiased(estimates, exact, z=5.0):
    """Each entry's mean over N sketches is within z standard errors (the
    empirical sd / sqrt(N)) of the exact value. The estimates are independent
    across sketches, N is in the thousands so the mean is close to normal;
    with ~50 entries checked a 5-sigma false alarm has probability ~3e-5 (and
    the seeds are fixed; over 60 other seeds the largest z seen was 3.6)."""
    N = estimates.shape[0]
    se = estimates.std(axis=0, ddof=1) / np.sqrt(N)
    dev = np.abs(estimates.mean(axis=0) - exact)
    assert np.all(dev <= z * se), (dev / se).max()


@pytest.mark.parametrize("b", [64, 63])
def test_estimators_are_unbiased(b):
    rng = np.random.default_rng(b)
    d, N = 6, 4000
    T = hermite_heavy_tensor(rng, d)
    U = rng.standard_normal((d, 2))
    theta = rng.standard_normal(d)
    W = rng.standard_normal((d, 2))
    sk = TensorSketch.from_dense(T, b, N, rng)
    assert_unbiased(sk._uuu_each(U), np.einsum("abc,aj,bj,cj->j", T, U, U, U))
    assert_unbiased(sk._bilinear_each(U, U), np.einsum("abc,bj,cj->ja", T, U, U))
    assert_unbiased(sk._bilinear_each(theta[:, None], U), np.einsum("abc,c,bj->ja", T, theta, U))
    assert_unbiased(sk._project_each(W), np.einsum("abc,ai,bj,ck->ijk", T, W, W, W))


def test_same_hash_bias_needs_both_corrections():
    """Why the estimators are not the textbook ones (module docstring): with
    one hash for all three modes, <S_T, IFFT(FFT(cs(u))^3)> counts
    off-diagonal entries six times, and without the pair-collision term the
    estimate is biased by O(1/b) times a trace of T. Both biases are far
    outside 5 standard errors here, so the unbiasedness test above has power
    (the collision bias is proportional to (tau . u)|u|^2 with tau_c = T_aac,
    so u is taken along tau: over 40 seeds the smallest z was 18)."""
    rng = np.random.default_rng(9)
    d, b, N = 6, 64, 4000
    T = hermite_heavy_tensor(rng, d)
    U = np.c_[np.einsum("aac->c", T), rng.standard_normal(d)]
    exact = np.einsum("abc,aj,bj,cj->j", T, U, U, U)
    sk = TensorSketch.from_dense(T, b, N, rng)
    P = S._fft_count_sketch(U.T, sk.hashes, sk.signs, b)
    naive = np.einsum("jt,jmt->jm", sk.sketches, sfft.irfft(P ** 3, n=b, axis=2))
    with pytest.raises(AssertionError):
        assert_unbiased(naive, exact)
    sk._r = 0.0  # drop the collision correction
    with pytest.raises(AssertionError):
        assert_unbiased(sk._uuu_each(U), exact)


def test_error_falls_like_inverse_sqrt_b():
    d, B = 30, 5
    sizes_ = [64, 256, 1024, 4096]
    errors = {b: [] for b in sizes_}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        V, _ = np.linalg.qr(rng.standard_normal((d, 3)))
        w = np.array([1.0, 0.8, 0.6])
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        exact = V @ (w * (V.T @ u) ** 2)
        for b in sizes_:
            sk = TensorSketch.from_components(w, V, b, B, rng)
            errors[b].append(np.linalg.norm(sk.iuu(u) - exact))
    mean = np.array([np.mean(errors[b]) for b in sizes_])
    assert np.all(np.diff(mean) < 0), mean
    slope = np.polyfit(np.log(sizes_), np.log(mean), 1)[0]
    # measured -0.49 (mean errors 0.30, 0.14, 0.075, 0.037 for ||T||_F = 1.41)
    assert -0.75 <= slope <= -0.3, (slope, mean)


# ----------------------------------------------------------- reproducibility


def test_same_random_state_same_bits():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((50, 5)), rng.standard_normal(50)
    a = TensorSketch.from_data(X, y, 32, 3, 123)
    c = TensorSketch.from_data(X, y, 32, 3, 123, workers=2)
    for other in (c,):
        np.testing.assert_array_equal(a.sketches, other.sketches)
        np.testing.assert_array_equal(a.hashes, other.hashes)
        np.testing.assert_array_equal(a.signs, other.signs)
    h, s = draw_hashes(5, 32, 3, 123)
    np.testing.assert_array_equal(a.hashes, h)
    np.testing.assert_array_equal(a.signs, s)
    assert a.hashes.dtype == np.int64 and a.signs.dtype == np.float64
    # a Generator is used as is: two draws from it differ
    g = np.random.default_rng(0)
    s1 = TensorSketch.from_data(X, y, 32, 3, g)
    s2 = TensorSketch.from_data(X, y, 32, 3, g)
    assert not np.array_equal(s1.hashes, s2.hashes)
    # explicit construction from the parts reproduces the object
    again = TensorSketch(a.sketches, a.hashes, a.signs)
    np.testing.assert_array_equal(again.iuu(X[:3].T), a.iuu(X[:3].T))
    assert not a.sketches.flags.writeable


def test_defaults_are_the_papers():
    assert S.DEFAULT_SIZE == 2**11 and S.DEFAULT_N_SKETCHES == 20
    sk = TensorSketch.from_components([1.0], np.ones(3), random_state=0)
    assert (sk.size, sk.n_sketches, sk.dim) == (2**11, 20, 3)


# -------------------------------------------------------------- validation


def test_bad_inputs_raise_with_messages():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    T = sym_tensor(rng, 3)
    sk = TensorSketch.from_dense(T, 16, 2, 0)
    cases = [
        (lambda: TensorSketch.from_data(X, y, b=4), ValueError, r"b: expected an integer >= 8, got 4"),
        (lambda: TensorSketch.from_data(X, y, b=16.0), TypeError, r"b: expected an integer, got 16.0"),
        (lambda: TensorSketch.from_data(X, y, B=0), ValueError, r"B: expected an integer >= 1, got 0"),
        (lambda: TensorSketch.from_data(X, y[:9]), ValueError, r"y: expected 10 labels"),
        (lambda: TensorSketch.from_data(np.full((2, 2), np.nan), [1, 2]), ValueError, r"X: expected finite"),
        (lambda: TensorSketch.from_data(X, y, workers=0), ValueError, r"workers: expected an integer >= 1"),
        (lambda: TensorSketch.from_data(X, y, random_state="x"), TypeError, r"random_state: expected None"),
        (lambda: TensorSketch.from_dense(rng.standard_normal((3, 3, 3))), ValueError, r"T: expected a symmetric"),
        (lambda: TensorSketch.from_dense(np.ones((3, 3))), ValueError, r"T: expected a cubical array"),
        (lambda: TensorSketch.from_components([1.0, 2.0], np.ones((3, 3))), ValueError,
         r"weights: expected 3 weights \(one per column of vectors\), got shape \(2,\)"),
        (lambda: TensorSketch.from_components([1.0], [[np.inf], [1.0]]), ValueError, r"vectors: expected finite"),
        (lambda: TensorSketch.from_dense(T, like=X), TypeError, r"like: expected a TensorSketch"),
        (lambda: TensorSketch.from_data(np.ones((4, 5)), np.ones(4), like=sk), ValueError,
         r"like: expected a sketch of dimension 5, got one of dimension 3"),
        (lambda: TensorSketch.from_dense(T, b=32, like=sk), ValueError, r"b: got 32, but like= has b = 16"),
        (lambda: TensorSketch.from_dense(T, random_state=1, like=sk), ValueError, r"random_state: must be None"),
        (lambda: sk.deflated([1.0], np.ones(4)), ValueError, r"vectors: expected an array of shape \(3, r\)"),
        (lambda: sk.iuu(np.ones((4, 2))), ValueError, r"U: expected a vector of length 3"),
        (lambda: sk.slice_dot(np.ones((3, 2)), np.ones(3)), ValueError, r"theta: expected one vector of length 3"),
        (lambda: TensorSketch(np.zeros((2, 4)), np.zeros((2, 3), int), np.ones((2, 3))), ValueError,
         r"sketches: expected a 2-D array of shape \(B, b\) with B >= 1 and b >= 8, got shape \(2, 4\)"),
        (lambda: TensorSketch(np.zeros((2, 16)), np.full((2, 3), 16), np.ones((2, 3))), ValueError,
         r"hashes: expected values in \[0, 16\), got values in \[16, 16\]"),
        (lambda: TensorSketch(np.zeros((2, 16)), np.zeros((2, 3)), np.ones((2, 3))), TypeError,
         r"hashes: expected an integer array, got dtype float64"),
        (lambda: TensorSketch(np.zeros((2, 16)), np.zeros((1, 3), int), np.ones((1, 3))), ValueError,
         r"hashes: expected shape \(2, d\)"),
        (lambda: TensorSketch(np.zeros((2, 16)), np.zeros((2, 3), int), np.full((2, 3), 0.5)), ValueError,
         r"signs: expected entries in \{-1, \+1\}"),
        (lambda: TensorSketch(np.zeros((2, 16)), np.zeros((2, 3), int), np.ones((2, 4))), ValueError,
         r"signs: expected shape \(2, 3\)"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
