"""The empirical third moment of a planted network converges to the
population tensor sum_j lambda_j a_j^(x)3 (Stein's identity, computed by
Gauss-Hermite quadrature in the reference), with error shrinking like n^-1/2.
"""

import numpy as np
import pytest

import fastten.moments as M

from . import reference as ref

D, K_HIDDEN = 6, 3


@pytest.fixture(scope="module")
def planted():
    net = ref.planted_network(D, K_HIDDEN, np.random.default_rng(12345))
    population = ref.population_moment(net["A1"], net["b1"], net["a2"], "sigmoid", 3)
    # Predicted RMS error of the n-sample moment: sqrt(sum of the per-entry
    # variances of y S3(x) / n), the variances estimated on 2*10^5 fresh samples.
    rng = np.random.default_rng(999)
    eye = np.eye(D)
    total, total_sq, count = 0.0, 0.0, 0
    for _ in range(4):
        X = rng.standard_normal((50_000, D))
        y = ref.network_output(X, net)
        y = y - y.mean()
        S3 = (np.einsum("ia,ib,ic->iabc", X, X, X) - np.einsum("ia,bc->iabc", X, eye)
              - np.einsum("ib,ac->iabc", X, eye) - np.einsum("ic,ab->iabc", X, eye))
        terms = y[:, None, None, None] * S3
        total = total + terms.sum(axis=0)
        total_sq = total_sq + (terms ** 2).sum(axis=0)
        count += X.shape[0]
    variance = (total_sq / count - (total / count) ** 2).sum()
    return net, population, variance


def error_ratios(planted, seeds, sizes):
    """||M3_hat - M3||_F over its predicted RMS value, per seed and sample size."""
    net, population, variance = planted
    ratios = np.empty((len(seeds), len(sizes)))
    for s, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        for j, n in enumerate(sizes):
            X = rng.standard_normal((n, D))
            y = ref.network_output(X, net)
            estimate = M.third_moment_projected(X, y - y.mean(), np.eye(D))
            ratios[s, j] = np.linalg.norm(estimate - population) / np.sqrt(variance / n)
    return ratios


def check_convergence(ratios, sizes, band, slope_band, variance):
    # Each ratio is the norm of a 216-entry (correlated) sampling error over
    # its RMS: calibrated over seeds 0-19 it stays in [0.73, 1.25]; `band`
    # leaves a margin on both sides, so a bias (wrong population tensor,
    # wrong Hermite term) or a variance of the wrong order fails.
    assert ratios.min() >= band[0] and ratios.max() <= band[1], ratios
    errors = np.median(ratios, axis=0) * np.sqrt(variance / np.asarray(sizes))
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert slope_band[0] <= slope <= slope_band[1], slope


def test_third_moment_converges_to_population(planted):
    sizes = [2_000, 20_000, 200_000]
    ratios = error_ratios(planted, seeds=[0, 1, 2], sizes=sizes)
    # 3 seeds: the median error per n is within ~15% of its prediction, so
    # over two decades the fitted slope is -0.5 +- 0.07.
    check_convergence(ratios, sizes, band=(0.5, 1.8), slope_band=(-0.6, -0.4), variance=planted[2])


@pytest.mark.slow
def test_third_moment_converges_to_population_many_seeds(planted):
    sizes = [10_000, 100_000, 1_000_000]
    ratios = error_ratios(planted, seeds=range(20), sizes=sizes)
    # 20 seeds: the median is within ~5% of its prediction; slope -0.5 +- 0.04.
    check_convergence(ratios, sizes, band=(0.5, 1.8), slope_band=(-0.54, -0.46), variance=planted[2])
