import numpy as np
import pytest

from fastten.activations import ACTIVATIONS, derivative, gaussian_expectation

from . import reference as ref


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("order", range(5))
def test_derivatives_match_reference(activation, order):
    t = np.linspace(-8, 8, 161)
    np.testing.assert_allclose(derivative(activation, t, order),
                               ref.activation_derivative(t, activation, order), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("order", range(1, 5))
def test_gaussian_expectations_match_reference(activation, order):
    mean = np.array([-1.0, 0.0, 0.3, 1.75])
    sd = np.array([1.0, 0.5, 1.0, 1.0])
    expected = ref.gaussian_expectation(lambda z: ref.activation_derivative(z, activation, order), mean, sd)
    # Both are 200-node Gauss-Hermite rules at sd <= 1, where the reference
    # measured them exact to 4e-13 (tanh) and 1e-16 (sigmoid, softplus).
    np.testing.assert_allclose(gaussian_expectation(activation, order, mean, sd), expected, atol=1e-12)


def test_unknown_activation_and_order():
    with pytest.raises(ValueError, match=r"activation: expected one of \['sigmoid', 'softplus', 'tanh'\], got 'gelu'"):
        derivative("gelu", 0.0)
    with pytest.raises(ValueError, match=r"order: expected an integer in \[0, 4\], got 5"):
        derivative("tanh", 0.0, 5)


def test_sign_change_of_third_derivative_expectation():
    # DESIGN 3.2: for unit-norm weights E[sigma'''] changes sign near |b| = 1.75
    # (sigmoid) and 1.27 (tanh).
    for activation, root in [("sigmoid", 1.75), ("tanh", 1.27)]:
        below, above = gaussian_expectation(activation, 3, [root - 0.05, root + 0.05], [1.0, 1.0])
        assert below * above < 0


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_value_and_slope_match_derivatives(activation):
    from fastten.activations import value_and_slope

    t = np.linspace(-8, 8, 33)
    value, slope = value_and_slope(activation, t)
    np.testing.assert_allclose(value, derivative(activation, t, 0), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(slope, derivative(activation, t, 1), rtol=1e-12, atol=1e-300)
