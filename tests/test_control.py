"""Control variates of the tensor stage (fastten._control): the quadratic fit
and its Hessian, the blocked normal equations, Stein's identity against
population moments (orders 2-4), cross-fitting, and fit's options."""

import warnings

import numpy as np
import pytest

from fastten import _control, fit
from fastten._control import control_labels, fit_control_variate, quadratic_features
from fastten.activations import gaussian_expectation
from fastten.datasets import make_planted_network
from fastten.operators import DataMoment


def _quadratic_labels(rng, n, d, m):
    """y = c + w.x + (1/2) z^T H z with z = Q^T x, Q (d, m) orthonormal."""
    X = rng.standard_normal((n, d))
    Q = np.linalg.qr(rng.standard_normal((d, m)))[0]
    H = rng.standard_normal((m, m))
    H = H + H.T
    Z = X @ Q
    y = 0.7 + X @ rng.standard_normal(d) + 0.5 * np.einsum("ia,ab,ib->i", Z, H, Z)
    return X, y, Q, H


def test_quadratic_fit_is_exact_on_a_quadratic_and_returns_its_hessian():
    rng = np.random.default_rng(0)
    X, y, Q, H = _quadratic_labels(rng, 3000, 9, 4)
    cv = fit_control_variate(X, y, Q)
    # Noise-free labels in the model: the residual vanishes to rounding and
    # the Hessian in z is H (the features' -delta_ab shifts only the intercept).
    np.testing.assert_allclose(y - cv.predict(X), 0.0, atol=1e-9 * np.abs(y).max())
    np.testing.assert_allclose(cv.hessian(), H, atol=1e-9)
    Omega = rng.standard_normal((9, 3))
    np.testing.assert_allclose(cv.second_moment_correction(Omega), Q @ H @ Q.T @ Omega, atol=1e-9)
    assert cv.n_features == 1 + 9 + 10


def test_quadratic_features_are_the_degree_two_hermite_monomials():
    Z = np.array([[1.0, 2.0, 3.0]])
    # (a, b) in triu order: 00 01 02 11 12 22
    np.testing.assert_array_equal(quadratic_features(Z), [[0.0, 2.0, 3.0, 3.0, 6.0, 8.0]])


def test_blocked_normal_equations_equal_one_least_squares(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1037, 6))
    y = np.tanh(X[:, 0] + X[:, 1] ** 2) + 0.1 * rng.standard_normal(1037)
    Q = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    D = np.hstack([np.ones((1037, 1)), X, quadratic_features(X @ Q)])
    want = np.linalg.lstsq(D, y, rcond=None)[0]
    monkeypatch.setattr(_control, "BLOCK_ROWS", 100)  # 11 blocks, the last one short
    cv = fit_control_variate(X, y, Q)
    got = np.concatenate([[cv.intercept], cv.w, cv.beta])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(cv.predict(X), D @ want, atol=1e-10)


def test_a_repeated_basis_column_gets_no_coefficient():
    rng = np.random.default_rng(2)
    X, y, Q, H = _quadratic_labels(rng, 2000, 7, 2)
    cv = fit_control_variate(X, y, np.hstack([Q, Q[:, :1]]))  # a collinear quadratic feature
    assert np.all(np.isfinite(cv.beta))
    np.testing.assert_allclose(y - cv.predict(X), 0.0, atol=1e-8 * np.abs(y).max())


def _population(net, U, order):
    """E[y He_order(u . x)] = sum_j lambda_j (a_j . u)^order for unit u
    (Stein), x ~ N(0, I)."""
    lam = net.a2 * gaussian_expectation(net.activation, order, net.b1, np.linalg.norm(net.A1, axis=0))
    return ((U.T @ net.A1) ** order) @ lam


def _hermite(t, order):
    return {2: t * t - 1.0, 3: t * (t * t - 3.0), 4: (t * t) * (t * t - 6.0) + 3.0}[order]


