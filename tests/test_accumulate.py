"""The public accumulators: against dense references, chunked against one
block, merges in any grouping and order, and bad blocks.

Tolerances. Chunked and one-block results are the same sums added in
another order: float64 rounding, a few eps64 = 2.2e-16 per addition relative
to the sum of the terms' magnitudes, so 1e-10 relative to the result's largest
entry (with an absolute floor of 1e-13 times the terms' scale for entries
that cancel) leaves four orders of margin; a lost or doubled block moves the
result by about 1/blocks. The references (tests/reference.py, dense einsum on
the explicit tensor) are compared at 1e-10 for the same reason.
"""

import functools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastten.accumulate as A
from fastten.activations import derivative

from . import reference as ref


def data(seed, n=600, d=5, m=3, offset=0.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + offset
    y = rng.standard_normal(n)
    U = rng.standard_normal((d, m))
    return X, y, U, rng.standard_normal(d)


def close(a, b, scale=1.0, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b), initial=0.0)
    assert err <= rtol * np.max(np.abs(b), initial=0.0) + 1e-13 * scale, err


def makers(U, theta):
    """(name, a fresh accumulator, its reference on (X, y), needs labels)."""
    A1, b1 = U, np.linspace(-0.5, 0.5, U.shape[1])

    def output_ref(X, y):
        F = np.hstack([derivative("sigmoid", X @ A1 + b1, 0), np.ones((X.shape[0], 1))])
        coef = np.linalg.lstsq(F, y, rcond=None)[0]
        return coef[:-1, None]

    # The refinement's accumulators: this hidden layer, one output (A2, b2)
    # and a direction V; the references build the Jacobian J (n, p) of the
    # outputs in (A1 (d, k) row-major, b1, A2 (k, 1), b2) explicitly.
    k = U.shape[1]
    A2, b2 = np.linspace(-1.2, 0.9, k)[:, None], np.array([0.3])
    V = (np.cos(np.arange(U.size)).reshape(U.shape), np.sin(np.arange(k)), np.linspace(1.0, -0.5, k)[:, None],
         np.array([0.25]))

    def layer(X):
        return derivative("sigmoid", X @ A1 + b1, 0), derivative("sigmoid", X @ A1 + b1, 1)

    def residual(X, y):
        return (layer(X)[0] @ A2 + b2)[:, 0] - y

    def jacobian(X):
        S, D = layer(X)
        G = D * A2[:, 0]  # dF / du_j
        return np.hstack([(X[:, :, None] * G[:, None, :]).reshape(X.shape[0], -1), G, S, np.ones((X.shape[0], 1))])

    def gradient_ref(X, y):
        D = layer(X)[1]
        return np.concatenate([jacobian(X).T @ residual(X, y) / X.shape[0], (D.T @ D / X.shape[0]).ravel(),
                               [0.5 * np.mean(residual(X, y) ** 2)]])

    def product_ref(X, y):
        J = jacobian(X)
        return J.T @ (J @ np.concatenate([v.ravel() for v in V])) / X.shape[0]

    return [
        ("first", lambda: A.FirstMoment(), lambda X, y: ref.first(X, y)),
        ("second_dot", lambda: A.SecondMomentDot(U), lambda X, y: ref.second_dot(X, y, U)),
        ("third_iuu", lambda: A.ThirdMomentIUU(U), lambda X, y: ref.third_iuu(X, y, U)),
        ("third_uuu", lambda: A.ThirdMomentUUU(U), lambda X, y: ref.third_uuu(X, y, U)),
        ("third_slice_dot", lambda: A.ThirdMomentSliceDot(theta, U), lambda X, y: ref.third_slice_dot(X, y, theta, U)),
        ("fourth_iuuu", lambda: A.FourthMomentIUUU(U), lambda X, y: ref.fourth_iuuu(X, y, U)),
        ("projected3", lambda: A.ProjectedMoment(U, 3), lambda X, y: ref.third_projected(X, y, U)),
        ("projected4", lambda: A.ProjectedMoment(U, 4), lambda X, y: ref.fourth_projected(X, y, U)),
        ("output", lambda: A.OutputLayer(A1, b1, "sigmoid"), output_ref),
        ("network_loss", lambda: A.NetworkLoss(A1, b1, A2, b2, "sigmoid"),
         lambda X, y: np.concatenate([[0.5 * np.mean(residual(X, y) ** 2)], output_ref(X, y).ravel()])),
        ("network_gradient", lambda: A.NetworkGradient(A1, b1, A2, b2, "sigmoid"), gradient_ref),
        ("gauss_newton", lambda: A.GaussNewtonProduct(A1, b1, A2, b2, "sigmoid", V), product_ref),
    ]


