"""Accumulators: every data pass of the fit as a sum over blocks of rows.

Each statistic the fit takes from the data is a sum over samples, so each
pass is an accumulator fed one block of rows at a time::

    acc = Covariance(labels=True)
    for X_block, y_block in blocks:          # any split of the rows
        acc.update(X_block, y_block)
    stats = acc.result()

``update(X_block, y_block)`` adds a block, ``merge(other)`` adds another
accumulator of the same kind and configuration fed with other rows (in place;
both return the accumulator, so ``functools.reduce(lambda a, b: a.merge(b),
parts)`` is a reduction), and ``result()`` gives the statistic of all the rows
seen. The results do not depend on how the rows were split or in which order
parts were merged, up to rounding: centred statistics are merged by Chan's
pairwise update, never as raw power sums, and every sum is kept in float64.

Accumulators check each block they are given in ``update`` (width, dtype,
finiteness, label count), naming the block by its index; a block of another
width or floating dtype than the first is refused. ``Pass`` feeds a stream of
blocks to several accumulators at once, one read per block, and counts the
passes (``PassCounter``): the one place the fit counts them.

Accumulators here (the moments are those of the Gaussian score functions
S_m, for standardised rows):

- ``Covariance``: mean and covariance of the rows (and of labels, and the
  labels' cross-covariance with the rows): the standardisation and the
  control variate's regression.
- ``LeastSquares``: least squares of labels on [1, x] (centred normal
  equations).
- ``FirstMoment``: (1/n) sum_i y_i x_i.
- ``SecondMomentDot``: E[y S2] Omega.
- ``ThirdMomentIUU``: E[y S3](I, u_j, u_j).
- ``ThirdMomentUUU``: E[y S3](u_j, u_j, u_j).
- ``ThirdMomentSliceDot``: E[y S3](I, I, theta) Omega.
- ``FourthMomentIUUU``: E[y S4](I, u_j, u_j, u_j).
- ``ProjectedMoment``: E[y S_m](W, ..., W) for m = 3 or 4, dense (k,)*m.
- ``ScoreSpread``: mean and standard deviation over the samples of
  y S_m(x)(u_j, ..., u_j), m = 2 or 3 (the z-tests and noise estimates).
- ``NormalEquations``: ridge regression of labels on [features, 1].
- ``OutputLayer``: the same for the features sigma(X A1 + b1) of a network.
- ``NetworkLoss``, ``NetworkGradient``, ``GaussNewtonProduct``: a network's
  squared loss (with its output layer's normal equations), its gradient and
  its Gauss-Newton products: the refinement's passes over rows out of core.
"""

import math

import numpy as np

from . import _kernels as K
from ._kernels.network import gn_block, gn_product_acc, gn_softmax_product_acc
from ._kernels.checks import nonfinite
from .activations import derivative, get_activation, value_and_slope
from .moments import _plan, _unpack_index, unpack_symmetric