def _z_scores(X, r, U, net, order, correction=None):
    """(estimate - population) / standard error along unit directions U.

    The estimate is mean(r He_m(u.x)) (+ u^T C u for the M2 correction C U);
    the standard error sd(r He_m(u.x)) / sqrt(n). For the corrected M2 that
    is the first-order error too: with g = g* + delta . phi (phi the
    quadratic features), mean((y - g) He2) + Hess g (u, u) = mean((y - g*)
    He2) + Hess g* (u, u) - delta . (mean(phi He2) - E[phi He2]), and the
    last term is a product of two O(n^-1/2) errors (Stein: E[phi He2] =
    Hess phi (u, u))."""
    H = _hermite(X @ U, order)
    v = r[:, None] * H
    est = v.mean(axis=0)
    if correction is not None:
        est = est + np.einsum("aj,aj->j", U, correction(U))
    return (est - _population(net, U, order)) / (v.std(axis=0) / np.sqrt(X.shape[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cross_fit", [False, True])
def test_quadratic_control_variate_keeps_the_moments_expectations(seed, cross_fit):
    n, d, k = 100_000, 8, 3
    net = make_planted_network(n, d, k, noise=0.05, random_state=seed)
    X, y = net.X, net.y - net.y.mean()
    rng = np.random.default_rng(seed)
    labels = control_labels(DataMoment(X, y), X, y, "quadratic", cross_fit, k, rng)
    assert labels.record["quadratic_dimension"] == ([d, d] if cross_fit else d)  # k + 5 columns, capped at d
    # The quadratic's own fit takes out part of the variance left by the linear one.
    assert np.var(labels.higher) < np.var(labels.second) < np.var(y)
    U = np.hstack([net.A1 / np.linalg.norm(net.A1, axis=0), rng.standard_normal((d, 12))])
    U /= np.linalg.norm(U, axis=0)
    # 15 directions x 3 orders: each z is about N(0, 1) (the in-sample
    # bias, of order p / n with p = 45 features, is below 0.15 standard
    # errors here). P(max of 45 |z| > 4.5) is about 45 x 6.8e-6 = 3e-4.
    z = np.concatenate([_z_scores(X, labels.higher, U, net, 3), _z_scores(X, labels.higher, U, net, 4),
                        _z_scores(X, labels.higher, U, net, 2, labels.second_moment_correction)])
    assert np.abs(z).max() < 4.5, np.round(z, 1)
    # The linear residual keeps M2 as it is. Without the Hessian added
    # back, the quadratic residual's M2 is wrong (Stein: E[g S2] =
    # E[Hess g]), far outside the noise: the test above can fail.
    assert np.abs(_z_scores(X, labels.second, U, net, 2)).max() < 4.5
    assert np.abs(_z_scores(X, labels.higher, U, net, 2)).max() > 20


def test_cross_fitting_subtracts_a_control_variate_fitted_on_the_other_half():
    net = make_planted_network(6000, 10, 3, noise=0.1, random_state=4)
    X, y = net.X, net.y - net.y.mean()

    def labels(y, seed=0):
        return control_labels(DataMoment(X, y), X, y, "quadratic", True, 3, np.random.default_rng(seed))

    first = labels(y)
    again = labels(y)
    np.testing.assert_array_equal(first.higher, again.higher)
    np.testing.assert_array_equal(first.second, again.second)
    assert first.higher.shape == first.second.shape == (6000,)
    assert [rows.shape[0] for rows, _ in first.quadratics] == [3000, 3000]
    applied = first.quadratics[0][0]
    # Moving one label changes that row's residual by the same amount and
    # no other residual of its half: its control variate was fitted on the
    # other half. In-sample, every residual moves.
    i = applied[5]
    moved = y.copy()
    moved[i] += 1.0
    shifted = labels(moved)
    same_half = np.setdiff1d(applied, [i])
    np.testing.assert_array_equal(shifted.higher[same_half], first.higher[same_half])
    assert shifted.higher[i] - first.higher[i] == pytest.approx(1.0, abs=1e-12)
    in_sample = [control_labels(DataMoment(X, v), X, v, "quadratic", False, 3, np.random.default_rng(0)).higher
                 for v in (y, moved)]
    assert np.abs(in_sample[1] - in_sample[0])[same_half].min() > 0


def test_fit_records_and_reproduces_each_control_variate():
    net = make_planted_network(8000, 10, 3, random_state=5)
    for cv, cross in [("none", False), ("linear", True), ("quadratic", False), ("quadratic", True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tensor stage alone warns about the units it cannot confirm
            models = [fit(net.X, net.y, 3, refine=False, control_variate=cv, cross_fit=cross, random_state=3)
                      for _ in range(2)]
        np.testing.assert_array_equal(models[0].A1, models[1].A1)
        record = models[0].diagnostics["control_variate"]
        assert record["kind"] == cv and record["cross_fit"] == cross
        assert (record["variance_ratio"] == 1.0) == (cv == "none")
        assert (record["features"] is not None) == (cv == "quadratic")
        assert models[0].diagnostics["data_passes"]["control_variate"] > 0 or (cv == "none")



def test_product_inputs_take_the_quadratic_control_variate_in_the_standardised_features():
    from fastten.scores import Logistic

    from .test_fit_slow import worst_cos

    net = make_planted_network(30_000, 8, 3, input_density=Logistic(), random_state=1)
    records, cosines = [], []
    for cv, cross in [("linear", False), ("quadratic", True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tensor stage alone warns about the units it cannot confirm
            model = fit(net.X, net.y, 3, input_model="product", refine=False, control_variate=cv, cross_fit=cross,
                        random_state=0)
        records.append(model.diagnostics["control_variate"])
        cosines.append(worst_cos(net.A1, model.A1))
    # Stein's identity holds for the product score too: the quadratic
    # takes out about half of what the linear fit leaves (0.019 against
    # 0.035 of Var(y) measured), and the directions stay right (0.998 and
    # 0.997 measured; 0.95 leaves room for the score fit's noise).
    assert records[1]["variance_ratio"] < 0.8 * records[0]["variance_ratio"]
    assert records[1]["quadratic_dimension"] == [8, 8]
    assert min(cosines) >= 0.95, cosines


def test_second_order_labels_are_a_second_source_of_the_same_rows():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3000, 5))
    y, y2 = rng.standard_normal(3000), rng.standard_normal(3000)
    U = rng.standard_normal((5, 3))
    op = DataMoment(X, np.zeros(3000))._restricted(None, y, y2)
    # Order 2 from y2, order 3 from y, as separate moments of the same rows.
    np.testing.assert_allclose(op.second_moment_dot(U), DataMoment(X, y2).second_moment_dot(U), rtol=1e-12)
    np.testing.assert_allclose(op.iuu(U), DataMoment(X, y).iuu(U), rtol=1e-12)
    np.testing.assert_array_equal(op.y2, y2)
    np.testing.assert_array_equal(op._restricted(None, y).y2, y)  # no y2: the second order takes y
    rows = np.array([0, 7, 2999])
    np.testing.assert_array_equal(op._restricted(rows, y[rows]).source.X, X[rows])


def _chunks(X, y, rows=2048):
    def chunks():
        for i in range(0, X.shape[0], rows):
            yield X[i:i + rows], y[i:i + rows]
    return chunks


def test_out_of_core_fit_takes_the_linear_or_no_control_variate():
    net = make_planted_network(6000, 8, 2, random_state=1)
    for cv in ("linear", "none"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tensor stage alone warns about the units it cannot confirm
            kept = fit(net.X, net.y, 2, refine=False, control_variate=cv, random_state=0, block_rows=2048)
            streamed = fit(_chunks(net.X, net.y), None, 2, refine=False, control_variate=cv, random_state=0,
                           block_rows=2048)
        # The same rows in the same blocks through the same accumulators
        # (tests/test_out_of_core.py): the same network to rounding.
        for name in ("A1", "b1", "a2"):
            a, b = getattr(kept, name), getattr(streamed, name)
            assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max(), (cv, name)
        # The stream's record comes from the statistics pass, the array's
        # from the residual itself: equal to rounding.
        want, got = kept.diagnostics["control_variate"], streamed.diagnostics["control_variate"]
        assert got["kind"] == cv and got["cross_fit"] is False and got["features"] is None
        assert got["variance_ratio"] == pytest.approx(want["variance_ratio"], rel=1e-9)
        assert (got["variance_ratio"] < 0.9) == (cv == "linear")  # tanh-like units: most of Var(y) is linear
        assert streamed.diagnostics["data_passes"]["control_variate"] == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"control_variate": "quadratic"}, r"control_variate: 'quadratic' needs the data in memory; X out of core .* "
                                       r"supports 'linear' \(the default\) and 'none'"),
    ({"cross_fit": True}, r"cross_fit: True needs the data in memory"),
])
def test_out_of_core_refuses_the_quadratic_and_cross_fitting_before_reading(kwargs, match):
    def chunks():
        raise AssertionError("the data were read")
    with pytest.raises(ValueError, match=match):
        fit(chunks, None, 2, **kwargs)


def test_the_sketch_engine_hashes_the_operators_rows_in_memory():
    from .test_fit_slow import worst_cos

    # fit's operator reads its rows from a source (and the quadratic control
    # variate replaces it): method="sketch" used to fail on its missing X.
    net = make_planted_network(20_000, 8, 2, random_state=1)
    for cv in ("linear", "quadratic"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tensor stage alone warns about the units it cannot confirm
            model = fit(net.X, net.y, 2, method="sketch", control_variate=cv, refine=False, random_state=0)
        # Measured 0.95 (linear) and 0.98 (quadratic); the sketch's hashing
        # noise is far above the dense engines' at this n, hence 0.8.
        assert worst_cos(net.A1, model.A1) >= 0.8, cv
    with pytest.raises(ValueError, match="method: 'sketch' needs the data in memory"):
        fit(_chunks(net.X, net.y), None, 2, method="sketch")
