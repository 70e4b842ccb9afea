"""Input checks at the public boundary.

Each check names the parameter, says what was expected and what was received.
Algorithms behind the boundary trust what passes here.
"""

import numbers

import numpy as np

from ._kernels.checks import nonfinite

FLOAT_DTYPES = (np.float32, np.float64)


def _as_real_array(value, name, *, boolean=False):
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: expected a real numeric array, could not convert it ({exc})") from None
    kind = arr.dtype.kind
    if boolean and kind == "b":
        return arr.astype(np.float64)
    if kind == "b" or kind not in "iuf":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    return arr


def _check_finite(arr, name):
    # Fast exact screen: a row holding NaN or inf has a non-finite sum, and a
    # finite row can only fail by overflow, which the exact scan clears.
    # One BLAS pass, O(n) memory; arr is C-contiguous here.
    with np.errstate(over="ignore", invalid="ignore"):
        sums = arr @ np.ones(arr.shape[1], dtype=arr.dtype) if arr.ndim == 2 else arr
    if np.isfinite(sums).all():
        return
    count, first = nonfinite(arr.reshape(-1))
    if count:
        raise ValueError(
            f"{name}: expected finite values, got {count} NaN or infinite "
            f"entr{'y' if count == 1 else 'ies'} (first at flat index {first})"
        )


def check_samples(X, name="X", *, boolean=False):
    """A finite 2-D (n_samples, n_features) float32 or float64 C-contiguous array.

    float32 input stays float32; any other real dtype becomes float64, and so
    do boolean features (0/1) when ``boolean`` is true.
    """
    arr = _as_real_array(X, name, boolean=boolean)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), "
            f"got {arr.ndim}-D with shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one sample and one feature, got shape {arr.shape}")
    dtype = arr.dtype if arr.dtype in FLOAT_DTYPES else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(arr, name)
    return arr


def check_labels(y, n_samples, dtype, name="y"):
    """A finite 1-D array of n_samples labels, in the samples' dtype."""
    arr = _as_real_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {n_samples} labels, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per row of X), got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(arr, name)
    return arr


def check_targets(y, n_samples, name="y"):
    """Finite float64 labels, (n_samples,) or (n_samples, m) with m >= 1.

    Returns the labels as an (n_samples, m) array and whether they were 1-D.
    """
    arr = _as_real_array(y, name)
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
        raise ValueError(f"{name}: expected an array of shape ({n_samples},) or ({n_samples}, m) with m >= 1, "
                         f"got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per row of X), got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    _check_finite(arr, name)
    return arr.reshape(n_samples, -1), arr.ndim == 1


def check_vectors(U, n_features, dtype, name):
    """A finite (n_features, m) block of column vectors, or one (n_features,) vector.

    Returns the 2-D block and whether the input was a single vector.
    """
    arr = _as_real_array(U, name)
    single = arr.ndim == 1
    if single:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_features or arr.shape[1] < 1:
        raise ValueError(
            f"{name}: expected a vector of length {n_features} or an array of shape "
            f"({n_features}, m) with m >= 1 (one column per vector), got shape {np.shape(U)}"
        )
    arr = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(arr, name)
    return arr, single


def check_int(value, name, low, high=None):
    """An integer in [low, high] (high=None: no upper bound)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an integer {expected}, got {value}")
    return value
