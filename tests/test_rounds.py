"""The restarts between refinement rounds (fastten/_rounds.py): collapsed
and duplicated units, and what a restart does with them (issue #11)."""

import numpy as np

from fastten._rounds import collapsed_units, degenerate_units, duplicate_units, restart
from fastten.activations import derivative, get_activation
from fastten.datasets import make_planted_network


def test_collapsed_units_are_those_far_below_the_median_spread():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((1000, 5)) * np.array([1.0, 0.05, 1.2, 0.01, 0.9])
    # Spreads 1, 0.05, 1.2, 0.01, 0.9 against the median 0.9: units 3 and 1
    # lie below 0.2 * 0.9, most collapsed first.
    assert collapsed_units(S) == [3, 1]
    assert collapsed_units(np.ones((10, 3))) == []  # no spread at all: nothing stands out


def test_duplicate_units_names_the_less_useful_of_each_close_pair():
    rng = np.random.default_rng(0)
    A1 = rng.standard_normal((50, 4))
    A1[:, 2] = -3.0 * A1[:, 0] + 0.01 * rng.standard_normal(50)  # |cos| ~ 1: the sign does not matter
    assert duplicate_units(A1, np.array([1.0, 1.0, 0.5, 1.0])) == [2]
    assert duplicate_units(A1, np.array([0.2, 1.0, 0.5, 1.0])) == [0]
    assert duplicate_units(A1[:, [0, 1, 3]], np.ones(3)) == []


def test_restart_rescales_a_collapsed_unit_along_its_own_direction():
    net = make_planted_network(4000, 10, 3, random_state=0)
    sigmoid = get_activation("sigmoid")
    A1, b1 = net.A1.copy(), net.b1.copy()
    # Unit 0 deep in its tail: weights 0.05 of the others', bias 4.
    A1[:, 0] *= 0.05
    b1[0] = 4.0
    S = derivative(sigmoid, net.X @ A1 + b1, 0)
    F = np.column_stack([S, np.ones(len(S))])
    coef = np.linalg.lstsq(F, net.y, rcond=None)[0]
    A2, b2 = coef[:3, None], coef[3:]
    assert degenerate_units(net.X, A1, b1, A2, sigmoid)[0] == [0]
    new_A1, new_b1, *_ = restart(net.X, net.y[:, None], A1, b1, A2, b2, sigmoid, 1e-8, 0,
                                 np.random.default_rng(0))
    # The planted weights have norm 1: the median of the other units' norms.
    np.testing.assert_allclose(new_A1[:, 0], net.A1[:, 0], rtol=1e-12)
    assert new_b1[0] == 0.0
    np.testing.assert_array_equal(new_A1[:, 1:], A1[:, 1:])
    np.testing.assert_array_equal(new_b1[1:], b1[1:])