__all__ = [
    "Accumulator", "Covariance", "CovarianceResult", "LeastSquares", "FirstMoment", "SecondMomentDot",
    "ThirdMomentIUU", "ThirdMomentUUU", "ThirdMomentSliceDot", "FourthMomentIUUU", "ProjectedMoment",
    "ScoreSpread", "Spread", "NormalEquations", "OutputLayer", "NetworkLoss", "NetworkGradient", "GradientResult",
    "GaussNewtonProduct", "PassCounter", "Pass", "check_block",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _finite(arr, what):
    if arr.size and not np.isfinite(arr).all():
        count, first = nonfinite(np.ascontiguousarray(arr).reshape(-1))
        row = first // (arr.shape[1] if arr.ndim == 2 else 1)
        raise ValueError(f"{what}: expected finite values, got {count} NaN or infinite "
                         f"entr{'y' if count == 1 else 'ies'} (first in row {row} of the block)")


def check_block(X, y, index, *, width=None, dtype=None, labels="optional", label_width=None):
    """Check one block of rows and its labels, as every accumulator does.

    Parameters
    ----------
    X : array_like, shape (rows, d)
        The block's samples: a real (not boolean) numeric array, finite.
    y : array_like, shape (rows,) or (rows, m), or None
        The block's labels, finite, one per row; None for no labels.
    index : int
        The block's index in its stream; errors name the block by it.
    width : int, optional
        The number of columns X must have (the width of the first block);
        any width when None.
    dtype : numpy.dtype, optional
        The floating dtype X must have (float32 or float64: the dtype of
        the first block). When None, float32 and float64 stay as they are
        and other real dtypes become float64.
    labels : {"optional", "required", "none", "vector"}, default "optional"
        Whether labels may be given, must be given, must not be given, or
        must be given as a 1-D array.
    label_width : int, optional
        The number of label columns y must have (1 for a 1-D y) when given.

    Returns
    -------
    X : numpy.ndarray, shape (rows, d)
        The samples, C-contiguous float32 or float64.
    y : numpy.ndarray or None
        The labels, C-contiguous: in the dtype of X for ``labels="vector"``,
        float64 otherwise; None when no labels were given.

    Raises
    ------
    TypeError
        When X or y is not a real numeric array, or X has another dtype than
        ``dtype``.
    ValueError
        When X is not 2-D or not ``width`` wide, y has not one entry per row
        or not ``label_width`` columns, labels are missing or not allowed,
        or X or y holds NaN or infinite values (the message gives their count
        and the first row, within the block).
    """
    what = f"block {index}"
    arr = np.asarray(X)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise TypeError(f"{what}: expected a real numeric array of samples, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows, features), got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{what}: expected {width} features (the width of the first block), got {arr.shape[1]}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{what}: expected dtype {np.dtype(dtype)} (the dtype of the first block), got {arr.dtype}")
    if arr.dtype not in _FLOATS:
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    _finite(arr, what)
    if y is None:
        if labels in ("required", "vector"):
            raise ValueError(f"{what}: expected labels with the samples, got none")
        return arr, None
    if labels == "none":
        raise ValueError(f"{what}: this accumulator takes no labels, got an array of shape {np.shape(y)}")
    lab = np.asarray(y)
    if lab.dtype.kind not in "iuf" or lab.dtype.kind == "b":
        raise TypeError(f"{what}: expected real numeric labels, got dtype {lab.dtype}")
    ndims = (1,) if labels == "vector" else (1, 2)
    if lab.ndim not in ndims or lab.shape[0] != arr.shape[0]:
        expected = f"({arr.shape[0]},)" if labels == "vector" else f"({arr.shape[0]},) or ({arr.shape[0]}, m)"
        raise ValueError(f"{what}: expected labels of shape {expected}, one per row, got shape {lab.shape}")
    if label_width is not None and (1 if lab.ndim == 1 else lab.shape[1]) != label_width:
        raise ValueError(f"{what}: expected {label_width} label column(s) (as the first block), got "
                         f"{1 if lab.ndim == 1 else lab.shape[1]}")
    lab = np.ascontiguousarray(lab, dtype=arr.dtype if labels == "vector" else np.float64)
    _finite(lab, f"{what} labels")
    return arr, lab


class Accumulator:
    """Base class of the accumulators: a statistic summed over blocks of rows.

    A subclass fixes what is summed; this class checks the blocks, counts the
    rows and blocks, merges accumulators and guards ``result``. The first
    non-empty block fixes the width (unless given here), the floating dtype
    and the number of label columns of every later block.

    Parameters
    ----------
    width : int, optional
        The number of features each block must have; taken from the first
        block when None.

    Attributes
    ----------
    n : int
        The rows seen.
    blocks : int
        The non-empty blocks seen: an ``update`` adds one, a ``merge`` adds
        the other accumulator's.
    width : int or None
        The number of features of the blocks (None before the first block,
        unless given).
    dtype : numpy.dtype or None
        The floating dtype of the blocks (None before the first block).
    label_width : int or None
        The number of label columns (None before labelled blocks, or when the
        blocks carry no labels).
    """

    _labels = "optional"

    def __init__(self, width=None):
        self.n = 0
        self.blocks = 0
        self.width = width
        self.dtype = None
        self.label_width = None

    def update(self, X_block, y_block=None):
        """Add a block of rows, checked by :func:`check_block`.

        Parameters
        ----------
        X_block : array_like, shape (rows, d)
            Samples, one per row; a block of no rows adds nothing.
        y_block : array_like, shape (rows,) or (rows, m), optional
            Labels, one per row: optional for :class:`Covariance`, required
            by the other accumulators (1-D for the moments). Either every
            block has labels or none has.

        Returns
        -------
        Accumulator
            This accumulator, updated.

        Raises
        ------
        ValueError, TypeError
            When the block fails :func:`check_block` (naming the block by
            its index: the number of non-empty blocks before it), or has
            labels where earlier blocks had none or the reverse.
        """
        X, y = check_block(X_block, y_block, self.blocks, width=self.width, dtype=self.dtype, labels=self._labels,
                           label_width=self.label_width)
        if self.n and (y is None) != (self.label_width is None):
            raise ValueError(f"block {self.blocks}: expected labels in every block or in none, got "
                             f"{'none' if y is None else 'labels'} after blocks "
                             f"{'with' if self.label_width else 'without'}")
        return self._add(X, y)

    def _add(self, X, y):
        """``update`` for a block already checked (the fit's passes)."""
        if X.shape[0] == 0:
            return self
        if self.width is None:
            self.width = X.shape[1]
        if self.dtype is None:
            self.dtype = X.dtype
            self._start()
        if y is not None and self.label_width is None:
            self.label_width = 1 if y.ndim == 1 else y.shape[1]
        self._update(X, y)
        self.n += X.shape[0]
        self.blocks += 1
        return self

    def merge(self, other):
        """Add the rows another accumulator has seen, in place.

        The result is that of one accumulator fed both accumulators' rows, up
        to rounding. ``other`` is not changed (nor shared: its arrays are
        copied when this accumulator has seen no rows).

        Parameters
        ----------
        other : Accumulator
            An accumulator of the same class and configuration (the same
            vectors, order or network), fed with other rows.

        Returns
        -------
        Accumulator
            This accumulator, updated.

        Raises
        ------
        TypeError
            When ``other`` is of another class.
        ValueError
            When both have seen rows and they differ in width, dtype, number
            of label columns or configuration.
        """
        if type(other) is not type(self):
            raise TypeError(f"other: expected a {type(self).__name__}, got {type(other).__name__}")
        if other.n == 0:
            self.blocks += other.blocks
            return self
        if self.n == 0:
            self.__dict__.update({key: (value.copy() if isinstance(value, np.ndarray) else value)
                                  for key, value in other.__dict__.items() if key not in self._config()})
            return self
        for name, value in (("width", other.width), ("dtype", other.dtype), ("label_width", other.label_width)):
            if getattr(self, name) != value:
                raise ValueError(f"other: expected an accumulator with {name} {getattr(self, name)}, got {value}")
        self._check_same(other)
        self._merge(other)
        self.n += other.n
        self.blocks += other.blocks
        return self

    def result(self):
        """The statistic of every row seen.

        Returns
        -------
        object
            The subclass's statistic (see each class); a new object, so the
            accumulator can go on being updated.

        Raises
        ------
        ValueError
            When no rows have been seen.
        """
        if self.n == 0:
            raise ValueError(f"{type(self).__name__}: no samples seen; update it with at least one non-empty block "
                             f"first")
        return self._result()

    # Subclasses: _start (allocate, once the dtype is known), _update, _merge,
    # _result, and _config / _check_same for what fixes the statistic.
    def _start(self):
        pass

    def _config(self):
        return ()

    def _check_same(self, other):
        for name in self._config():
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, tuple):  # of arrays
                same = len(a) == len(b) and all(np.array_equal(x, z) for x, z in zip(a, b))
            else:
                same = np.array_equal(a, b) if isinstance(a, np.ndarray) else (a is b or a == b)
            if not same:
                raise ValueError(f"other: expected an accumulator of the same {name.strip('_')}, got another")


# ----------------------------------------------------------------------------
# Centred statistics
# ----------------------------------------------------------------------------


class CovarianceResult:
    """What :class:`Covariance` returns: the centred statistics of the rows.

    Covariances are divided by n. The arrays are stored as given. The
    statistics are also kept as computed, on the rows divided by a power of
    two per column (``scale``, ``y_scale``): those are finite for any finite
    rows, while ``cov`` overflows to inf for features beyond about 1e154
    (their variance is beyond float64's range). ``std`` and ``y_std`` are
    computed from the scaled statistics, so they are finite.

    Parameters
    ----------
    n : int
        The number of rows.
    mean : numpy.ndarray, shape (d,)
        The mean of the rows.
    cov : numpy.ndarray, shape (d, d)
        The covariance of the rows.
    y_mean : numpy.ndarray, shape (m,), optional
        The mean of the labels; None without labels.
    y_cov : numpy.ndarray, shape (m, m), optional
        The covariance of the labels; None without labels.
    cross : numpy.ndarray, shape (d, m), optional
        The covariance of rows and labels; None without labels.
    scale : numpy.ndarray, shape (d,), optional
        Per feature, the power of two the statistics were computed on the
        rows divided by; ones when None.
    y_scale : numpy.ndarray, shape (m,), optional
        The same for the label columns; ones when None (with labels).
    scaled : tuple, optional
        (covariance of X / scale, covariance of y / y_scale, their cross
        covariance), the last two None without labels; computed from the
        other arguments when None.

    Attributes
    ----------
    scaled_cov, scaled_y_cov, scaled_cross : numpy.ndarray or None
        The covariances of the rows and labels divided by ``scale`` and
        ``y_scale`` (``scaled``).
    """

    def __init__(self, n, mean, cov, y_mean=None, y_cov=None, cross=None, *, scale=None, y_scale=None,
                 scaled=None):
        self.n, self.mean, self.cov, self.y_mean, self.y_cov, self.cross = n, mean, cov, y_mean, y_cov, cross
        self.scale = np.ones(mean.shape[0]) if scale is None else scale
        self.y_scale = None if y_mean is None else (np.ones(y_mean.shape[0]) if y_scale is None else y_scale)
        if scaled is None:
            scaled = (cov / np.outer(self.scale, self.scale),
                      None if y_cov is None else y_cov / np.outer(self.y_scale, self.y_scale),
                      None if cross is None else cross / np.outer(self.scale, self.y_scale))
        self.scaled_cov, self.scaled_y_cov, self.scaled_cross = scaled

    @property
    def std(self):
        """numpy.ndarray, shape (d,): the standard deviation of each feature."""
        return np.sqrt(np.maximum(np.diag(self.scaled_cov), 0.0)) * self.scale

    @property
    def y_std(self):
        """numpy.ndarray, shape (m,), or None: the standard deviation of each
        label column, None without labels."""
        if self.y_cov is None:
            return None
        return np.sqrt(np.maximum(np.diag(self.scaled_y_cov), 0.0)) * self.y_scale


