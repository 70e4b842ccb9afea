"""Activations with their derivatives, and their Gaussian expectations.

The moments of a planted network weigh each hidden unit by a Gaussian
expectation of a derivative of its activation: by Stein's identity
E[y S_m(x)] = sum_j a2_j E[sigma^(m)(a_j.x + b1_j)] a_j^(x)m, and
a_j.x ~ N(0, ``|a_j|^2``) for standard inputs. :func:`gaussian_expectation`
computes such one-dimensional integrals: by an 801-node trapezoid rule for
smooth activations, in closed form for ReLU.

An activation is an :class:`Activation`; the built-ins live in
``ACTIVATIONS`` (name -> Activation), and every function here accepts
either a built-in name or an Activation (:func:`get_activation`).

Moment weights that vanish at zero bias. With mean b = 0 the symmetry of
an activation makes some expectations E[sigma^(m)(s g)] exactly zero, so a
unit with zero bias is invisible in the moment of that order:

- sigmoid (sigma - 1/2 is odd): E[sigma''] = E[sigma''''] = 0;
- tanh (odd): E[sigma] = E[sigma''] = E[sigma''''] = 0;
- softplus (sigma' is the sigmoid): E[sigma'''] = 0;
- relu (relu(t) - t/2 = ``|t|/2`` is even): E[sigma'''] = 0, while
  E[sigma''''] = -phi(0) / s^3 is not zero.

So the third moment, which NN-LIFT decomposes, carries no zero-bias unit of
softplus or relu.
"""

import numpy as np
from scipy.special import expit, ndtr

__all__ = ["ACTIVATIONS", "Activation", "derivative", "gaussian_expectation", "get_activation",
           "value_and_slope"]

MAX_ORDER = 4

# Probe points for the construction-time check of a user activation: a 2-D
# array (the fit evaluates activations on matrices), irregular and clear of
# 0 and +-1, where piecewise activations usually have their kinks.
_PROBE_T = np.array([[-2.31, -0.87, -0.29], [0.37, 1.13, 2.69]])
_PROBE_MEAN = np.array([-0.8, 0.0, 0.45])
_PROBE_SD = np.array([0.7, 1.0, 1.3])
_FD_STEP = 1e-4  # central difference: truncation ~ h^2 |f'''| / 6, rounding ~ 1e-16 |f| / h
_FD_RTOL = 1e-4


class Activation:
    """An activation sigma with its derivatives, for the moment method.

    The construction evaluates ``derivatives`` at a few points and checks
    that the values are finite, have the input's shape, and that each order
    matches a central finite difference of the order below (relative 1e-4 of
    its scale over the points); ``expectation`` is checked for finite values
    of the right shape.

    Parameters
    ----------
    name : str
        The name reported in messages and stored with a network.
    derivatives : callable
        ``derivatives(t, order)`` returning sigma^(order) elementwise on a
        float64 array t, as an array of t's shape, for every order in
        0..max_order.
    expectation : callable, optional
        ``expectation(order, mean, sd)`` returning
        E[sigma^(order)(mean + sd g)], g ~ N(0, 1), elementwise
        over the float64 arrays mean and sd (broadcast), for every order in
        0..4. None: the 801-node trapezoid rule of ``gaussian_expectation``
        on ``derivatives``, which is accurate for activations analytic in a
        strip about the real axis and slow to converge at kinks.
    max_order : int, default 4
        The highest order (1 to 4) that ``derivatives`` supports pointwise.
        Above it only ``expectation`` can supply the Gaussian expectations
        (ReLU: max_order=1, its higher derivatives being distributions);
        without one, those orders raise ValueError.

    Raises
    ------
    TypeError
        When ``name`` is not a non-empty str, or ``derivatives`` or
        ``expectation`` is not callable.
    ValueError
        When ``max_order`` is not an integer in [1, 4], or a check of
        ``derivatives`` or ``expectation`` fails (naming the activation).
    """

    __slots__ = ("_name", "_derivatives", "_expectation", "_max_order")

    def __init__(self, name, derivatives, *, expectation=None, max_order=MAX_ORDER):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name: expected a non-empty str, got {name!r}")
        if not callable(derivatives):
            raise TypeError(f"derivatives: expected a callable derivatives(t, order), "
                            f"got {type(derivatives).__name__}")
        if expectation is not None and not callable(expectation):
            raise TypeError(f"expectation: expected None or a callable expectation(order, mean, sd), "
                            f"got {type(expectation).__name__}")
        if isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer)) \
                or not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order: expected an integer in [1, {MAX_ORDER}], got {max_order!r}")
        self._name = name
        self._derivatives = derivatives
        self._expectation = expectation
        self._max_order = int(max_order)
        _check_derivatives(self)
        if expectation is not None:
            _check_expectation(self)

    name = property(lambda self: self._name, doc="The activation's name.")
    derivatives = property(lambda self: self._derivatives, doc="derivatives(t, order), as given.")
    expectation = property(lambda self: self._expectation, doc="expectation(order, mean, sd), or None.")
    max_order = property(lambda self: self._max_order, doc="The highest pointwise derivative order.")

    def __repr__(self):
        return f"Activation({self._name!r})"


