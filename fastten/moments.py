"""Cross-moments of labels and Gaussian score functions, by implicit contraction.

For standardised inputs x ~ N(0, I) and labels y, the order-m cross-moment is

    M_m = (1/n) sum_i y_i S_m(x_i),

with S_m the Hermite tensors (S1 = x, S2 = xx^T - I, S3, S4; see
``docs/method.md``). By Stein's identity its expectation for a planted network
is sum_j lambda_j a_j^(x)m. None of the functions here forms M_3 or M_4: each
returns a contraction of it, at a cost of one or two matrix products with X.
Labels are used as given; centring y (which lowers the variance and leaves the
population moments of order >= 1 unchanged) is the caller's choice.

Results have the dtype of X (float32 or float64); sums are accumulated in
float64 across blocks of rows. For streaming, feed row blocks to the
accumulators of :mod:`fastten.accumulate`.

Every function checks its arguments: ``X`` a finite real (n, d) array
(float32 stays float32, other real dtypes become float64), ``y`` finite with
n entries, the vectors finite with d rows. A bad argument raises ValueError
or TypeError naming it, what was expected and what was received.
"""

import functools
import math
from itertools import combinations_with_replacement, permutations

import numpy as np

from . import _kernels as K
from ._validation import check_labels, check_samples, check_vectors

__all__ = [
    "first_moment",
    "second_moment_dot",
    "third_moment_iuu",
    "third_moment_uuu",
    "third_moment_slice_dot",
    "third_moment_projected",
    "fourth_moment_iuuu",
    "fourth_moment_projected",
    "unpack_symmetric",
]


def _data(X, y):
    X = check_samples(X)
    return X, check_labels(y, X.shape[0], X.dtype)


def _finish(out, n, dtype, single=False):
    out /= n
    out = out.astype(dtype, copy=False)
    return out[..., 0] if single else out


def first_moment(X, y):
    """The first cross-moment M_1 = (1/n) sum_i y_i x_i.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.

    Returns
    -------
    numpy.ndarray, shape (d,)
        M_1, in the dtype of X.

    Raises
    ------
    ValueError, TypeError
        When X or y is not a finite real array of the expected shape.
    """
    X, y = _data(X, y)
    out = np.zeros(X.shape[1])
    K.first_acc(X, y, out)
    return _finish(out, X.shape[0], X.dtype)


def second_moment_dot(X, y, Omega):
    """The second cross-moment times a matrix, M_2 Omega.

    M_2 Omega = (1/n) sum_i y_i (x_i x_i^T - I) Omega, without forming the
    d x d matrix M_2.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    Omega : array_like, shape (d, m) or (d,)
        The vectors to multiply, one per column, or one vector.

    Returns
    -------
    numpy.ndarray, shape (d, m) or (d,)
        M_2 Omega in the dtype of X; a vector for one vector Omega.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    X, y = _data(X, y)
    Omega, single = check_vectors(Omega, X.shape[1], X.dtype, "Omega")
    out = np.zeros(Omega.shape)
    K.s2_dot_acc(X, y, Omega, out)
    return _finish(out, X.shape[0], X.dtype, single)


def third_moment_iuu(X, y, U):
    """The third cross-moment contracted twice, M_3(I, u_j, u_j), per column.

    This is the step of the tensor power method, for a batch of m vectors at
    the cost of two products with X.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    U : array_like, shape (d, m) or (d,)
        The vectors u_j, one per column, or one vector.

    Returns
    -------
    numpy.ndarray, shape (d, m) or (d,)
        Column j is M_3(I, u_j, u_j), in the dtype of X; a vector for one
        vector U.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    X, y = _data(X, y)
    U, single = check_vectors(U, X.shape[1], X.dtype, "U")
    out = np.zeros(U.shape)
    K.t3_iuu_acc(X, y, U, out)
    return _finish(out, X.shape[0], X.dtype, single)