def power_of_two_scale(top):
    """Per column, from the largest magnitudes ``top``, the power of two c
    with top / c in [1, 2) (1 for a zero column). Dividing by it is exact,
    so sums of squares computed on A / c neither overflow nor underflow
    and, times c^2, equal the unscaled ones wherever those are
    representable."""
    return np.where(top > 0, np.ldexp(1.0, np.frexp(top)[1] - 1), 1.0)


class Covariance(Accumulator):
    """Mean and covariance of the rows, and with labels y (n,) or (n, m) the
    labels' mean and covariance and their cross-covariance with the rows,
    all divided by n (the maximum-likelihood convention of the fit).
    ``result()`` returns a :class:`CovarianceResult`.

    Each block is centred on its own mean and its scatter merged by Chan,
    Golub and LeVeque's update M = M_a + M_b + delta delta^T n_a n_b / n, so
    the result does not lose digits to a large mean (raw sums of squares
    would: a feature of mean 1e8 and spread 1 keeps no digit of its
    variance in float64 that way). The sums are taken on the columns
    divided by a power of two near their largest magnitude so far (exact;
    the running statistics are rescaled, exactly, when it grows), so that
    squares of entries near float64's limits (1e-300, 1e300) neither
    underflow nor overflow. Memory O((d + m)^2).

    Parameters
    ----------
    width : int, optional
        The number of features each block must have; taken from the first
        block when None.
    """

    def _start(self):
        pass

    def _update(self, X, y):
        X = X.astype(np.float64, copy=False)
        Y = None if y is None else y.reshape(y.shape[0], -1).astype(np.float64, copy=False)
        top = (np.abs(X).max(axis=0), None if Y is None else np.abs(Y).max(axis=0))
        if self.n == 0:
            self._top = top
            self._stats = _centred_stats(X / power_of_two_scale(top[0]),
                                         None if Y is None else Y / power_of_two_scale(top[1]))
            return
        self._rescale(top)
        block = _centred_stats(X / power_of_two_scale(self._top[0]),
                               None if Y is None else Y / power_of_two_scale(self._top[1]))
        self._stats = _chan(self._stats, self.n, block, X.shape[0])

    def _rescale(self, top):
        """Raise the running largest magnitudes to include ``top`` and
        rescale the running statistics to the new powers of two."""
        new = tuple(None if a is None else np.maximum(a, b) for a, b in zip(self._top, top))
        fx = power_of_two_scale(self._top[0]) / power_of_two_scale(new[0])
        if new[1] is None:
            fy = None
        else:
            fy = power_of_two_scale(self._top[1]) / power_of_two_scale(new[1])
        self._stats = _scaled_stats(self._stats, fx, fy)
        self._top = new

    def _merge(self, other):
        self._rescale(other._top)
        fx = power_of_two_scale(other._top[0]) / power_of_two_scale(self._top[0])
        fy = None if self._top[1] is None else power_of_two_scale(other._top[1]) / power_of_two_scale(self._top[1])
        self._stats = _chan(self._stats, self.n, _scaled_stats(other._stats, fx, fy), other.n)

    def _result(self):
        mean, scatter, y_mean, y_scatter, cross = self._stats
        n = self.n
        c = power_of_two_scale(self._top[0])
        with np.errstate(over="ignore"):  # inf for variances beyond float64's range; std stays finite
            if y_mean is None:
                return CovarianceResult(n, mean * c, scatter / n * np.outer(c, c), scale=c,
                                        scaled=(scatter / n, None, None))
            cy = power_of_two_scale(self._top[1])
            return CovarianceResult(n, mean * c, scatter / n * np.outer(c, c), y_mean * cy,
                                    y_scatter / n * np.outer(cy, cy), cross / n * np.outer(c, cy), scale=c,
                                    y_scale=cy, scaled=(scatter / n, y_scatter / n, cross / n))


def _scaled_stats(stats, fx, fy):
    """Centred statistics of the columns multiplied by fx (and the labels'
    by fy): powers of two, so exact but for underflow."""
    mean, scatter, y_mean, y_scatter, cross = stats
    out = (mean * fx, scatter * np.outer(fx, fx))
    if y_mean is None:
        return (*out, None, None, None)
    return (*out, y_mean * fy, y_scatter * np.outer(fy, fy), cross * np.outer(fx, fy))


def _centred_stats(X, y):
    """Means, scatter and cross-scatter of a block; X and y are fresh
    arrays of the caller's (scaled copies) and are centred in place."""
    mean = X.mean(axis=0)
    X -= mean
    scatter = X.T @ X
    if y is None:
        return mean, scatter, None, None, None
    Y = y.reshape(y.shape[0], -1)
    y_mean = Y.mean(axis=0)
    Y -= y_mean
    return mean, scatter, y_mean, Y.T @ Y, X.T @ Y


def _chan(a, na, b, nb):
    """The centred statistics of two groups of rows from each group's."""
    n = na + nb
    f = na * nb / n
    dx = b[0] - a[0]
    out = [a[0] + dx * (nb / n), a[1] + b[1] + f * np.outer(dx, dx)]
    if a[2] is None:
        return (*out, None, None, None)
    dy = b[2] - a[2]
    out += [a[2] + dy * (nb / n), a[3] + b[3] + f * np.outer(dy, dy), a[4] + b[4] + f * np.outer(dx, dy)]
    return tuple(out)