def value(acc):
    out = acc.result()
    if isinstance(acc, A.NetworkLoss):
        return np.concatenate([[out], acc.output_layer()[0].ravel()])
    if isinstance(acc, A.NetworkGradient):
        return np.concatenate([out.A1.ravel(), out.b1, out.A2.ravel(), out.b2, out.slope_gram.ravel(), [out.loss]])
    if isinstance(acc, A.GaussNewtonProduct):
        return np.concatenate([part.ravel() for part in out])
    return out[0] if isinstance(acc, A.NormalEquations) else out


@pytest.mark.parametrize("index", range(12))
def test_one_block_matches_reference(index):
    X, y, U, theta = data(0, n=300, d=4, m=2)
    name, make, reference = makers(U, theta)[index]
    scale = np.mean(np.abs(y) * (1 + np.linalg.norm(X, axis=1)) ** 4) * (1 + np.abs(U).max()) ** 4
    close(value(make().update(X, y)), reference(X, y), scale)


def test_covariance_matches_numpy_at_a_large_mean():
    # Mean 1e6, spread 1: raw power sums would keep ~4 digits of the variance
    # (eps64 * 1e12 / 1 = 2e-4); the centred Chan merge keeps ~14.
    X, y, _, _ = data(1, n=2000, d=4, offset=1e6)
    Y = np.column_stack([y, 2 * y + X[:, 0]])
    acc = A.Covariance()
    for i in range(0, 2000, 137):
        acc.update(X[i:i + 137], Y[i:i + 137])
    stats = acc.result()
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    close(stats.mean, X.mean(axis=0))
    close(stats.cov, Xc.T @ Xc / 2000, rtol=1e-9)
    close(stats.y_cov, Yc.T @ Yc / 2000, rtol=1e-9)
    close(stats.cross, Xc.T @ Yc / 2000, rtol=1e-9)
    assert stats.n == 2000 and acc.blocks == 15


def test_least_squares_matches_lstsq():
    X, y, _, _ = data(2, n=500, d=4, offset=3.0)
    y = y + X @ np.array([1.0, -2.0, 0.5, 0.0]) + 7.0
    intercept, coef = A.LeastSquares().update(X[:200], y[:200]).merge(A.LeastSquares().update(X[200:], y[200:])).result()
    want = np.linalg.lstsq(np.hstack([np.ones((500, 1)), X]), y, rcond=None)[0]
    close(intercept, want[:1], rtol=1e-9)
    close(coef[:, 0], want[1:], rtol=1e-9)


def test_normal_equations_ridge():
    rng = np.random.default_rng(3)
    F, Y = rng.standard_normal((400, 3)), rng.standard_normal((400, 2))
    A2, b2, cond = A.NormalEquations().update(F, Y).result(ridge=0.1)
    B = np.hstack([F, np.ones((400, 1))])
    H = B.T @ B + np.diag([40.0, 40.0, 40.0, 0.0])
    want = np.linalg.solve(H, B.T @ Y)
    close(A2, want[:3])
    close(b2, want[3])
    assert cond == pytest.approx(np.linalg.cond(H))


def split_points(n):
    return st.lists(st.integers(0, n), max_size=6).map(lambda cuts: sorted(set(cuts) | {0, n}))