def third_moment_uuu(X, y, U):
    """The third cross-moment contracted three times, M_3(u_j, u_j, u_j).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    U : array_like, shape (d, m) or (d,)
        The vectors u_j, one per column, or one vector.

    Returns
    -------
    numpy.ndarray, shape (m,), or a scalar
        M_3(u_j, u_j, u_j) per column, in the dtype of X; a scalar for one
        vector U.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    X, y = _data(X, y)
    U, single = check_vectors(U, X.shape[1], X.dtype, "U")
    out = np.zeros(U.shape[1])
    K.t3_uuu_acc(X, y, U, out)
    out = _finish(out, X.shape[0], X.dtype)
    return out[0] if single else out


def third_moment_slice_dot(X, y, theta, Omega):
    """A slice of the third cross-moment times a matrix, M_3(I, I, theta) Omega.

    The slice of M_3 along theta is a d x d matrix; it is never formed.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    theta : array_like, shape (d,) or (d, 1)
        The direction of the slice.
    Omega : array_like, shape (d, m) or (d,)
        The vectors to multiply, one per column, or one vector.

    Returns
    -------
    numpy.ndarray, shape (d, m) or (d,)
        M_3(I, I, theta) Omega in the dtype of X; a vector for one vector
        Omega.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape,
        or theta holds more than one vector.
    """
    X, y = _data(X, y)
    theta, _ = check_vectors(theta, X.shape[1], X.dtype, "theta")
    if theta.shape[1] != 1:
        raise ValueError(f"theta: expected one vector of length {X.shape[1]}, got shape {theta.shape}")
    Omega, single = check_vectors(Omega, X.shape[1], X.dtype, "Omega")
    out = np.zeros(Omega.shape)
    K.t3_slice_dot_acc(X, y, np.ascontiguousarray(theta[:, 0]), Omega, out)
    return _finish(out, X.shape[0], X.dtype, single)


def fourth_moment_iuuu(X, y, U):
    """The fourth cross-moment contracted three times, M_4(I, u_j, u_j, u_j).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    U : array_like, shape (d, m) or (d,)
        The vectors u_j, one per column, or one vector.

    Returns
    -------
    numpy.ndarray, shape (d, m) or (d,)
        Column j is M_4(I, u_j, u_j, u_j), in the dtype of X; a vector for
        one vector U.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    X, y = _data(X, y)
    U, single = check_vectors(U, X.shape[1], X.dtype, "U")
    out = np.zeros(U.shape)
    K.t4_iuuu_acc(X, y, U, out)
    return _finish(out, X.shape[0], X.dtype, single)


@functools.lru_cache(maxsize=16)
def _plan(k, order):
    plan = K.packed_plan(k, order)
    for table in plan:
        table.flags.writeable = False  # shared between calls
    return plan


@functools.lru_cache(maxsize=16)
def _unpack_index(k, order):
    index = np.array(list(combinations_with_replacement(range(k), order)), dtype=np.intp)
    index.flags.writeable = False  # shared between calls
    return index


def unpack_symmetric(packed, k, order):
    """The dense symmetric array from its packed form.

    Parameters
    ----------
    packed : numpy.ndarray, shape (comb(k + order - 1, order),)
        The entries with sorted indices, in lexicographic order (as the
        projected moments use).
    k : int
        The length of each axis.
    order : int
        The number of axes.

    Returns
    -------
    numpy.ndarray, shape (k,) * order
        The symmetric array, in the dtype of ``packed``.

    Raises
    ------
    ValueError
        When ``packed`` does not have comb(k + order - 1, order) entries.
    """
    idx = _unpack_index(k, order)
    if packed.shape != (idx.shape[0],):
        raise ValueError(
            f"packed: expected {idx.shape[0]} entries for k={k}, order={order}, got shape {packed.shape}"
        )
    full = np.empty((k,) * order, dtype=packed.dtype)
    for perm in set(permutations(range(order))):
        full[tuple(idx[:, p] for p in perm)] = packed
    return full


def _projected_data(X, y, W):
    X, y = _data(X, y)
    W, _ = check_vectors(W, X.shape[1], X.dtype, "W")
    return X, y, W


def third_moment_projected(X, y, W):
    """The third cross-moment projected on W, R = M_3(W, W, W).

    R = (1/n) sum_i y_i [z_i^(x)3 - sym(z_i (x) G)] with z_i = W^T x_i and
    G = W^T W: one product X W, then a packed symmetric power sum over Z
    (k(k+1)(k+2)/6 entries) and a rank-one Hermite correction. R is exactly
    symmetric: each unordered index triple is computed once.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    W : array_like, shape (d, k)
        The projection, one direction per column.

    Returns
    -------
    numpy.ndarray, shape (k, k, k)
        R, exactly symmetric, in the dtype of X.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    return projected3(*_projected_data(X, y, W))


def projected3(X, y, W):
    """third_moment_projected for checked inputs (W in X's dtype): one
    block through ``fastten.accumulate.ProjectedMoment``."""
    from .accumulate import ProjectedMoment  # accumulate builds on this module

    return ProjectedMoment(W, 3, check=False)._add(X, y).result().astype(X.dtype, copy=False)


def fourth_moment_projected(X, y, W):
    """The fourth cross-moment projected on W, R4 = M_4(W, W, W, W).

    R4 = (1/n) sum_i y_i [z^(x)4 - sym6(z z^T (x) G) + sym3(G (x) G)], exactly
    symmetric like :func:`third_moment_projected`.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples, one per row.
    y : array_like, shape (n,)
        Labels.
    W : array_like, shape (d, k)
        The projection, one direction per column.

    Returns
    -------
    numpy.ndarray, shape (k, k, k, k)
        R4, exactly symmetric, in the dtype of X.

    Raises
    ------
    ValueError, TypeError
        When an argument is not a finite real array of the expected shape.
    """
    from .accumulate import ProjectedMoment

    X, y, W = _projected_data(X, y, W)
    return ProjectedMoment(W, 4, check=False)._add(X, y).result().astype(X.dtype, copy=False)