class LeastSquares(Covariance):
    """Least squares of labels y (n,) or (n, m) on [1, x]: ``result()`` is
    (intercept (m,), coef (d, m)), from the centred normal equations
    Cov(x) coef = Cov(x, y) (Chan-merged, see ``Covariance``), solved by
    least squares so a rank-deficient design gives the minimum-norm
    coefficients. Labels are required in every block.

    Parameters
    ----------
    width : int, optional
        The number of features each block must have; taken from the first
        block when None.
    """

    _labels = "required"

    def _result(self):
        stats = Covariance._result(self)
        # On the scaled statistics (finite), then back to the caller's units.
        coef = np.linalg.lstsq(stats.scaled_cov, stats.scaled_cross, rcond=None)[0]
        coef = coef * stats.y_scale / stats.scale[:, None]
        return stats.y_mean - stats.mean @ coef, coef


# ----------------------------------------------------------------------------
# Moments of labels and Gaussian scores (the kernels of fastten._kernels)
# ----------------------------------------------------------------------------


class _KernelMoment(Accumulator):
    """A contraction of (1/n) sum_i y_i S_m(x_i) by a kernel that adds each
    block's sum into a float64 output. The vectors are fixed at construction;
    blocks must share one floating dtype, in which the per-block products run
    (as in ``fastten.moments``)."""

    _labels = "vector"

    def __init__(self, *vectors, width):
        super().__init__(width)
        self._vectors = vectors

    def _config(self):
        return ("_vectors",)

    def _check_same(self, other):
        if len(self._vectors) != len(other._vectors) or not all(
                np.array_equal(a, b) for a, b in zip(self._vectors, other._vectors)):
            raise ValueError("other: expected an accumulator of the same vectors, got other vectors")

    def _start(self):
        self._cast = [np.ascontiguousarray(v, dtype=self.dtype) for v in self._vectors]
        self.out = np.zeros(self._shape())

    def _update(self, X, y):
        self._kernel(X, y, *self._cast, self.out)

    def _merge(self, other):
        self.out += other.out

    def _result(self):
        return self.out / self.n