def _call_derivatives(act, t, order):
    try:
        value = act.derivatives(t.copy(), order)  # a copy: the probe points stay intact
    except Exception as exc:
        raise ValueError(f"derivatives: activation {act.name!r} raised {type(exc).__name__} "
                         f"at order {order}: {exc}") from exc
    value = np.asarray(value, dtype=np.float64)
    if value.shape != t.shape:
        raise ValueError(f"derivatives: activation {act.name!r} returned shape {value.shape} for input "
                         f"shape {t.shape} at order {order}; expected an elementwise array of the "
                         f"input's shape")
    if not np.isfinite(value).all():
        raise ValueError(f"derivatives: activation {act.name!r} returned non-finite values at order "
                         f"{order} for t = {t.ravel().tolist()}")
    return value


def _check_derivatives(act):
    t = _PROBE_T
    h = _FD_STEP * np.maximum(1.0, np.abs(t))
    below = _call_derivatives(act, t, 0)
    for order in range(1, act.max_order + 1):
        value = _call_derivatives(act, t, order)
        step = (_call_derivatives(act, t + h, order - 1) - _call_derivatives(act, t - h, order - 1)) / (2 * h)
        # relative to the order's scale over the probes, with a floor above
        # the difference's rounding for an order that vanishes identically
        scale = np.abs(value).max() + 1e-8 * (1.0 + np.abs(below).max())
        bad = np.abs(step - value) > _FD_RTOL * (np.abs(value) + scale)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise ValueError(
                f"derivatives: activation {act.name!r}: order {order} does not match a finite difference "
                f"of order {order - 1}: at t = {t.flat[i]:g} it returned {value.flat[i]:.6g}, the finite "
                f"difference gives {step.flat[i]:.6g}")
        below = value


def _check_expectation(act):
    for order in range(MAX_ORDER + 1):
        try:
            value = act.expectation(order, _PROBE_MEAN.copy(), _PROBE_SD.copy())
        except Exception as exc:
            raise ValueError(f"expectation: activation {act.name!r} raised {type(exc).__name__} "
                             f"at order {order}: {exc}") from exc
        value = np.asarray(value, dtype=np.float64)
        if value.shape != _PROBE_MEAN.shape or not np.isfinite(value).all():
            raise ValueError(f"expectation: activation {act.name!r} returned {value!r} at order {order} "
                             f"for mean {_PROBE_MEAN.tolist()} and sd {_PROBE_SD.tolist()}; expected "
                             f"finite values of shape {_PROBE_MEAN.shape}")


# ----------------------------------------------------------------------------
# Built-in activations
# ----------------------------------------------------------------------------

def _sigmoid(t, order):
    s = expit(t)
    if order == 0:
        return s
    ds = s * (1.0 - s)
    return (ds, ds * (1.0 - 2.0 * s), ds * (1.0 - 6.0 * ds),
            ds * (1.0 - 2.0 * s) * (1.0 - 12.0 * ds))[order - 1]


def _tanh(t, order):
    h = np.tanh(t)
    if order == 0:
        return h
    dh = 1.0 - h * h
    return (dh, -2.0 * h * dh, dh * (6.0 * h * h - 2.0),
            dh * (16.0 * h - 24.0 * h ** 3))[order - 1]


