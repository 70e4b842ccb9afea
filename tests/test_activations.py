import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermeval
from scipy import integrate
from scipy.special import expit

from fastten.activations import (ACTIVATIONS, Activation, derivative, gaussian_expectation, get_activation,
                                 value_and_slope)

from . import reference as ref

SMOOTH = ref.ACTIVATIONS  # the activations tests/reference.py implements
RELU_CASES = [(0.0, 1.0), (0.3, 0.5), (-1.2, 2.0), (2.0, 0.7), (-0.4, 0.25)]


def _std_normal_pdf(g):
    return math.exp(-0.5 * g * g) / math.sqrt(2.0 * math.pi)


def _relu_stein(order, mean, sd):
    """E[relu^(order)(mean + sd g)] = sd^-order E[relu(mean + sd g) He_order(g)]
    (Stein's identity), by adaptive quadrature over g > -mean/sd, where relu
    is linear."""
    coef = np.zeros(order + 1)
    coef[order] = 1.0
    value, _ = integrate.quad(lambda g: (mean + sd * g) * hermeval(g, coef) * _std_normal_pdf(g),
                              -mean / sd, np.inf, epsabs=1e-13, epsrel=1e-12)
    return value / sd ** order


def _user_sigmoid(t, order):
    s = expit(t)
    ds = s * (1.0 - s)
    return (s, ds, ds * (1.0 - 2.0 * s), ds * (1.0 - 6.0 * s + 6.0 * s * s),
            ds * (1.0 - 2.0 * s) * (1.0 - 12.0 * s + 12.0 * s * s))[order]


def test_registry():
    assert sorted(ACTIVATIONS) == sorted(SMOOTH + ("relu",))
    assert all(isinstance(act, Activation) and act.name == name for name, act in ACTIVATIONS.items())


