"""The whole moment pipeline on EXACT population moments: tensor stage, then
scales, signs and biases.

T = sum_j lambda_j u_j^(x)3 with a_j = s_j u_j and
lambda_j = a2_j s_j^3 E[sigma'''(|s_j| g + b_j)] (adaptive quadrature, see
test_bias.exact_expectation), decomposed by fastten.decompose on a
DenseTensor; then the exact first three moments, expressed in the recovered
directions, are inverted by scales_biases_from_moments.

Identifiable region, and why:
* |s| in [0.5, 3], |b| <= 1.5, |a2| in [0.5, 1.5] (test_bias: no degenerate
  point there for the inversion);
* |lambda_j| >= 0.05 max |lambda|: a component's accuracy in a decomposition
  degrades like (max |lambda| / |lambda_j|); a unit with lambda_j = 0 (e.g.
  softplus at b = 0, or sigmoid where E[sigma'''] changes sign) is absent
  from T and cannot be found in it at all;
* max |cos(a_i, a_j)| <= 0.9 and cond(A1) <= 10: Jennrich's algorithm
  separates components through the eigenvalues of T(I, I, theta_1)
  T(I, I, theta_2)^+, whose gaps and eigenvector conditioning are governed
  by the coherence and the conditioning of A1 (a pair with |cos| -> 1 makes
  the eigenproblem defective).
"""

import numpy as np
from hypothesis import assume, given, strategies as st
from scipy.optimize import linear_sum_assignment

import fastten
from fastten import _bias
from fastten.operators import DenseTensor

from .test_bias import ACTS, _outer_power, canonical, exact_expectation


def _coefficients_in_basis(moments, V):
    """Least squares of dense moments M_m on v_j^(x)m (an independent dense solve)."""
    return tuple(np.linalg.lstsq(np.stack([_outer_power(V[:, j], m).ravel() for j in range(V.shape[1])], axis=1),
                                 M.ravel(), rcond=None)[0]
                 for m, M in zip((1, 2, 3), moments))


@st.composite
def networks(draw):
    d = draw(st.integers(3, 8))
    k = draw(st.integers(1, d))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((d, k))
    U /= np.linalg.norm(U, axis=0)
    s = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 3.0, k)
    b = rng.uniform(-1.5, 1.5, k)
    a2 = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    return draw(st.sampled_from(ACTS)), U, s, b, a2, seed


@given(networks())
def test_exact_moments_recover_every_identifiable_network(net):
    activation, U, s, b, a2, seed = net
    cosines = np.abs(U.T @ U - np.eye(U.shape[1]))
    assume(cosines.max(initial=0.0) <= 0.9 and np.linalg.cond(U) <= 10.0)
    e = np.array([[exact_expectation(activation, m, sj, bj) for sj, bj in zip(s, b)] for m in (1, 2, 3)])
    weights = [a2 * s ** m * e[m - 1] for m in (1, 2, 3)]          # coefficient of u_j^(x)m
    assume(np.abs(weights[2]).min() >= 0.05 * np.abs(weights[2]).max())
    moments = [np.einsum("j," + ",".join("abc"[i] + "j" for i in range(m)) + "->" + "abc"[:m], weights[m - 1],
                         *([U] * m)) for m in (1, 2, 3)]

    found = fastten.decompose(DenseTensor(moments[2]), U.shape[1], random_state=seed)
    V = found.factors
    rows, cols = linear_sum_assignment(-np.abs(U.T @ V))
    V = V[:, cols]
    signs = np.sign(np.einsum("aj,aj->j", U, V))
    # directions to 1e-8, up to sign; weights with the sign carried by v
    np.testing.assert_allclose(V * signs, U, rtol=0, atol=1e-8)
    np.testing.assert_allclose(found.weights[cols] * signs, weights[2], rtol=0,
                               atol=1e-8 * np.abs(weights[2]).max())

    fit = _bias.scales_biases_from_moments(*_coefficients_in_basis(moments, V), activation)
    assert fit.identifiable.all(), fit.reasons
    s_true, b_true, a2_true = canonical(s * signs, b, a2, activation)      # s along v_j = sign_j u_j
    A1_true = U * s
    A1_hat = V * fit.s
    A1_canon = A1_true * np.where(np.sign(fit.s) == np.sign(s * signs), 1.0, -1.0)
    np.testing.assert_allclose(A1_hat, A1_canon, rtol=0, atol=1e-8 * np.abs(A1_true).max())
    np.testing.assert_allclose(fit.s, s_true, rtol=1e-8)
    assert np.all(np.abs(fit.b1 - b_true) <= 1e-8 * np.maximum(1.0, np.abs(b_true)))
    np.testing.assert_allclose(fit.a2, a2_true, rtol=1e-8)