@given(cuts=split_points(600), index=st.integers(0, 12), order_seed=st.integers(0, 2 ** 16))
def test_chunked_equals_one_block_and_merges_in_any_order(cuts, index, order_seed):
    X, y, U, theta = data(4)
    if index == 12:
        make, one = A.Covariance, A.Covariance().update(X, y).result().cov
        get = lambda acc: acc.result().cov
    else:
        _, make, _ = makers(U, theta)[index]
        one, get = value(make().update(X, y)), value
    parts = [make().update(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    scale = np.mean(np.abs(y) * (1 + np.linalg.norm(X, axis=1)) ** 4) * (1 + np.abs(U).max()) ** 4
    chunked = make()
    for a, b in zip(cuts[:-1], cuts[1:]):
        chunked.update(X[a:b], y[a:b])
    close(get(chunked), one, scale)
    # Any order, any grouping: a shuffled left fold and a pairwise tree.
    order = np.random.default_rng(order_seed).permutation(len(parts))
    fold = functools.reduce(lambda a, b: a.merge(b), [make()] + [parts[i] for i in order])
    close(get(fold), one, scale)
    parts = [make().update(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    while len(parts) > 1:
        parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    close(get(parts[0]), one, scale)
    assert parts[0].n == fold.n == 600


def test_float32_blocks_accumulate_in_float64():
    X, y, U, _ = data(5, n=5000)
    one = A.ThirdMomentIUU(U).update(X.astype(np.float32), y.astype(np.float32)).result()
    assert one.dtype == np.float64
    # float32 products per block (eps32 = 1.2e-7): the same tolerance as
    # tests/test_moments.py, 2e-7 of the terms' scale.
    scale = np.mean(np.abs(y) * (1 + np.linalg.norm(X, axis=1)) ** 3) * (1 + np.abs(U).max()) ** 3
    assert np.abs(one - ref.third_iuu(X, y, U)).max() <= 2e-7 * scale


def test_pass_feeds_every_accumulator_once_and_counts():
    X, y, U, _ = data(6)
    counter = A.PassCounter()
    blocks = [(X[i:i + 100], y[i:i + 100]) for i in range(0, 600, 100)]
    cov, iuu = A.Pass(counter, "stats").run(blocks, A.Covariance(), A.ThirdMomentIUU(U))
    A.Pass(counter, "stats").run(blocks, A.FirstMoment())
    assert counter.by_stage == {"stats": 2} and counter.total == 2
    assert cov.n == iuu.n == 600
    close(iuu.result(), A.ThirdMomentIUU(U).update(X, y).result())


@pytest.mark.parametrize("block, y_block, match", [
    (np.ones((3, 4)), np.ones(3), "block 1: expected 5 features"),
    (np.ones((3, 5), dtype=np.float32), np.ones(3), "block 1: expected dtype float64"),
    (np.ones(5), np.ones(1), r"block 1: expected a 2-D array"),
    (np.ones((3, 5)), np.ones(4), r"block 1: expected labels of shape \(3,\)"),
    (np.full((3, 5), np.nan), np.ones(3), "block 1: expected finite values, got 15 NaN"),
    (np.ones((3, 5)), np.array([1.0, np.inf, 1.0]), "block 1 labels: expected finite values, got 1 NaN or "
                                                    r"infinite entry \(first in row 1"),
    (np.ones((3, 5)), None, "block 1: expected labels"),
])
def test_bad_blocks_name_the_block(block, y_block, match):
    X, y, U, _ = data(7)
    acc = A.ThirdMomentIUU(U)
    acc.update(X[:10], y[:10])
    with pytest.raises((ValueError, TypeError), match=match):
        acc.update(block, y_block)
    assert acc.n == 10  # the bad block added nothing


def test_bad_blocks_in_a_pass_and_empty_streams():
    X, y, _, _ = data(8)
    bad = X[200:300].copy()
    bad[57, 2] = np.nan
    with pytest.raises(ValueError, match=r"block 2: expected finite values, got 1 NaN .* row 57"):
        A.Pass().run([(X[:100], y[:100]), (X[100:200], y[100:200]), (bad, y[200:300])], A.Covariance())
    with pytest.raises(TypeError, match="block 1: expected a real numeric array"):
        A.Pass().run([(X[:100], y[:100]), (np.array([["a"] * 5]), y[:1])], A.Covariance())
    with pytest.raises(ValueError, match="expected at least one row, got an empty stream"):
        A.Pass().run(iter([]), A.Covariance())
    with pytest.raises(ValueError, match="Covariance: no samples seen"):
        A.Covariance().result()


def test_merge_refuses_another_configuration():
    X, y, U, _ = data(9)
    with pytest.raises(TypeError, match="other: expected a ThirdMomentIUU, got Covariance"):
        A.ThirdMomentIUU(U).update(X, y).merge(A.Covariance().update(X, y))
    with pytest.raises(ValueError, match="same vectors"):
        A.ThirdMomentIUU(U).update(X, y).merge(A.ThirdMomentIUU(2 * U).update(X, y))
    with pytest.raises(ValueError, match="order: expected 3 or 4, got 5"):
        A.ProjectedMoment(U, 5)


@pytest.mark.parametrize("c", [1e-300, 1e200, 1e300])
def test_covariance_near_the_ends_of_float64(c):
    # The squares of entries 1e300 overflow and of 1e-300 underflow; the
    # accumulator sums them on the columns divided by a power of two, and
    # rescales its running sums when a later block (or a merged
    # accumulator) is larger. The reference: numpy on X / c, exact.
    X, y, _, _ = data(3, n=600, d=3, offset=1.0)
    X = X * np.array([c, 1.0, c])
    X[:200, 0] *= 2.0 ** -20  # the first blocks are smaller than the rest: the scale grows
    Y = np.column_stack([y * c, y])
    acc = A.Covariance()
    for i in range(0, 300, 97):
        acc.update(X[i:min(i + 97, 300)], Y[i:min(i + 97, 300)])
    acc.merge(A.Covariance().update(X[300:], Y[300:]))
    stats = acc.result()
    u = np.array([c, 1.0, c])
    Xu, Yu = X / u, Y / np.array([c, 1.0])
    close(stats.std / u, Xu.std(axis=0), rtol=1e-12)
    close(stats.y_std / np.array([c, 1.0]), Yu.std(axis=0), rtol=1e-12)
    close(stats.mean / u, Xu.mean(axis=0), rtol=1e-12)
    assert np.isfinite(stats.std).all() and np.all(stats.std > 0) and np.all(stats.y_std > 0)
    # The scaled statistics are the covariances of X / scale, finite.
    Xs = X / stats.scale
    close(stats.scaled_cov, np.cov(Xs.T, bias=True), rtol=1e-10)
    assert np.all(np.abs(X).max(axis=0) / stats.scale < 2) and np.all(np.abs(X).max(axis=0) / stats.scale >= 1)


# ----------------------------------------------------------------------------
# ScoreSpread: the significance tests' statistics without n x m arrays
# ----------------------------------------------------------------------------


def spread_reference(X, y, U, order):
    """The dense computation ScoreSpread replaces: every sample's
    y S_order(x)(u_j, ..., u_j) in an (n, m) array, then numpy's mean and std."""
    Z, nu = X @ U, np.sum(U * U, axis=0)
    v = y[:, None] * (Z * Z - nu if order == 2 else Z * (Z * Z - 3.0 * nu))
    return v.mean(axis=0), v.std(axis=0)


def assert_spread(got, X, y, U, order):
    mean, std = spread_reference(X, y, U, order)
    assert got.n == X.shape[0] and got.mean.shape == got.std.shape == (U.shape[1],)
    # The same float64 per-sample values summed in another order (blocks,
    # centred, merged): the results differ by a few n eps64 (1.3e-13 at
    # n = 600) of the values' size, std + |mean|; 1e-12 relative is the bar
    # of the change that introduced ScoreSpread.
    size = std + np.abs(mean)
    assert np.all(np.abs(got.mean - mean) <= 1e-12 * size)
    assert np.all(np.abs(got.std - std) <= 1e-12 * size)
    z = mean / (std / np.sqrt(X.shape[0]) + np.finfo(float).tiny)
    assert np.all(np.abs(got.z() - z) <= 1e-12 * np.abs(z) * (1 + np.abs(mean) / std))


@given(cuts=split_points(600), order=st.sampled_from([2, 3]), order_seed=st.integers(0, 2 ** 16))
def test_score_spread_equals_the_per_sample_computation_however_merged(cuts, order, order_seed):
    X, y, U, _ = data(12, offset=0.3)
    y = y + 2.0  # labels of nonzero mean: mean and spread both matter
    assert_spread(A.ScoreSpread(U, order).update(X, y).result(), X, y, U, order)
    chunked = A.ScoreSpread(U, order)
    for a, b in zip(cuts[:-1], cuts[1:]):
        chunked.update(X[a:b], y[a:b])
    assert_spread(chunked.result(), X, y, U, order)
    parts = [A.ScoreSpread(U, order).update(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    perm = np.random.default_rng(order_seed).permutation(len(parts))
    fold = functools.reduce(lambda a, b: a.merge(b), [A.ScoreSpread(U, order)] + [parts[i] for i in perm])
    assert_spread(fold.result(), X, y, U, order)


def test_score_spread_of_float32_blocks_is_that_of_their_float64_values():
    # The fit's tensor stage streams float32 rows and labels: the values are
    # formed in float64 from them, as the per-sample route did.
    X, y, U, _ = data(13, n=3000)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    acc = A.ScoreSpread(U, 3)
    for i in range(0, 3000, 700):
        acc.update(X32[i:i + 700], y32[i:i + 700])
    assert_spread(acc.result(), X32.astype(np.float64), y32.astype(np.float64), U, 3)


def test_score_spread_bad_configuration():
    X, y, U, _ = data(14)
    with pytest.raises(ValueError, match="order: expected 2 or 3, got 4"):
        A.ScoreSpread(U, 4)
    with pytest.raises(ValueError, match="same order"):
        A.ScoreSpread(U, 2).update(X, y).merge(A.ScoreSpread(U, 3).update(X, y))
    with pytest.raises(ValueError, match="same vectors"):
        A.ScoreSpread(U, 2).update(X, y).merge(A.ScoreSpread(2 * U, 2).update(X, y))
    with pytest.raises(ValueError, match="ScoreSpread: no samples seen"):
        A.ScoreSpread(U).result()


def test_data_moment_score_spread_reads_each_order_s_labels_in_one_pass():
    from fastten._sources import ArraySource
    from fastten.operators import DataMoment

    X, y, U, _ = data(15, n=1000)
    y2 = np.cos(3 * y)
    op = DataMoment.from_source(ArraySource(X, y, 97), X.shape[1], source2=ArraySource(X, y2, 97))
    assert_spread(op.score_spread(U, 3), X, y, U, 3)
    assert_spread(op.score_spread(U, 2), X, y2, U, 2)
    assert op.passes == 2


def test_normal_equations_of_dependent_features_without_ridge():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((50, 3))
    F[:, 2] = 0.0  # a unit dead on every row
    Y = F[:, :2] @ np.array([[1.0], [-2.0]]) + 0.5
    A2, b2, cond = A.NormalEquations().update(F, Y).result(ridge=0.0)
    assert cond == np.inf
    np.testing.assert_allclose(A2[:, 0], [1.0, -2.0, 0.0], atol=1e-10)  # least norm: 0 on the dead unit
    np.testing.assert_allclose(b2, [0.5], atol=1e-10)


def network(seed, d=4, k=3, m=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((d, k)), rng.standard_normal(k), rng.standard_normal((k, m)),
            rng.standard_normal(m))


def test_network_loss_output_layer_is_the_least_squares_layer_and_its_loss():
    X, _, _, _ = data(11, n=400, d=4)
    A1, b1, A2, b2 = network(0)
    Y = np.random.default_rng(1).standard_normal((400, 2))
    acc = A.NetworkLoss(A1, b1, A2, b2, "tanh").update(X, Y)
    S = derivative("tanh", X @ A1 + b1, 0)
    assert acc.result() == pytest.approx(0.5 * np.sum((S @ A2 + b2 - Y) ** 2) / 400, rel=1e-12)
    np.testing.assert_allclose(acc.errors(), np.mean((S @ A2 + b2 - Y) ** 2, axis=0), rtol=1e-12)
    for ridge in (0.0, 0.05):
        A2_, b2_, loss = acc.output_layer(ridge)
        A2_ref, b2_ref, _ = A.OutputLayer(A1, b1, "tanh").update(X, Y).result(ridge)
        np.testing.assert_allclose(A2_, A2_ref, rtol=1e-12)
        np.testing.assert_allclose(b2_, b2_ref, rtol=1e-12)
        # The loss from the normal equations (the decrease from the network's
        # own layer) against the loss computed on the rows: both O(1), so
        # the rounding of either is about 1e-15 of it.
        direct = 0.5 * np.sum((S @ A2_ + b2_ - Y) ** 2) / 400 + 0.5 * ridge * np.sum(A2_ ** 2)
        assert loss == pytest.approx(direct, rel=1e-10)
        assert loss < acc.result()


def test_network_gradient_is_the_loss_derivative_with_several_outputs():
    X, _, _, _ = data(12, n=300, d=4)
    net = network(2)
    Y = np.random.default_rng(3).standard_normal((300, 2))
    got = A.NetworkGradient(*net, "sigmoid").update(X, Y).result()

    def loss(params):
        return A.NetworkLoss(*params, "sigmoid").update(X, Y).result()

    # Central differences, step 1e-6 on O(1) parameters: truncation about
    # 1e-12 and rounding about 1e-16 / 1e-6 = 1e-10 of the loss, so 1e-7
    # absolute on gradients of order 0.1-1 leaves three orders of margin.
    for index, grad in enumerate((got.A1, got.b1, got.A2, got.b2)):
        for position in np.ndindex(grad.shape):
            up = [p.copy() for p in net]
            down = [p.copy() for p in net]
            up[index][position] += 1e-6
            down[index][position] -= 1e-6
            assert abs((loss(up) - loss(down)) / 2e-6 - grad[position]) < 1e-7


def test_network_accumulators_of_float32_blocks_are_those_of_their_float64_values():
    X, y, _, _ = data(13, n=5000, d=4)
    X32 = X.astype(np.float32)
    net = network(4, m=1)
    V = network(5, m=1)
    for make in (lambda: A.NetworkGradient(*net, "sigmoid"), lambda: A.GaussNewtonProduct(*net, "sigmoid", V)):
        a, b = make().update(X32, y).result(), make().update(X32.astype(np.float64), y).result()
        parts = [(a.A1, b.A1), (a.b1, b.b1)] if isinstance(a, A.GradientResult) else list(zip(a, b))
        for x, z in parts:  # float32 products: about 1e-7 of the terms' scale
            np.testing.assert_allclose(x, z, rtol=1e-5, atol=1e-6 * np.abs(z).max())


def test_network_accumulators_bad_input():
    A1, b1, A2, b2 = network(6)
    X, _, _, _ = data(14, n=50, d=4)
    with pytest.raises(ValueError, match=r"b1: expected 3 biases"):
        A.NetworkGradient(A1, b1[:2], A2, b2, "tanh")
    with pytest.raises(ValueError, match=r"A2: expected shape \(3, m\)"):
        A.NetworkLoss(A1, b1, A2[:2], b2, "tanh")
    with pytest.raises(ValueError, match="b2: expected 2 intercepts"):
        A.NetworkLoss(A1, b1, A2, b2[:1], "tanh")
    with pytest.raises(ValueError, match="A2: expected finite values"):
        A.NetworkLoss(A1, b1, A2 * np.nan, b2, "tanh")
    with pytest.raises(ValueError, match=r"block 0: expected 2 label column\(s\)"):
        A.NetworkLoss(A1, b1, A2, b2, "tanh").update(X, np.zeros(50))
    with pytest.raises(ValueError, match="labels"):
        A.NetworkGradient(A1, b1, A2, b2, "tanh").update(X)
    with pytest.raises(ValueError, match="V: expected the network's shapes"):
        A.GaussNewtonProduct(A1, b1, A2, b2, "tanh", (A1[:2], b1, A2, b2))
    Y = np.zeros((50, 2))
    with pytest.raises(ValueError, match="same A2"):
        A.NetworkGradient(A1, b1, A2, b2, "tanh").update(X, Y).merge(
            A.NetworkGradient(A1, b1, 2 * A2, b2, "tanh").update(X, Y))
    with pytest.raises(ValueError, match="same V"):
        A.GaussNewtonProduct(A1, b1, A2, b2, "tanh", (A1, b1, A2, b2)).update(X, Y).merge(
            A.GaussNewtonProduct(A1, b1, A2, b2, "tanh", (A1, b1, A2, 2 * b2)).update(X, Y))
    with pytest.raises(ValueError, match="no samples seen"):
        A.NetworkLoss(A1, b1, A2, b2, "tanh").output_layer()