@pytest.mark.parametrize("activation", SMOOTH)
@pytest.mark.parametrize("order", range(5))
def test_derivatives_match_reference(activation, order):
    t = np.linspace(-8, 8, 161)
    np.testing.assert_allclose(derivative(activation, t, order),
                               ref.activation_derivative(t, activation, order), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", SMOOTH)
@pytest.mark.parametrize("order", range(1, 5))
def test_gaussian_expectations_match_reference(activation, order):
    mean = np.array([-1.0, 0.0, 0.3, 1.75])
    sd = np.array([1.0, 0.5, 1.0, 1.0])
    expected = ref.gaussian_expectation(lambda z: ref.activation_derivative(z, activation, order), mean, sd)
    # Both are 200-node Gauss-Hermite rules at sd <= 1, where the reference
    # measured them exact to 4e-13 (tanh) and 1e-16 (sigmoid, softplus).
    np.testing.assert_allclose(gaussian_expectation(activation, order, mean, sd), expected, atol=1e-12)


def test_unknown_activation_and_order():
    with pytest.raises(ValueError, match=r"activation: expected one of "
                                         r"\['relu', 'sigmoid', 'softplus', 'tanh'\], got 'gelu'"):
        derivative("gelu", 0.0)
    with pytest.raises(ValueError, match=r"order: expected an integer in \[0, 4\], got 5"):
        derivative("tanh", 0.0, 5)
    with pytest.raises(ValueError, match=r"order: expected an integer in \[0, 4\], got -1"):
        gaussian_expectation("relu", -1, 0.0, 1.0)


def test_sign_change_of_third_derivative_expectation():
    # DESIGN 3.2: for unit-norm weights E[sigma'''] changes sign near |b| = 1.75
    # (sigmoid) and 1.27 (tanh).
    for activation, root in [("sigmoid", 1.75), ("tanh", 1.27)]:
        below, above = gaussian_expectation(activation, 3, [root - 0.05, root + 0.05], [1.0, 1.0])
        assert below * above < 0


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_value_and_slope_match_derivatives(activation):
    t = np.linspace(-8, 8, 33)
    value, slope = value_and_slope(activation, t)
    np.testing.assert_allclose(value, derivative(activation, t, 0), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(slope, derivative(activation, t, 1), rtol=1e-12, atol=1e-300)


def test_zero_bias_moments_that_vanish():
    # The module docstring's table: exact zeros by symmetry at mean 0; the
    # 200-node rule is symmetric, so they vanish to rounding.
    sd = np.array([0.6, 1.0, 1.7])
    vanishing = {"sigmoid": (2, 4), "tanh": (0, 2, 4), "softplus": (3,), "relu": (3,)}
    for activation, orders in vanishing.items():
        for order in range(5):
            value = gaussian_expectation(activation, order, np.zeros(3), sd)
            if order in orders:
                np.testing.assert_allclose(value, 0.0, atol=1e-15)
            else:
                assert np.all(np.abs(value) > 1e-3), (activation, order)
    assert np.all(gaussian_expectation("relu", 3, np.zeros(3), sd) == 0.0)
    np.testing.assert_allclose(gaussian_expectation("relu", 4, np.zeros(3), sd),
                               -_std_normal_pdf(0.0) / sd ** 3, rtol=1e-15)


# ----------------------------------------------------------------------------
# ReLU
# ----------------------------------------------------------------------------

def test_relu_pointwise():
    t = np.array([-2.0, -0.0, 0.0, 1e-300, 3.5])
    np.testing.assert_array_equal(derivative("relu", t, 0), [0.0, 0.0, 0.0, 1e-300, 3.5])
    np.testing.assert_array_equal(derivative("relu", t, 1), [0.0, 0.0, 0.0, 1.0, 1.0])  # relu'(0) = 0
    value, slope = value_and_slope("relu", t)
    np.testing.assert_array_equal(value, np.maximum(t, 0.0))
    np.testing.assert_array_equal(slope, (t > 0).astype(float))


@pytest.mark.parametrize("order", range(2, 5))
def test_relu_higher_derivatives_are_distributions(order):
    with pytest.raises(ValueError, match=r"'relu'.*distributions.*gaussian_expectation"):
        derivative("relu", np.zeros(3), order)


@pytest.mark.parametrize("mean, sd", RELU_CASES)
def test_relu_expectations_orders_0_1_match_adaptive_quadrature(mean, sd):
    kink = -mean / sd
    pdf_tail = integrate.quad(_std_normal_pdf, kink, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
    first = integrate.quad(lambda g: (mean + sd * g) * _std_normal_pdf(g), kink, np.inf,
                           epsabs=1e-13, epsrel=1e-12)[0]
    # Closed forms against quad, asked for 1e-12 relative / 1e-13 absolute
    # accuracy (it reaches ~1e-16 on these smooth half-line integrands).
    assert gaussian_expectation("relu", 0, mean, sd) == pytest.approx(first, rel=1e-12, abs=1e-13)
    assert gaussian_expectation("relu", 1, mean, sd) == pytest.approx(pdf_tail, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize("order", range(5))
@pytest.mark.parametrize("mean, sd", RELU_CASES)
def test_relu_expectations_match_stein_identity(order, mean, sd):
    # quad is asked for 1e-12 relative / 1e-13 absolute on the integral; the
    # division by sd^order (up to 4^4 here) keeps the relative error, hence
    # rel=1e-11 with an absolute floor for the exact zero at mean = 0.
    expected = _relu_stein(order, mean, sd)
    assert gaussian_expectation("relu", order, mean, sd) == pytest.approx(expected, rel=1e-11, abs=1e-12)


def test_relu_expectations_elementwise_and_degenerate_sd():
    mean = np.array([[-1.0, 0.0], [0.5, 2.0]])
    sd = np.array([0.5, 1.5])
    for order in range(5):
        got = gaussian_expectation("relu", order, mean, sd)
        assert got.shape == (2, 2)
        np.testing.assert_allclose(got, [[gaussian_expectation("relu", order, m, s) for m, s in zip(row, sd)]
                                         for row in mean], rtol=1e-15)
    # A negative sd is the same distribution; sd = 0 is the pointwise limit.
    np.testing.assert_allclose(gaussian_expectation("relu", 4, 0.3, -0.8),
                               gaussian_expectation("relu", 4, 0.3, 0.8), rtol=1e-15)
    np.testing.assert_array_equal(gaussian_expectation("relu", 0, [-1.0, 0.0, 2.0], 0.0), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(gaussian_expectation("relu", 1, [-1.0, 0.0, 2.0], 0.0), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(gaussian_expectation("relu", 3, [-1.0, 0.0, 2.0], 0.0), [0.0, np.nan, 0.0])


# ----------------------------------------------------------------------------
# User-supplied activations
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("order", range(5))
def test_user_sigmoid_matches_builtin(order):
    user = Activation("my_sigmoid", _user_sigmoid)
    t = np.linspace(-6, 6, 25).reshape(5, 5)
    np.testing.assert_allclose(derivative(user, t, order), derivative("sigmoid", t, order), rtol=1e-12,
                               atol=1e-15)
    mean = np.array([-1.0, 0.0, 0.3, 1.75])
    sd = np.array([1.0, 0.5, 1.0, 2.0])
    # The same 200-node rule on the same function, up to rounding.
    np.testing.assert_allclose(gaussian_expectation(user, order, mean, sd),
                               gaussian_expectation("sigmoid", order, mean, sd), rtol=1e-12, atol=1e-15)
    value, slope = value_and_slope(user, t)
    np.testing.assert_allclose(value, derivative("sigmoid", t, 0), rtol=1e-15)
    np.testing.assert_allclose(slope, derivative("sigmoid", t, 1), rtol=1e-12)


def test_user_expectation_overrides_quadrature():
    relu = ACTIVATIONS["relu"]
    user = Activation("my_relu", relu.derivatives, expectation=relu.expectation, max_order=1)
    assert get_activation(user) is user
    for order in range(5):
        assert gaussian_expectation(user, order, 0.3, 0.5) == gaussian_expectation("relu", order, 0.3, 0.5)
    with pytest.raises(ValueError, match="'my_relu'.*distributions"):
        derivative(user, 0.0, 2)


def test_max_order_without_expectation():
    user = Activation("cubic_only", lambda t, order: _user_sigmoid(t, order), max_order=3)
    expected = gaussian_expectation("sigmoid", 3, 0.2, 1.0)
    assert gaussian_expectation(user, 3, 0.2, 1.0) == pytest.approx(expected, rel=1e-14)
    with pytest.raises(ValueError, match=r"'cubic_only' declares derivatives up to order 3 only"):
        gaussian_expectation(user, 4, 0.2, 1.0)


@pytest.mark.parametrize("wrong_order", range(1, 5))
def test_wrong_derivative_rejected(wrong_order):
    def wrong(t, order):
        return _user_sigmoid(t, order) * (1.01 if order == wrong_order else 1.0)

    with pytest.raises(ValueError, match=rf"activation 'bad_sigmoid': order {wrong_order} does not match "
                                         rf"a finite difference of order {wrong_order - 1}"):
        Activation("bad_sigmoid", wrong)


def test_malformed_user_activation_rejected():
    with pytest.raises(ValueError, match=r"'scalar'.*returned shape \(\) for input shape \(2, 3\)"):
        Activation("scalar", lambda t, order: 1.0)
    with pytest.raises(ValueError, match=r"'nan'.*non-finite"):
        Activation("nan", lambda t, order: np.full_like(t, np.nan))
    with pytest.raises(ValueError, match=r"'short'.*raised IndexError at order 3"):
        Activation("short", lambda t, order: _user_sigmoid(t, order) if order < 3 else [][0])
    with pytest.raises(ValueError, match=r"expectation: activation 'relu2'.*expected finite values of shape"):
        Activation("relu2", ACTIVATIONS["relu"].derivatives, max_order=1,
                   expectation=lambda order, mean, sd: 0.0)
    with pytest.raises(ValueError, match=r"max_order: expected an integer in \[1, 4\], got 0"):
        Activation("x", _user_sigmoid, max_order=0)
    with pytest.raises(TypeError, match=r"derivatives: expected a callable"):
        Activation("x", "sigmoid")
    with pytest.raises(TypeError, match=r"expectation: expected None or a callable"):
        Activation("x", _user_sigmoid, expectation=1.0)
    with pytest.raises(TypeError, match=r"name: expected a non-empty str"):
        Activation("", _user_sigmoid)


def test_get_activation():
    assert get_activation("tanh") is ACTIVATIONS["tanh"]
    with pytest.raises(ValueError, match=r"activation: expected one of \['relu', 'sigmoid', 'softplus', "
                                         r"'tanh'\], got 'gelu'"):
        get_activation("gelu")
    with pytest.raises(TypeError, match=r"activation: expected a name .* or a "
                                        r"fastten.activations.Activation, got function"):
        get_activation(_user_sigmoid)
    with pytest.raises(TypeError, match=r"got NoneType"):
        gaussian_expectation(None, 1, 0.0, 1.0)
