"""Many-seed recovery checks of ``fit`` (the slow tier: ``pytest -m slow``).

Each check fits planted networks over several seeds and counts the seeds
that meet the bar of issue #4 ("exact": worst matched |cos| >= 0.9999 and
test MSE / Var <= 1e-6). The required counts are what the measured rates
(``python -m bench recovery --seeds 20``, recorded in docs/benchmarks.md)
make near-certain: a rate of 20/20 leaves at most one failure in ten seeds
with probability above 0.9 even at a true rate of 0.95. The seeds are fixed
and the fit is deterministic, so each check is also a regression test of
those seeds.
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fastten import ConvergenceWarning, fit
from fastten.datasets import make_planted_network

pytestmark = pytest.mark.slow


def worst_cos(A, B):
    C = np.abs((A / np.linalg.norm(A, axis=0)).T @ (B / np.linalg.norm(B, axis=0)))
    rows, cols = linear_sum_assignment(-C)
    return C[rows, cols].min()


def exact(net, model):
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    return worst_cos(model.A1, net.A1) >= 0.9999 and mse <= 1e-6


def fitted(n, d, k, seed, make=None, **kwargs):
    net = make_planted_network(n, d, k, random_state=seed, **(make or {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return net, fit(net.X, net.y, k, random_state=seed, **kwargs)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_noise_free_d20_exact_in_nine_of_ten_seeds(activation):
    hits = sum(exact(*fitted(20_000, 20, 5, seed, {"activation": activation}, activation=activation))
               for seed in range(10))
    assert hits >= 9


def test_noise_free_d50_exact_in_four_of_five_seeds():
    assert sum(exact(*fitted(100_000, 50, 10, seed)) for seed in range(5)) >= 4


def test_affine_inputs_exact_after_mapping_back():
    # x ~ N(mu, Sigma), cond(Sigma) = 10, mu != 0; the planted weights act on x.
    hits = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        Q = np.linalg.qr(rng.standard_normal((20, 20)))[0]
        make = {"mean": rng.uniform(-2, 2, 20), "cov": (Q * np.geomspace(1, 10, 20)) @ Q.T}
        hits += exact(*fitted(20_000, 20, 5, seed, make))
    assert hits >= 9


def test_tensor_stage_alone_at_a_million_samples():
    # refine=False, d=20, k=5, n=10^6: the issue asks worst |cos| >= 0.9 in
    # 18 of 20 seeds; five seeds here, all of which must pass (measured: 20
    # of 20, the lowest 0.925, median 0.989).
    for seed in range(5):
        net, model = fitted(1_000_000, 20, 5, seed, refine=False)
        assert worst_cos(model.A1, net.A1) >= 0.9


def test_noisy_labels_reach_the_parametric_rate():
    # Label noise sd 0.1, d=50, k=10, n=10^5: excess test MSE against the
    # noise-free outputs within 2x sigma^2 p / n in at least 4 of 5 seeds
    # (at the optimum it is about sigma^2 p / n: measured 0.95-1.12 of it).
    n, d, k = 100_000, 50, 10
    bound = 2 * 0.1 ** 2 * (d * k + 2 * k + 1) / n
    hits = 0
    for seed in range(5):
        net, model = fitted(n, d, k, seed, {"noise": 0.1})
        hits += np.mean((model.predict(net.X_test) - net.f_test) ** 2) <= bound
    assert hits >= 4


def test_classification_within_a_point_of_bayes():
    for seed in range(3):
        net, model = fitted(100_000, 20, 5, seed, {"task": "classification"}, task="classification")
        p = net.f_test
        ours = np.mean(np.where(model.predict_class(net.X_test) == 1, p, 1 - p))
        assert np.mean(np.maximum(p, 1 - p)) - ours <= 0.01


@pytest.mark.parametrize("activation, make", [
    ("relu", {"activation": "relu", "bias_range": (0.3, 1.0)}),
    ("softplus", {"activation": "softplus"}),
])
def test_relu_and_softplus_recovery_rate_does_not_collapse(activation, make):
    # Below the bar (19 of 20): measured 15/20 for ReLU with |b1| in
    # [0.3, 1] and 14/20 for softplus (docs/benchmarks.md). Which seeds fail
    # moves with every change to the restarts, so this guards the rate
    # against a collapse rather than the seeds; it is not the bar.
    hits = sum(exact(*fitted(20_000, 20, 5, seed, make, activation=activation)) for seed in range(10))
    assert hits >= 5


# Issue #10's bars. Counts are fixed-seed regressions of the rates measured
# by `python -m bench recovery` (docs/benchmarks.md), with the slack of the
# module docstring.

def test_tensor_stage_alone_at_d50():
    # refine=False, d=50, k=10, n=1e5: worst |cos| >= 0.9 in >= 18 of 20
    # (the bar). Measured 20/20 (lowest 0.909) on these seeds.
    hits = sum(worst_cos(model.A1, net.A1) >= 0.9
               for net, model in (fitted(100_000, 50, 10, seed, refine=False) for seed in range(20)))
    assert hits >= 18


@pytest.mark.parametrize("activation, make", [
    ("relu", {"activation": "relu", "bias_range": (0.3, 1.0)}),
    ("tanh", {"activation": "tanh"}),
])
def test_d50_exact_for_relu_and_tanh(activation, make):
    # Measured 20/20 for both at d=50, k=10, n=1e5 (the issue asks 19/20):
    # at most one failure in ten seeds.
    hits = sum(exact(*fitted(100_000, 50, 10, seed, make, activation=activation)) for seed in range(10))
    assert hits >= 9


def test_zero_bias_relu_exact_at_d20():
    # E[relu'''] = 0 at zero bias: the units come from the joint decomposition
    # of the second, third and fourth moments. Measured 20/20 at d=20, k=5,
    # n=1e5 (the issue asks 19/20).
    make = {"activation": "relu", "bias_range": (0.0, 0.0)}
    hits = sum(exact(*fitted(100_000, 20, 5, seed, make, activation="relu")) for seed in range(10))
    assert hits >= 9


def test_no_silent_failure_on_softplus():
    # Softplus at d=50 stays below the bar (18/20 measured); every failure
    # must come with a warning that says the network is a local optimum.
    # Seed 0 is one of the measured failures, so the check is exercised.
    for seed in range(6):
        net = make_planted_network(100_000, 50, 10, activation="softplus", random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit(net.X, net.y, 10, activation="softplus", random_state=seed)
        if not exact(net, model):
            assert any(issubclass(w.category, ConvergenceWarning) for w in caught), seed


def test_product_score_on_logistic_and_student_t_inputs():
    # Issue #12: independent logistic and Student-t(8) coordinates, d=20,
    # k=5, n=2e5, input_model="product". Measured over seeds 0-19 (bench
    # recovery, product-* scenarios): exact after refinement 20/20, tensor
    # stage alone worst |cos| >= 0.9 in 20/20 (min 0.998); the Gaussian
    # score's tensor stage 15/20 (min 0.03). Ten seeds, at most one miss.
    from fastten.scores import Logistic, StudentT
    make = {"input_density": [Logistic() if i % 2 == 0 else StudentT(8) for i in range(20)]}
    exact_count = tensor_count = 0
    for seed in range(10):
        net, model = fitted(200_000, 20, 5, seed, make, input_model="product")
        exact_count += exact(net, model)
        _, start = fitted(200_000, 20, 5, seed, make, input_model="product", refine=False)
        tensor_count += worst_cos(start.A1, net.A1) >= 0.9
    assert exact_count >= 9 and tensor_count >= 9, (exact_count, tensor_count)
