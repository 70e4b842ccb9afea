import numpy as np
import pytest

from fastten.datasets import DATA_STREAM, make_planted_network


def test_planted_network_shapes_and_ranges():
    net = make_planted_network(500, 7, 3, weight_norm=2.0, noise=0.1, n_test=200, random_state=0)
    assert net.X.shape == (500, 7) and net.y.shape == (500,)
    assert net.X_test.shape == (200, 7) and net.f_test.shape == (200,)
    np.testing.assert_allclose(np.linalg.norm(net.A1, axis=0), 2.0)
    assert np.all(np.abs(net.b1) <= 1) and np.all((np.abs(net.a2) >= 0.5) & (np.abs(net.a2) <= 1.5))
    np.testing.assert_array_equal(net.output(net.X_test), net.f_test)
    # Label noise of sd 0.1: the residual sd over 500 samples is 0.1 within
    # +-20% (its relative standard error is 1/sqrt(2*500) = 3%).
    assert 0.08 < np.std(net.y - net.output(net.X)) < 0.12


def test_same_seed_same_problem_and_generator_advances():
    a = make_planted_network(50, 4, 2, random_state=3)
    b = make_planted_network(50, 4, 2, random_state=3)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.A1, b.A1)
    g = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(DATA_STREAM,)))
    c = make_planted_network(50, 4, 2, random_state=g)
    d = make_planted_network(50, 4, 2, random_state=g)
    np.testing.assert_array_equal(c.A1, a.A1)
    assert not np.array_equal(c.A1, d.A1)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_int_seed_stream_is_not_the_one_fit_draws_from(seed):
    # fit(random_state=seed, init="random") draws one normal, then its unit
    # directions, from default_rng(seed). When the planted network used that
    # stream too, those directions were the planted ones shifted by one
    # column (|cos| = 1). Independent directions in d=50: each |cos| has sd
    # 0.14, so the largest of 100 stays below 0.7 (5 sd).
    net = make_planted_network(100, 50, 10, random_state=seed)
    fit_rng = np.random.default_rng(seed)
    fit_rng.standard_normal(1)
    U = fit_rng.standard_normal((50, 10))
    cos = (U / np.linalg.norm(U, axis=0)).T @ (net.A1 / np.linalg.norm(net.A1, axis=0))
    assert np.abs(cos).max() < 0.7


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_samples=0), ValueError, "n_samples: expected an integer >= 1, got 0"),
    (dict(n_hidden=2.0), TypeError, "n_hidden: expected an integer, got 2.0"),
    (dict(activation="relu6"), ValueError, "activation: expected one of"),
    (dict(weight_norm=0), ValueError, "weight_norm: expected a positive number, got 0"),
    (dict(noise=-1), ValueError, "noise: expected a number >= 0, got -1"),
    (dict(bias_range=(0.5, 0.2)), ValueError, r"bias_range: expected \(low, high\) with 0 <= low <= high"),
    (dict(mean=np.zeros(2)), ValueError, r"mean: expected shape \(3,\), got \(2,\)"),
    (dict(cov=-np.eye(3)), ValueError, "cov: expected a positive definite matrix"),
    (dict(task="ranking"), ValueError, "task: expected 'regression' or 'classification', got 'ranking'"),
    (dict(task="classification", activation="relu"), ValueError, "classification needs a bounded activation"),
    (dict(task="classification", noise=0.1), ValueError, "noise: expected 0 for task='classification'"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(n_samples=10, n_features=3, n_hidden=2) | kwargs
    with pytest.raises(error, match=match):
        make_planted_network(**args)


def test_bias_range_and_affine_inputs():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    cov = Q @ np.diag([1.0, 2.0, 5.0, 10.0]) @ Q.T
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    net = make_planted_network(20_000, 4, 3, activation="relu", bias_range=(0.3, 1.0), mean=mean, cov=cov,
                               random_state=1)
    assert np.all((np.abs(net.b1) >= 0.3) & (np.abs(net.b1) <= 1.0))
    # Sample mean and covariance of 2e4 draws: standard errors sqrt(10 / 2e4)
    # = 0.022 for the mean and about 10 sqrt(2 / 2e4) = 0.1 for the largest
    # covariance entry; 5 standard errors.
    np.testing.assert_allclose(net.X.mean(axis=0), mean, atol=0.12)
    np.testing.assert_allclose(np.cov(net.X.T), cov, atol=0.5)
    np.testing.assert_array_equal(net.output(net.X_test), net.f_test)


def test_classification_labels_are_draws_from_the_squashed_network():
    net = make_planted_network(40_000, 6, 4, task="classification", random_state=2)
    assert set(np.unique(net.y)) <= {0.0, 1.0}
    assert np.all((net.f_test >= 0) & (net.f_test <= 1))
    # Still a planted network: the outputs are the network's, and the labels'
    # mean matches the mean probability within 5 binomial standard errors.
    np.testing.assert_allclose(net.output(net.X_test), net.f_test)
    assert abs(net.y.mean() - net.output(net.X).mean()) <= 5 * 0.5 / np.sqrt(40_000)