def _vectors(U, name, rows=None, check=True):
    """U as a float64 (d, m) array, checked unless ``check`` is False (the
    library's own callers: operators trust their arguments, and a NaN
    probe must propagate as it does through the kernels)."""
    arr = np.asarray(U, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1 or (rows is not None and arr.shape[0] != rows):
        raise ValueError(f"{name}: expected a 2-D array (d, m) with m >= 1, one column per vector, got shape "
                         f"{arr.shape}")
    if check and not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, got NaN or infinite entries")
    return np.ascontiguousarray(arr)


class FirstMoment(_KernelMoment):
    """The first cross-moment (1/n) sum_i y_i x_i; ``result()`` is (d,).

    Blocks need 1-D labels.

    Parameters
    ----------
    width : int, optional
        The number of features each block must have; taken from the first
        block when None.
    """

    def __init__(self, width=None):
        super().__init__(width=width)

    def _shape(self):
        return (self.width,)

    @staticmethod
    def _kernel(X, y, out):
        K.first_acc(X, y, out)


class SecondMomentDot(_KernelMoment):
    """The second cross-moment times a matrix; ``result()`` is (d, m).

    E[y S2] Omega = (1/n) sum_i y_i (x_i x_i^T - I) Omega, without forming the
    d x d moment. Blocks need 1-D labels and d features.

    Parameters
    ----------
    Omega : array_like, shape (d, m)
        The vectors to multiply, one per column.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When Omega is not 2-D with at least one column, or (with ``check``)
        has NaN or infinite entries.
    """

    def __init__(self, Omega, *, check=True):
        Omega = _vectors(Omega, "Omega", check=check)
        super().__init__(Omega, width=Omega.shape[0])

    def _shape(self):
        return self._vectors[0].shape

    _kernel = staticmethod(K.s2_dot_acc)


class ThirdMomentIUU(_KernelMoment):
    """The third cross-moment contracted twice; ``result()`` is (d, m).

    Column j of the result is E[y S3](I, u_j, u_j), the step of the
    tensor power method. Blocks need 1-D labels and d features.

    Parameters
    ----------
    U : array_like, shape (d, m)
        The vectors u_j, one per column.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When U is not 2-D with at least one column, or (with ``check``) has
        NaN or infinite entries.
    """

    def __init__(self, U, *, check=True):
        U = _vectors(U, "U", check=check)
        super().__init__(U, width=U.shape[0])

    def _shape(self):
        return self._vectors[0].shape

    _kernel = staticmethod(K.t3_iuu_acc)


class ThirdMomentUUU(_KernelMoment):
    """The third cross-moment contracted three times; ``result()`` is (m,).

    Entry j of the result is E[y S3](u_j, u_j, u_j). Blocks need 1-D labels
    and d features.

    Parameters
    ----------
    U : array_like, shape (d, m)
        The vectors u_j, one per column.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When U is not 2-D with at least one column, or (with ``check``) has
        NaN or infinite entries.
    """

    def __init__(self, U, *, check=True):
        U = _vectors(U, "U", check=check)
        super().__init__(U, width=U.shape[0])

    def _shape(self):
        return (self._vectors[0].shape[1],)

    _kernel = staticmethod(K.t3_uuu_acc)


class ThirdMomentSliceDot(_KernelMoment):
    """A slice of the third cross-moment times a matrix; ``result()`` is (d, m).

    The result is E[y S3](I, I, theta) Omega. Blocks need 1-D labels and d
    features.

    Parameters
    ----------
    theta : array_like, shape (d,)
        The direction of the slice.
    Omega : array_like, shape (d, m)
        The vectors to multiply, one per column.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When Omega is not 2-D with at least one column, theta has not d
        entries, or (with ``check``) either has NaN or infinite entries.
    """

    def __init__(self, theta, Omega, *, check=True):
        Omega = _vectors(Omega, "Omega", check=check)
        theta = _vectors(np.reshape(theta, (-1, 1)), "theta", Omega.shape[0], check)[:, 0].copy()
        super().__init__(theta, Omega, width=Omega.shape[0])

    def _shape(self):
        return self._vectors[1].shape

    _kernel = staticmethod(K.t3_slice_dot_acc)


class FourthMomentIUUU(_KernelMoment):
    """The fourth cross-moment contracted three times; ``result()`` is (d, m).

    Column j of the result is E[y S4](I, u_j, u_j, u_j). Blocks need 1-D
    labels and d features.

    Parameters
    ----------
    U : array_like, shape (d, m)
        The vectors u_j, one per column.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When U is not 2-D with at least one column, or (with ``check``) has
        NaN or infinite entries.
    """

    def __init__(self, U, *, check=True):
        U = _vectors(U, "U", check=check)
        super().__init__(U, width=U.shape[0])

    def _shape(self):
        return self._vectors[0].shape

    _kernel = staticmethod(K.t4_iuuu_acc)


class ProjectedMoment(_KernelMoment):
    """E[y S_m](W, ..., W) for W (d, k) and m = ``order`` (3 or 4), the dense
    symmetric (k,)*m array. Per block: Z = X W, then the packed symmetric
    power sum of Z (k(k+1)(k+2)/6 entries for m = 3) and the lower-order
    sums of the Hermite corrections, all added in float64; ``result``
    applies the corrections and unpacks. Blocks need 1-D labels and d
    features.

    Parameters
    ----------
    W : array_like, shape (d, k)
        The projection, one direction per column.
    order : {3, 4}, default 3
        The order m of the moment.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False, so that a NaN probe propagates through the
        result).

    Raises
    ------
    ValueError
        When W is not 2-D with at least one column, ``order`` is not 3 or 4,
        or (with ``check``) W has NaN or infinite entries.
    """

    def __init__(self, W, order=3, *, check=True):
        W = _vectors(W, "W", check=check)
        if order not in (3, 4):
            raise ValueError(f"order: expected 3 or 4, got {order!r}")
        self.order = order
        super().__init__(W, width=W.shape[0])

    def _config(self):
        return ("_vectors", "order")

    def _check_same(self, other):
        super()._check_same(other)
        if self.order != other.order:
            raise ValueError(f"other: expected an accumulator of order {self.order}, got {other.order}")

    def _start(self):
        super()._start()
        k = self._vectors[0].shape[1]
        self._plan = _plan(k, self.order)
        self.low = np.zeros(k) if self.order == 3 else np.zeros((k, k))
        self.ysum = 0.0

    def _shape(self):
        return (math.comb(self._vectors[0].shape[1] + self.order - 1, self.order),)

    def _update(self, X, y):
        Z = X @ self._cast[0]
        K.sym_packed_acc(Z, y, *self._plan, self.out)
        if self.order == 3:
            K.first_acc(Z, y, self.low)
        else:
            ysum = float(np.sum(y, dtype=np.float64))
            self.ysum += ysum
            # s2_dot_acc adds sum_i y_i (z_i z_i^T - I); keep sum_i y_i z_i z_i^T.
            self.low += ysum * np.eye(Z.shape[1])
            K.s2_dot_acc(Z, y, np.eye(Z.shape[1], dtype=Z.dtype), self.low)

    def _merge(self, other):
        self.out += other.out
        self.low += other.low
        self.ysum += other.ysum

    def _result(self):
        W = self._cast[0]
        k = W.shape[1]
        G = W.T.astype(np.float64) @ W
        R = self.out.copy()
        if self.order == 3:
            m1 = self.low
            a, b, c = _unpack_index(k, 3).T
            R -= m1[a] * G[b, c] + m1[b] * G[a, c] + m1[c] * G[a, b]
        else:
            M2 = self.low  # sum_i y_i z_i z_i^T
            a, b, c, e = _unpack_index(k, 4).T
            R -= (M2[a, b] * G[c, e] + M2[a, c] * G[b, e] + M2[a, e] * G[b, c]
                  + M2[b, c] * G[a, e] + M2[b, e] * G[a, c] + M2[c, e] * G[a, b])
            R += self.ysum * (G[a, b] * G[c, e] + G[a, c] * G[b, e] + G[a, e] * G[b, c])
        R /= self.n
        return unpack_symmetric(R, k, self.order)


class Spread:
    """What :class:`ScoreSpread` returns: per column, the mean and standard
    deviation (divided by n) over the samples of a value v_i, and n.

    Parameters
    ----------
    n : int
        The samples.
    mean : numpy.ndarray, shape (m,)
        (1/n) sum_i v_ij.
    std : numpy.ndarray, shape (m,)
        sqrt((1/n) sum_i (v_ij - mean_j)^2), as ``numpy.std``.
    """

    def __init__(self, n, mean, std):
        self.n, self.mean, self.std = n, mean, std

    def z(self):
        """The z-score of each column's mean.

        Returns
        -------
        numpy.ndarray, shape (m,)
            mean / (std / sqrt(n)), the mean over its standard error; a
            column of zero spread gives +-inf for a nonzero mean, 0 for a
            zero one.
        """
        return self.mean / (self.std / np.sqrt(self.n) + np.finfo(float).tiny)


def spread_of(v):
    """The mean (m,) and centred sum of squares (m,) of the rows of v (rows, m), by two passes over them."""
    mean = v.mean(axis=0)
    c = v - mean
    return mean, np.einsum("ij,ij->j", c, c)


def merge_spread(a, na, b, nb):
    """The (mean, centred sum of squares) of two groups of rows from each
    group's (Chan, Golub and LeVeque)."""
    n = na + nb
    delta = b[0] - a[0]
    return a[0] + delta * (nb / n), a[1] + b[1] + delta * delta * (na * nb / n)


def gaussian_score(Z, norms, order):
    """S_order(x)(u, ..., u) of standardised rows from Z = x . u (rows, m)
    and norms = |u|^2 (m,): Z^2 - |u|^2 (order 2), Z (Z^2 - 3 |u|^2)
    (order 3)."""
    if order == 2:
        return Z * Z - norms
    return Z * (Z * Z - 3.0 * norms)


def _dot64(X, U):
    """X U in float64 for float32 or float64 rows X: float32 rows are
    converted 2048 at a time (the values of converting X whole, without
    a float64 copy of the block: at 65536 x 1000 rows 0.21 s against 0.36 s,
    one thread)."""
    if X.dtype == np.float64:
        return X @ U
    Z = np.empty((X.shape[0], U.shape[1]))
    for i in range(0, X.shape[0], 2048):
        np.matmul(X[i:i + 2048].astype(np.float64), U, out=Z[i:i + 2048])
    return Z


class ScoreSpread(Accumulator):
    """The spread over the samples of y S_m(x)(u_j, ..., u_j), per column
    u_j, m = 2 or 3 (Gaussian scores; standardised rows); ``result()`` is a
    :class:`Spread` (mean and standard deviation per column).

    What the fit's significance tests need of the per-sample scores
    (z = mean / (std / sqrt(n)), and the noise of the projected moments),
    in memory of the size of U rather than n x m: each block's values are
    computed in float64, centred on the block's mean, and merged by Chan's
    update. Blocks need 1-D labels and d features.

    Parameters
    ----------
    U : array_like, shape (d, m)
        The vectors u_j, one per column.
    order : {2, 3}, default 3
        The order m of the score function.
    check : bool, default True
        Whether to check that the vectors are finite (the library's own
        callers pass False).

    Raises
    ------
    ValueError
        When U is not 2-D with at least one column, (with ``check``) has NaN
        or infinite entries, or ``order`` is not 2 or 3.
    """

    _labels = "vector"

    def __init__(self, U, order=3, *, check=True):
        if order not in (2, 3):
            raise ValueError(f"order: expected 2 or 3, got {order!r}")
        U = _vectors(U, "U", check=check)
        super().__init__(U.shape[0])
        self._vectors, self.order = U, order

    def _config(self):
        return ("_vectors", "order")

    def _start(self):
        self._norms = np.einsum("aj,aj->j", self._vectors, self._vectors)
        self._stats = None

    def _update(self, X, y):
        v = y[:, None] * gaussian_score(_dot64(X, self._vectors), self._norms, self.order)
        block = spread_of(v)
        self._stats = block if self.n == 0 else merge_spread(self._stats, self.n, block, X.shape[0])

    def _merge(self, other):
        self._stats = merge_spread(self._stats, self.n, other._stats, other.n)

    def _result(self):
        return Spread(self.n, self._stats[0].copy(), np.sqrt(self._stats[1] / self.n))


# ----------------------------------------------------------------------------
# Output layer
# ----------------------------------------------------------------------------


class NormalEquations(Accumulator):
    """Ridge regression of labels on [features, 1], by its normal equations.

    For features F (n, k), the rows of the blocks, and labels Y (n,) or
    (n, m), it accumulates H = [F, 1]^T [F, 1] and [F, 1]^T Y (float64,
    memory O(k^2 + k m)). Labels are required in every block.

    Parameters
    ----------
    width : int, optional
        The number of features each block must have; taken from the first
        block when None.
    """

    _labels = "required"

    def _start(self):
        self.H = np.zeros((self.width + 1, self.width + 1))
        self.g = None

    def _features(self, X):
        return X

    def _update(self, X, y):
        F = self._features(X)
        A = np.empty((F.shape[0], F.shape[1] + 1))
        A[:, :-1], A[:, -1] = F, 1.0
        Y = y.reshape(y.shape[0], -1)
        if self.g is None:
            self.g = np.zeros((A.shape[1], Y.shape[1]))
        self.H += A.T @ A
        self.g += A.T @ Y

    def _merge(self, other):
        self.H += other.H
        self.g += other.g

    def result(self, ridge=0.0):
        """The ridge regression of every row seen.

        It minimises ``|Y - F A2 - b2|^2 + ridge * n * |A2|^2`` (the intercept
        is not penalised).

        Parameters
        ----------
        ridge : float, default 0.0
            The penalty per sample, >= 0.

        Returns
        -------
        A2 : numpy.ndarray, shape (k, m)
            The coefficients of the features (m = 1 for 1-D labels).
        b2 : numpy.ndarray, shape (m,)
            The intercepts.
        cond : float
            The condition number of the penalised H (inf when it is
            singular: ``ridge`` 0 and features that are linearly dependent,
            such as a unit that is zero on every row; the coefficients are
            then the least-squares solution of least norm).

        Raises
        ------
        ValueError
            When ``ridge`` is not a number >= 0, or no rows have been seen.
        """
        if self.n == 0:
            return super().result()
        return _ridge_solution(self.H, self.g, self.n, ridge)


def _penalised(H, n, ridge):
    """H with ridge * n added on the diagonal of the features (not the intercept)."""
    if not (isinstance(ridge, (int, float, np.floating)) and ridge >= 0):
        raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
    H = H.copy()
    k = H.shape[0] - 1
    H[np.arange(k), np.arange(k)] += ridge * n
    return H


def _ridge_solution(H, g, n, ridge):
    """``NormalEquations.result`` of the sums H, g of n rows."""
    H = _penalised(H, n, ridge)
    k = H.shape[0] - 1
    try:
        coef = np.linalg.solve(H, g)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(H, g, rcond=None)[0]
        return coef[:k], coef[k], float("inf")
    return coef[:k], coef[k], float(np.linalg.cond(H))


class OutputLayer(NormalEquations):
    """The output layer's one pass: ``NormalEquations`` on a network's hidden units.

    The features of a block X are sigma(X A1 + b1); ``result(ridge)`` is
    that of :class:`NormalEquations`, with A2 of shape (k, m).

    Parameters
    ----------
    A1 : array_like, shape (d, k)
        First-layer weights, one hidden unit per column; blocks need d
        features.
    b1 : array_like, shape (k,)
        First-layer biases.
    activation : str or Activation
        The activation sigma, a name or an :class:`fastten.activations.Activation`.

    Raises
    ------
    ValueError
        When A1 is not 2-D with at least one column or has NaN or infinite
        entries, b1 has not one entry per column of A1, or the activation
        name is unknown.
    TypeError
        When ``activation`` is neither a name nor an Activation.
    """

    def __init__(self, A1, b1, activation):
        A1 = _vectors(A1, "A1")
        b1 = np.asarray(b1, dtype=np.float64).reshape(-1)
        if b1.shape != (A1.shape[1],):
            raise ValueError(f"b1: expected {A1.shape[1]} biases, one per column of A1, got shape {np.shape(b1)}")
        self.A1, self.b1, self.activation = A1, b1, get_activation(activation)
        super().__init__(A1.shape[0])

    def _config(self):
        return ("A1", "b1", "activation")

    def _start(self):
        self.H = np.zeros((self.A1.shape[1] + 1, self.A1.shape[1] + 1))
        self.g = None

    def _features(self, X):
        return derivative(self.activation, X @ self.A1 + self.b1, 0)


def _network(A1, b1, A2, b2):
    """(A1 (d, k), b1 (k,), A2 (k, m), b2 (m,)) as float64, checked: the
    network of the refinement's accumulators (A2 and b2 may be 1-D for one
    output)."""
    A1 = _vectors(A1, "A1")
    k = A1.shape[1]
    b1 = np.asarray(b1, dtype=np.float64).reshape(-1)
    if b1.shape != (k,):
        raise ValueError(f"b1: expected {k} biases, one per column of A1, got shape {np.shape(b1)}")
    A2 = np.asarray(A2, dtype=np.float64)
    if A2.ndim == 1:
        A2 = A2[:, None]
    if A2.ndim != 2 or A2.shape[0] != k:
        raise ValueError(f"A2: expected shape ({k}, m) or ({k},), one row per hidden unit, got {np.shape(A2)}")
    b2 = np.asarray(b2, dtype=np.float64).reshape(-1)
    if b2.shape != (A2.shape[1],):
        raise ValueError(f"b2: expected {A2.shape[1]} intercepts, one per column of A2, got shape {np.shape(b2)}")
    for name, arr in (("b1", b1), ("A2", A2), ("b2", b2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: expected finite values, got NaN or infinite entries")
    return A1, b1, np.ascontiguousarray(A2), b2


class _Network(Accumulator):
    """A statistic of the squared loss of a network F = sigma(X A1 + b1) A2
    + b2 over labelled rows: the hidden layer's activations and slopes per
    block, in the blocks' precision (A1 cast to a float32 block's dtype)."""

    _labels = "required"

    def __init__(self, A1, b1, A2, b2, activation):
        self.A1, self.b1, self.A2, self.b2 = _network(A1, b1, A2, b2)
        self.activation = get_activation(activation)
        super().__init__(self.A1.shape[0])

    def _config(self):
        return ("A1", "b1", "A2", "b2", "activation")

    def _layer(self, X, y):
        """(S, D, R): activations, slopes and residuals F - Y of a block."""
        Y = y.reshape(y.shape[0], -1)
        if Y.shape[1] != self.A2.shape[1]:
            raise ValueError(f"block {self.blocks}: expected {self.A2.shape[1]} label column(s), one per output of "
                             f"A2, got {Y.shape[1]}")
        S, D = value_and_slope(self.activation, X @ self.A1.astype(X.dtype) + self.b1)
        return S, D, S @ self.A2 + self.b2 - Y


def gradient_sums(X, S, D, R, A2):
    """Sums over the rows of J^T r: (X^T W, sum W, S^T R, sum R) with W =
    (R A2^T) * D, for rows X, the network's activations S and slopes D
    (n, k) and residuals R (n, m): n times the gradient of half the mean
    squared error in (A1, b1, A2, b2). X^T W in X's precision, returned in
    float64."""
    W = (R @ A2.T) * D
    XtW = (X.T @ W.astype(X.dtype, copy=False)).astype(np.float64, copy=False)
    return XtW, W.sum(axis=0), S.T @ R, R.sum(axis=0)


def gauss_newton_sums(X, S, D, A2, V, P=None):
    """Sums over the rows of J^T J v (J^T H J v with softmax probabilities
    P), v = V = (VA1 (d, k), vb1, VA2 (k, m), vb2): the kernels
    ``gn_product_acc`` and ``gn_softmax_product_acc`` on rows X, activations
    S and slopes D (float64, C-contiguous). VA1 is cast to X's dtype, and X
    copied to C order if it is not (the kernel is compiled for C order)."""
    VA, vb1, VA2, vb2 = V
    X = np.ascontiguousarray(X)
    d, k = VA.shape
    m = A2.shape[1]
    out = (np.zeros((d, k)), np.zeros(k), np.zeros((k, m)), np.zeros(m))
    VA = np.ascontiguousarray(VA, dtype=X.dtype)
    VA2, A2 = np.ascontiguousarray(VA2), np.ascontiguousarray(A2)
    if P is None:
        gn_product_acc(X, D, S, A2, VA, vb1, VA2, vb2, *out, gn_block(d))
    else:
        gn_softmax_product_acc(X, D, S, A2, P, VA, vb1, VA2, vb2, *out, gn_block(d))
    return out


class NetworkLoss(_Network):
    """A network's squared loss and its output layer's normal equations, in one pass.

    Half the mean over the rows of the squared error summed over the
    outputs, ``sum |sigma(X A1 + b1) A2 + b2 - Y|^2 / (2 n)``, and the
    ``NormalEquations`` of the labels on the hidden units' activations
    (what :class:`OutputLayer` sums): the refinement's trial pass out of
    core, which scores a step and finds the best output layer for it.

    Parameters
    ----------
    A1 : array_like, shape (d, k)
        First-layer weights, one hidden unit per column; blocks need d
        features.
    b1 : array_like, shape (k,)
        First-layer biases.
    A2 : array_like, shape (k, m) or (k,)
        Output weights; labels need m columns (1-D labels for m = 1).
    b2 : array_like, shape (m,)
        Output intercepts.
    activation : str or Activation
        The activation sigma.

    Raises
    ------
    ValueError
        When the arrays' shapes disagree or an entry is NaN or infinite, or a
        block's labels have another number of columns than A2.
    """

    def _start(self):
        k = self.A1.shape[1]
        self.H = np.zeros((k + 1, k + 1))
        self.g = np.zeros((k + 1, self.A2.shape[1]))
        self.sse = np.zeros(self.A2.shape[1])

    def _update(self, X, y):
        S, _, R = self._layer(X, y)
        A = np.empty((S.shape[0], S.shape[1] + 1))
        A[:, :-1], A[:, -1] = S, 1.0
        self.H += A.T @ A
        self.g += A.T @ y.reshape(y.shape[0], -1)
        self.sse += np.sum(R * R, axis=0)

    def _merge(self, other):
        self.H += other.H
        self.g += other.g
        self.sse += other.sse

    def _result(self):
        return 0.5 * float(self.sse.sum()) / self.n

    def errors(self):
        """The mean squared error of each output over every row seen.

        Returns
        -------
        numpy.ndarray, shape (m,)
            ``sum_i (F_ic - Y_ic)^2 / n`` for each output c.
        """
        if self.n == 0:
            super().result()
        return self.sse / self.n

    def result(self):
        """The loss of every row seen.

        Returns
        -------
        float
            ``sum |F - Y|^2 / (2 n)``.

        Raises
        ------
        ValueError
            When no rows have been seen.
        """
        return super().result()

    def output_layer(self, ridge=0.0):
        """The output layer of least loss for this hidden layer.

        Parameters
        ----------
        ridge : float, default 0.0
            The penalty per sample on A2, >= 0 (as ``NormalEquations.result``).

        Returns
        -------
        A2 : numpy.ndarray, shape (k, m)
            The output weights.
        b2 : numpy.ndarray, shape (m,)
            The output intercepts.
        loss : float
            The loss with that output layer plus the penalty ``ridge / 2``
            times the sum of A2's squares: the loss of the network's own
            output layer c minus the exact decrease ``(c - c*)^T H (c - c*)
            / (2 n)`` to the new one c* (no cancellation against the labels'
            squares), at least 0.
        """
        if self.n == 0:
            super().result()
        A2, b2, _ = _ridge_solution(self.H, self.g, self.n, ridge)
        H = _penalised(self.H, self.n, ridge)
        delta = np.vstack([self.A2 - A2, (self.b2 - b2)[None]])
        own = self._result() + 0.5 * ridge * float(np.sum(self.A2 ** 2))
        return A2, b2, max(own - 0.5 * float(np.sum(delta * (H @ delta))) / self.n, 0.0)


class GradientResult:
    """What :class:`NetworkGradient` returns: a network's loss and its gradient.

    The arguments are stored as attributes of the same names.

    Parameters
    ----------
    n : int
        The rows.
    loss : float
        ``sum |F - Y|^2 / (2 n)``.
    A1 : numpy.ndarray, shape (d, k)
        The loss's gradient in the first-layer weights.
    b1 : numpy.ndarray, shape (k,)
        Its gradient in the first-layer biases.
    A2 : numpy.ndarray, shape (k, m)
        Its gradient in the output weights.
    b2 : numpy.ndarray, shape (m,)
        Its gradient in the output intercepts.
    slope_gram : numpy.ndarray, shape (k, k)
        ``D^T D / n``, D the units' slopes sigma'(X A1 + b1): the
        Gauss-Newton matrix's weights off the span of A1 for Gaussian inputs
        (the refinement's structured preconditioner).
    """

    def __init__(self, n, loss, A1, b1, A2, b2, slope_gram):
        self.n, self.loss, self.slope_gram = n, loss, slope_gram
        self.A1, self.b1, self.A2, self.b2 = A1, b1, A2, b2


class NetworkGradient(_Network):
    """A network's squared loss and its gradient, in one pass.

    The gradient of ``sum |sigma(X A1 + b1) A2 + b2 - Y|^2 / (2 n)`` in
    (A1, b1, A2, b2), and the slopes' Gram matrix: the refinement's
    gradient pass. ``result()`` returns a :class:`GradientResult`.

    Parameters
    ----------
    A1 : array_like, shape (d, k)
        First-layer weights, one hidden unit per column.
    b1 : array_like, shape (k,)
        First-layer biases.
    A2 : array_like, shape (k, m) or (k,)
        Output weights; labels need m columns (1-D labels for m = 1).
    b2 : array_like, shape (m,)
        Output intercepts.
    activation : str or Activation
        The activation sigma.

    Raises
    ------
    ValueError
        As :class:`NetworkLoss`.
    """

    def _start(self):
        d, k = self.A1.shape
        m = self.A2.shape[1]
        self.sums = [np.zeros((d, k)), np.zeros(k), np.zeros((k, m)), np.zeros(m)]
        self.DtD = np.zeros((k, k))
        self.sse = 0.0

    def _update(self, X, y):
        S, D, R = self._layer(X, y)
        for total, part in zip(self.sums, gradient_sums(X, S, D, R, self.A2)):
            total += part
        self.DtD += D.T @ D
        self.sse += float(np.sum(R * R))

    def _merge(self, other):
        for total, part in zip(self.sums, other.sums):
            total += part
        self.DtD += other.DtD
        self.sse += other.sse

    def _result(self):
        n = self.n
        return GradientResult(n, 0.5 * self.sse / n, *(part / n for part in self.sums), self.DtD / n)


class GaussNewtonProduct(_Network):
    """The product of a network's Gauss-Newton matrix with a vector, in one pass.

    ``J^T J v / n``, J the Jacobian of the n m outputs in (A1, b1, A2, b2):
    the refinement's conjugate-gradient product, matrix-free (the kernel
    ``gn_product_acc``, O(rows d k) per block). Labels are not used, but
    required, as by the other passes of the refinement.

    Parameters
    ----------
    A1, b1, A2, b2, activation
        The network, as :class:`NetworkLoss`.
    V : tuple of array_like
        The vector v as (VA1 (d, k), vb1 (k,), VA2 (k, m), vb2 (m,)).
    """

    def __init__(self, A1, b1, A2, b2, activation, V):
        super().__init__(A1, b1, A2, b2, activation)
        VA, vb1, VA2, vb2 = _network(*V)
        if VA.shape != self.A1.shape or VA2.shape != self.A2.shape:
            raise ValueError(f"V: expected the network's shapes {self.A1.shape}, {self.A2.shape}, got {VA.shape}, "
                             f"{VA2.shape}")
        self.V = (VA, vb1, VA2, vb2)

    def _config(self):
        return super()._config() + ("V",)

    def _start(self):
        d, k = self.A1.shape
        m = self.A2.shape[1]
        self.sums = [np.zeros((d, k)), np.zeros(k), np.zeros((k, m)), np.zeros(m)]

    def _update(self, X, y):
        S, D, _ = self._layer(X, y)
        for total, part in zip(self.sums, gauss_newton_sums(X, S, D, self.A2, self.V)):
            total += part

    def _merge(self, other):
        for total, part in zip(self.sums, other.sums):
            total += part

    def _result(self):
        """(A1, b1, A2, b2) parts of J^T J v / n."""
        return tuple(part / self.n for part in self.sums)


# ----------------------------------------------------------------------------
# Passes
# ----------------------------------------------------------------------------


class PassCounter:
    """Passes over the data, counted by stage.

    Attributes
    ----------
    by_stage : dict
        Passes per stage name, in the order stages were first counted.
    """

    def __init__(self):
        self.by_stage = {}

    def count(self, stage, passes=1):
        """Count passes under a stage.

        Parameters
        ----------
        stage : str
            The stage's name.
        passes : int or float, default 1
            The passes to add: a fraction for a pass over part of the rows.
        """
        self.by_stage[stage] = self.by_stage.get(stage, 0) + passes

    @property
    def total(self):
        """int or float: the passes of every stage."""
        return sum(self.by_stage.values())


class Pass:
    """One read of a stream of blocks feeding several accumulators.

    ``Pass(counter, stage).run(blocks, *accumulators)`` reads each block
    once, adds it to every accumulator and counts one pass.

    Parameters
    ----------
    counter : PassCounter, optional
        Where the pass is counted; not counted when None.
    stage : str, default "pass"
        The stage the pass is counted under.
    """

    def __init__(self, counter=None, stage="pass"):
        self.counter, self.stage = counter, stage

    def run(self, blocks, *accumulators, check=True):
        """Feed every block to every accumulator, then count one pass.

        Parameters
        ----------
        blocks : iterable of (X_block, y_block)
            The blocks of rows and their labels (or None), read once.
        *accumulators : Accumulator
            The accumulators to update, each with every block.
        check : bool, default True
            Whether to check each block (:func:`check_block`, against the
            width, dtype and label columns of the first). False for blocks
            checked already, as float32 or float64 C-contiguous arrays (a
            source that checks its blocks itself: ``fit`` checks each block
            once, on its first read).

        Returns
        -------
        Accumulator or tuple of Accumulator
            The accumulator, for one; else the tuple of them, in order.

        Raises
        ------
        ValueError, TypeError
            When a block fails its check (naming the block), an accumulator
            of moments gets a block without 1-D labels, or the stream has no
            rows.
        """
        width = dtype = label_width = None
        seen = 0
        for index, (X_block, y_block) in enumerate(blocks):
            if check:
                X, y = check_block(X_block, y_block, index, width=width, dtype=dtype, label_width=label_width)
                if width is None:
                    width, dtype = X.shape[1], X.dtype
                    label_width = None if y is None else (1 if y.ndim == 1 else y.shape[1])
            else:
                X, y = X_block, y_block
            for acc in accumulators:
                if acc._labels == "vector":
                    if y is None or y.ndim != 1:
                        raise ValueError(f"block {index}: {type(acc).__name__} expected 1-D labels, one per row, "
                                         f"got {'none' if y is None else f'shape {y.shape}'}")
                    acc._add(X, np.ascontiguousarray(y, dtype=X.dtype))
                else:
                    acc._add(X, y)
            seen += X.shape[0]
        if not seen:
            raise ValueError("blocks: expected at least one row, got an empty stream of blocks")
        if self.counter is not None:
            self.counter.count(self.stage)
        return accumulators if len(accumulators) != 1 else accumulators[0]