def _softplus(t, order):
    if order == 0:
        return np.logaddexp(0.0, t)
    return _sigmoid(t, order - 1)


def _relu(t, order):
    """relu(t) = max(t, 0) and its slope, 1 where t > 0 and 0 elsewhere
    (the convention relu'(0) = 0)."""
    if order == 0:
        return np.maximum(t, 0.0)
    return (t > 0.0).astype(np.float64)


def _relu_expectation(order, mean, sd):
    """E[relu^(order)(mean + sd g)] in closed form, u = mean / sd:

    order 0: mean Phi(u) + sd phi(u);  order 1: Phi(u);
    order m >= 2: relu'' is the Dirac delta, and differentiating
    E[delta(mean + sd g)] = phi(u) / sd in the mean m - 2 times gives
    (-1)^m He_{m-2}(u) phi(u) / sd^(m-1), with He the probabilists' Hermite
    polynomials (He_0 = 1, He_1 = u, He_2 = u^2 - 1).

    sd = 0 gives the pointwise limit: relu(mean) and the step (0 at mean = 0)
    for orders 0 and 1; for m >= 2, 0 off the kink and nan at mean = 0.
    """
    sd = np.abs(sd)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = mean / sd
        phi = np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)
        if order == 0:
            value = mean * ndtr(u) + sd * phi
            limit = np.maximum(mean, 0.0)
        elif order == 1:
            value = ndtr(u)
            limit = (mean > 0.0).astype(np.float64)
        else:
            hermite = (1.0, -u, u * u - 1.0)[order - 2]
            value = hermite * phi / sd ** (order - 1)
            limit = np.where(mean == 0.0, np.nan, 0.0)
    return np.where(sd > 0.0, value, limit)


#: The built-in activations by name: sigmoid, tanh, softplus and relu.
ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", _sigmoid),
    "tanh": Activation("tanh", _tanh),
    "softplus": Activation("softplus", _softplus),
    "relu": Activation("relu", _relu, expectation=_relu_expectation, max_order=1),
}


def _sigmoid_pair(t):
    s = expit(t)  # one exp per entry
    return s, s * (1.0 - s)


def _tanh_pair(t):
    h = np.tanh(t)
    return h, 1.0 - h * h


def _relu_pair(t):
    return np.maximum(t, 0.0), (t > 0.0).astype(np.float64)


# Keyed by the built-in objects themselves: a user Activation that reuses a
# built-in name takes the generic path.
_PAIRS = {ACTIVATIONS["sigmoid"]: _sigmoid_pair, ACTIVATIONS["tanh"]: _tanh_pair,
          ACTIVATIONS["relu"]: _relu_pair}


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------

def get_activation(spec):
    """The Activation for a built-in name, or spec itself if it is one.

    Parameters
    ----------
    spec : str or Activation
        A name in ``ACTIVATIONS`` or an Activation.

    Returns
    -------
    Activation
        The built-in activation of that name, or ``spec``.

    Raises
    ------
    ValueError
        When ``spec`` is a str that names no built-in activation.
    TypeError
        When ``spec`` is neither a str nor an Activation.
    """
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        try:
            return ACTIVATIONS[spec]
        except KeyError:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {spec!r}") from None
    raise TypeError(f"activation: expected a name (one of {sorted(ACTIVATIONS)}) or a "
                    f"fastten.activations.Activation, got {type(spec).__name__}")


def _check_order(order, top=MAX_ORDER):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= top:
        raise ValueError(f"order: expected an integer in [0, {top}], got {order!r}")


