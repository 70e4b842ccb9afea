"""fit(), its refinement and the network object. Work in progress toward
issue #4: the recovery bars of that issue are not tested here yet."""

import warnings

import numpy as np
import pytest

from fastten import _refine
from fastten._refine import refine
from fastten.datasets import make_planted_network
from fastten import fit
from fastten.network import TwoLayerNet


def test_refinement_converges_quadratically_from_near_the_truth():
    net = make_planted_network(20_000, 10, 3, random_state=0)
    rng = np.random.default_rng(1)
    A1 = net.A1 + 0.05 * rng.standard_normal(net.A1.shape)
    res = refine(net.X, net.y, A1, net.b1 + 0.05, net.a2 * 1.1, 0.05, "sigmoid", rng=rng)
    # Noise-free labels: the optimum has zero loss, where Gauss-Newton
    # converges quadratically; 1e-20 of the label variance is reached only
    # if it does (a first-order method would stall far above).
    assert res.converged and res.losses[-1] <= 1e-20 * np.var(net.y)
    np.testing.assert_allclose(res.A1, net.A1, atol=1e-8)


def test_fit_recovers_an_easy_planted_network():
    # A regression test of the whole pipeline on one problem where the tensor
    # stage lands in the refinement's basin (d=10, k=3, n=5*10^4, seed 0);
    # the rate over seeds is not yet what issue #4 asks (see its note).
    net = make_planted_network(50_000, 10, 3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X, net.y, 3, random_state=0)
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    assert mse <= 1e-12
    cos = np.abs((model.A1 / np.linalg.norm(model.A1, axis=0)).T @ net.A1).max(axis=0)
    assert cos.min() >= 0.9999
    assert model.diagnostics["engine"] == "nonorthogonal"


def test_random_initialisation_skips_the_tensor_stage():
    net = make_planted_network(50_000, 10, 3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X, net.y, 3, init="random", random_state=0)
    assert model.diagnostics["init"] == "random" and model.diagnostics["engine"] is None
    # Measured: from random directions, Levenberg-Marquardt with re-seeding
    # reaches the exact network on this problem too (see the #4 note).
    assert np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test) <= 1e-12


def test_fit_maps_back_from_standardised_coordinates():
    # Affine inputs x = mu + C z: the network fitted on x must predict like
    # the planted one on z.
    net = make_planted_network(50_000, 10, 3, random_state=0)
    rng = np.random.default_rng(5)
    C = np.linalg.qr(rng.standard_normal((10, 10)))[0] * rng.uniform(0.5, 2.0, 10)
    mu = rng.standard_normal(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X @ C.T + mu, net.y, 3, random_state=0)
    f = model.predict(net.X_test @ C.T + mu)
    assert np.mean((f - net.f_test) ** 2) / np.var(net.f_test) <= 1e-10


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = TwoLayerNet(rng.standard_normal((4, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.5,
                        "tanh", {"engine": "nonorthogonal", "times": {"total": 1.0}})
    path = tmp_path / "net"  # no extension: the file is written and read under this name
    model.save(path)
    loaded = TwoLayerNet.load(path)
    X = rng.standard_normal((7, 4))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.diagnostics == model.diagnostics and loaded.activation == "tanh"
    np.savez(tmp_path / "other.npz", header=np.array('{"format": "something else"}'))
    with pytest.raises(ValueError, match="path: expected a fastten.TwoLayerNet/1 file"):
        TwoLayerNet.load(tmp_path / "other.npz")


X = np.random.default_rng(0).standard_normal((600, 4))
y = np.random.default_rng(1).standard_normal(600)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((X, y, 0), {}, ValueError, r"n_hidden: expected an integer in \[1, 4\], got 0"),
    ((X, y, 5), {}, ValueError, r"n_hidden: expected an integer in \[1, 4\], got 5"),
    ((X, y, 2.0), {}, TypeError, r"n_hidden: expected an integer, got 2.0"),
    ((X, y[:-1], 2), {}, ValueError, r"y: expected 600 labels"),
    ((X[:, 0], y, 1), {}, ValueError, r"X: expected a 2-D array"),
    ((X, np.full(600, 2.0), 2), {}, ValueError, r"y: expected labels that vary, got the constant 2.0"),
    ((X[:10], y[:10], 2), {}, ValueError, r"X: expected at least 13 samples .* got 10"),
    ((X, np.where(y > 2, np.nan, y), 2), {}, ValueError, r"y: expected finite values"),
    ((X, y, 2), {"activation": "relu6"}, ValueError, r"activation: expected one of"),
    ((X, y, 2), {"input_model": "uniform"}, ValueError, r"input_model: expected one of"),
    ((X, y, 2), {"init": "zeros"}, ValueError, r"init: expected one of \('tensor', 'random'\), got 'zeros'"),
    ((np.hstack([X, X[:, :1]]), y, 2), {}, ValueError, r"X: expected a non-singular sample covariance"),
])
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(*args, **kwargs)


@pytest.mark.parametrize("n", [1, 300, 2 * 2048 + 17])
def test_gauss_newton_product_kernel_matches_dense_jacobian(n):
    # Reference: the explicit Jacobian J (n x p) of f = a2^T sigma(A1^T x + b1) + b2.
    rng = np.random.default_rng(n)
    d, k = 4, 3
    X, G, S = rng.standard_normal((n, d)), rng.standard_normal((n, k)), rng.standard_normal((n, k))
    net = _refine._Net(d, k)
    v = rng.standard_normal(net.size)
    J = np.hstack([(G[:, :, None] * X[:, None, :]).reshape(n, k * d), G, S, np.ones((n, 1))])
    expected = J.T @ (J @ v)
    got = _refine._gn_product(X, S, G, v, net)
    # A sum of n products of O(1) terms: float64 rounding stays below 1e-12 relative.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