def derivative(activation, t, order=0):
    """The order-th derivative of an activation at t, elementwise.

    ReLU has pointwise derivatives of orders 0 and 1 only (relu'(0) = 0);
    its orders 2-4 are distributions, whose Gaussian expectations
    :func:`gaussian_expectation` gives.

    Parameters
    ----------
    activation : str or Activation
        A built-in name or an Activation.
    t : array_like
        The points, converted to float64.
    order : int, default 0
        The derivative's order, 0 to 4.

    Returns
    -------
    numpy.ndarray
        sigma^(order)(t), float64, of t's shape.

    Raises
    ------
    ValueError
        When ``order`` is not an integer in [0, 4] or exceeds the
        activation's pointwise orders (``max_order``), or as
        :func:`get_activation`.
    TypeError
        As :func:`get_activation`.
    """
    act = get_activation(activation)
    _check_order(order)
    if order > act.max_order and act.expectation is not None:
        raise ValueError(
            f"order: activation {act.name!r} has pointwise derivatives up to order {act.max_order} only, "
            f"got {order}; its higher derivatives are distributions (relu's: the Dirac delta and its "
            f"derivatives), of which only Gaussian expectations exist: use gaussian_expectation")
    if order > act.max_order:
        raise ValueError(f"order: activation {act.name!r} declares derivatives up to order "
                         f"{act.max_order} only (max_order), got {order}")
    return np.asarray(act.derivatives(np.asarray(t, dtype=np.float64), order), dtype=np.float64)


def value_and_slope(activation, t):
    """The activation and its slope at t, sharing the work for the built-ins.

    The refinement's forward pass: one exp per entry for sigmoid, one tanh
    for tanh; relu gives (max(t, 0), t > 0).

    Parameters
    ----------
    activation : str or Activation
        A built-in name or an Activation.
    t : array_like
        The points, converted to float64.

    Returns
    -------
    value : numpy.ndarray
        sigma(t), of t's shape.
    slope : numpy.ndarray
        sigma'(t), of t's shape.

    Raises
    ------
    ValueError, TypeError
        As :func:`get_activation`.
    """
    act = get_activation(activation)
    t = np.asarray(t, dtype=np.float64)
    pair = _PAIRS.get(act)
    if pair is not None:
        return pair(t)
    return derivative(act, t, 0), derivative(act, t, 1)


# The trapezoid rule on [-10, 10] with step 1/40 (801 nodes) for the
# standard normal density: for integrands analytic in a strip it converges
# geometrically, and unlike Gauss-Hermite (whose nodes crowd the centre) it
# stays accurate for wide Gaussians. Measured against adaptive quadrature,
# orders 0-4, means -1, 0.3, 2: 200-node Gauss-Hermite erred by 2e-5 (tanh,
# sd = 2), 1.8e-3 (tanh, sd = 3), 0.14 (tanh, sd = 5), 1.3e-3 (sigmoid,
# sd = 8); this rule by at most 6e-14 for sigmoid, tanh and softplus at
# sd = 1 ... 8 (the truncation at 10 costs exp(-50)).
QUADRATURE_STEP = 0.025
QUADRATURE_NODES = np.arange(-10.0, 10.0 + QUADRATURE_STEP / 2, QUADRATURE_STEP)
QUADRATURE_WEIGHTS = QUADRATURE_STEP * np.exp(-0.5 * QUADRATURE_NODES ** 2) / np.sqrt(2.0 * np.pi)


def gaussian_expectation(activation, order, mean, sd):
    """The Gaussian expectation E[sigma^(order)(mean + sd g)], g ~ N(0, 1).

    relu: closed form, exact up to rounding. An Activation with an
    ``expectation`` uses it. Otherwise an 801-node trapezoid rule on
    [-10, 10]: sigmoid, tanh and softplus to 6e-14 for sd up to 8, orders
    0-4; slower to converge at kinks.

    Parameters
    ----------
    activation : str or Activation
        A built-in name or an Activation.
    order : int
        The derivative's order, 0 to 4.
    mean : array_like
        Means of the Gaussian argument.
    sd : array_like
        Standard deviations, broadcast against ``mean``.

    Returns
    -------
    numpy.ndarray
        The expectations, float64, of the broadcast shape of mean and sd.

    Raises
    ------
    ValueError
        When ``order`` is not an integer in [0, 4], or as
        :func:`get_activation`.
    TypeError
        As :func:`get_activation`.
    """
    act = get_activation(activation)
    _check_order(order)
    if act.expectation is not None:
        mean = np.asarray(mean, dtype=np.float64)
        sd = np.asarray(sd, dtype=np.float64)
        return np.asarray(act.expectation(order, mean, sd), dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)[..., None]
    sd = np.asarray(sd, dtype=np.float64)[..., None]
    return derivative(act, mean + sd * QUADRATURE_NODES, order) @ QUADRATURE_WEIGHTS
