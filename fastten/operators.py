"""Symmetric third-order tensors given by what they can contract.

The decomposition engines never look inside a tensor: they ask an operator
for the contractions below, so one power method runs on a dense array handed
in by a user, on the implicit cross-moment of a data set (never formed), or
on a sketch. Every method takes a batch of vectors as the columns of a
(d, m) float64 array (always 2-D: operators are an internal protocol), so
one call costs one pass over the data for the whole batch.

    iuu(U)              (d, m)   column j = T(I, u_j, u_j)
    uuu(U)              (m,)     T(u_j, u_j, u_j)
    slice_dot(t, Omega) (d, m)   T(I, I, t) Omega
    project(W)          (k,k,k)  T(W, W, W)

``deflated(weights, vectors)`` returns the operator of
T - sum_j weights_j v_j^(x)3, applied implicitly (never by subtracting a
dense tensor).
"""

from abc import ABC, abstractmethod

import numpy as np

from . import accumulate as A
from ._sources import ArraySource, each_block, run_pass
from ._validation import check_labels, check_samples
from .accumulate import PassCounter

__all__ = ["TensorOperator", "DenseTensor", "DataMoment", "Deflated", "as_operator"]


class TensorOperator(ABC):
    """Base class: a symmetric d x d x d tensor known through contractions.

    Subclasses define ``dim`` and the contractions ``iuu``, ``slice_dot`` and
    ``project`` (``uuu`` and ``deflated`` have defaults). Arguments are
    float64 arrays already checked by the caller (the engines); operators
    trust them. A subclass can be handed to :func:`fastten.decompose`.

    Attributes
    ----------
    dim : int
        The dimension d of the tensor, set by subclasses.
    """

    dim = None

    @abstractmethod
    def iuu(self, U):
        """The contractions T(I, u_j, u_j), one per column of U.

        Parameters
        ----------
        U : numpy.ndarray, shape (d, m)
            float64 vectors u_j, one per column.

        Returns
        -------
        numpy.ndarray, shape (d, m)
            Column j is T(I, u_j, u_j).
        """

    def uuu(self, U):
        """The values T(u_j, u_j, u_j), one per column of U.

        The default is u_j . T(I, u_j, u_j); subclasses may compute it in one
        cheaper pass.

        Parameters
        ----------
        U : numpy.ndarray, shape (d, m)
            float64 vectors u_j, one per column.

        Returns
        -------
        numpy.ndarray, shape (m,)
            T(u_j, u_j, u_j).
        """
        return np.einsum("aj,aj->j", U, self.iuu(U))

    @abstractmethod
    def slice_dot(self, theta, Omega):
        """The slice of T along theta times a matrix, T(I, I, theta) Omega.

        Parameters
        ----------
        theta : numpy.ndarray, shape (d,)
            float64 direction of the slice.
        Omega : numpy.ndarray, shape (d, m)
            float64 vectors to multiply, one per column.

        Returns
        -------
        numpy.ndarray, shape (d, m)
            T(I, I, theta) Omega.
        """

    @abstractmethod
    def project(self, W):
        """The tensor projected on W, T(W, W, W).

        Parameters
        ----------
        W : numpy.ndarray, shape (d, k)
            float64 projection, one direction per column.

        Returns
        -------
        numpy.ndarray, shape (k, k, k)
            T(W, W, W).
        """

    def deflated(self, weights, vectors):
        """The operator of T - sum_j weights_j v_j^(x)3, applied implicitly.

        Parameters
        ----------
        weights : array_like, shape (r,)
            The weights w_j of the components to subtract.
        vectors : array_like, shape (d, r)
            The components v_j, one per column.

        Returns
        -------
        Deflated
            The deflated operator; this one is left unchanged.

        Raises
        ------
        ValueError
            When ``vectors`` is not (d, r) for r weights.
        """
        return Deflated(self, weights, vectors)


class DenseTensor(TensorOperator):
    """A dense symmetric (d, d, d) array, checked for shape, finiteness and symmetry.

    The contractions are those of :class:`TensorOperator`, each one BLAS
    product (O(d^3 m) operations).

    Parameters
    ----------
    T : array_like, shape (d, d, d)
        A real symmetric tensor; it is copied to float64.
    rtol : float, default 1e-10
        Tolerance of the symmetry check, relative to the largest absolute
        entry.

    Raises
    ------
    TypeError
        When T is not a real numeric array.
    ValueError
        When T is not cubical, has NaN or infinite entries, or is not
        symmetric to ``rtol``.
    """

    def __init__(self, T, *, rtol=1e-10):
        T = np.asarray(T)
        if T.dtype.kind not in "iuf" or T.dtype.kind == "b":
            raise TypeError(f"T: expected a real numeric array, got dtype {T.dtype}")
        if T.ndim != 3 or not (T.shape[0] == T.shape[1] == T.shape[2]) or T.shape[0] < 1:
            raise ValueError(f"T: expected a cubical array of shape (d, d, d), got shape {T.shape}")
        T = np.ascontiguousarray(T, dtype=np.float64)
        if not np.isfinite(T).all():
            raise ValueError("T: expected finite values, got NaN or infinite entries")
        # Swapping indices (0, 1) and (1, 2) generates all permutations;
        # check them slab by slab (d^2 memory, not d^3).
        scale = np.abs(T).max()
        asym = max(max(np.abs(T[a] - T[:, a, :]).max(), np.abs(T[a] - T[a].T).max())
                   for a in range(T.shape[0]))
        if asym > rtol * scale:
            raise ValueError(
                f"T: expected a symmetric tensor, got max |T[a,b,c] - T[b,a,c]| or |T[a,b,c] - T[a,c,b]| "
                f"= {asym:.3g} (relative {asym / scale:.3g} > rtol={rtol:g}); symmetrise it first if intended"
            )
        self.T = T
        self.dim = T.shape[0]

    @classmethod
    def _trusted(cls, T, symmetrise=True):
        """An operator on an internal tensor: symmetrised (unless it is
        symmetric already), not checked."""
        op = cls.__new__(cls)
        if symmetrise:
            T = sum(T.transpose(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6
        op.T = T
        op.dim = T.shape[0]
        return op

    def iuu(self, U):
        # T_(1) (d x d^2) times the columnwise Kronecker products u_j (x) u_j.
        d, m = U.shape
        return self.T.reshape(d, d * d) @ (U[:, None, :] * U[None, :, :]).reshape(d * d, m)

    def slice_dot(self, theta, Omega):
        return (self.T @ theta) @ Omega

    def project(self, W):
        d, k = W.shape
        P = (W.T @ self.T.reshape(d, d * d)).reshape(k * d, d) @ W    # (k d, k): T(W, I, W)
        P = P.reshape(k, d, k).transpose(0, 2, 1).reshape(k * k, d) @ W  # (k k, k)
        return P.reshape(k, k, k)


class DataMoment(TensorOperator):
    """The implicit cross-moment M3 = (1/n) sum_i y_i S3(x_i) of standardised data.

    X and y are checked once here; each contraction of
    :class:`TensorOperator` is then one pass over X by an accumulator of
    :mod:`fastten.accumulate` (blocks of rows through the kernels), and
    nothing of size d^2 or d^3 is formed. ``passes`` counts the passes.
    Labels are used as given (centre them first to lower the variance).
    ``DataMoment.from_source`` reads the rows from a stream of blocks
    instead (the fit's out-of-core route).

    ``y2`` holds the labels of the second-order contractions
    (``second_moment_dot``); it is ``y`` unless an internal caller gives the
    second moment a control-variate residual of its own, as a second source
    of the same rows (``fastten._control``: the quadratic control variate
    changes E[r S2]).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Standardised samples (Gaussian score functions: x ~ N(0, I)).
    y : array_like, shape (n,)
        Labels.

    Raises
    ------
    ValueError, TypeError
        When X or y is not a finite real array of the expected shape.
    """

    def __init__(self, X, y):
        X = check_samples(X)
        y = check_labels(y, X.shape[0], X.dtype)
        self._start(ArraySource(X, y), X.shape[1], y)

    @classmethod
    def from_source(cls, source, dim, counter=None, stage="tensor", y=None, source2=None, y2=None):
        """The moment of rows read from a stream of blocks (the fit's out-of-core route).

        Nothing is read here. The blocks are trusted: each is expected
        checked already (C-contiguous float32 or float64 rows, finite, with
        finite 1-D labels in the dtype of the rows). The operator has no
        ``X``; its ``y`` is gathered in one pass when first asked for,
        unless given.

        Parameters
        ----------
        source : object
            A source of :mod:`fastten._sources` or :mod:`fastten._dask`, or
            any object whose ``blocks()`` returns a fresh iterable of
            (X_block, y_block) pairs over the same rows on every call:
            standardised rows and their labels. A source whose
            ``distributed`` attribute is true is read through its
            ``reduce``, ``collect`` and ``gather`` methods instead (one task
            per chunk, on the Dask scheduler).
        dim : int
            The number of features d of the rows.
        counter : PassCounter, optional
            Where each pass is also counted, under ``stage``; a new counter
            when None. ``passes`` counts this operator's own passes either
            way.
        stage : str, default "tensor"
            The stage the passes are counted under in ``counter``.
        y : numpy.ndarray, shape (n,), optional
            The labels of all the rows, in order, if the caller has them.
        source2 : object, optional
            The same rows with the second order's labels (the control
            variate may differ by order: ``fastten._control``); None: ``source``.
        y2 : numpy.ndarray, shape (n,), optional
            Those labels, if the caller has them.

        Returns
        -------
        DataMoment
            The operator; contractions read ``source`` once each.
        """
        op = cls.__new__(cls)
        op._start(source, dim, y, counter, stage, source2, y2)
        return op

    def _start(self, source, dim, y, counter=None, stage="tensor", source2=None, y2=None):
        self.source, self.dim, self._y = source, dim, y
        self.source2, self._y2 = source2, y2
        self.counter = PassCounter() if counter is None else counter
        self.stage = stage
        self._counted = 0

    def _restricted(self, rows, y, y2=None, counter=None):
        """For internal callers: the moment of the same rows at ``rows``
        (sorted indices; None: all of them) with labels y (n_rows,), and y2
        for the second order (None: y), passes counted in ``counter`` (None:
        a counter of its own). Needs the rows in memory (an ``ArraySource``);
        labels are cast to the rows' dtype, as the kernels want."""
        X = self._rows()
        if rows is not None:
            X = X[rows]
        y = np.ascontiguousarray(y, dtype=X.dtype)
        source2 = None
        if y2 is not None:
            y2 = np.ascontiguousarray(y2, dtype=X.dtype)
            source2 = ArraySource(X, y2, self.source.block_rows)
        return DataMoment.from_source(ArraySource(X, y, self.source.block_rows), self.dim, counter, self.stage,
                                      y=y, source2=source2, y2=y2)

    @property
    def X(self):
        """The rows (n, d) when they are in memory (``method="sketch"``
        hashes them); a ``TypeError`` for rows read from a stream."""
        return self._rows()

    def _rows(self):
        """The rows (n, d) when they are in memory."""
        if not isinstance(self.source, ArraySource):
            raise TypeError(f"DataMoment: the rows are read from a {type(self.source).__name__}, not held in "
                            f"memory")
        return self.source.X

    @property
    def passes(self):
        """int: the passes over the data this operator has made so far."""
        return self._counted

    @property
    def y(self):
        """numpy.ndarray, shape (n,): the labels of every row, in order.

        Given, or held since construction from arrays; for an operator made
        by :meth:`from_source` without ``y``, gathered in one (counted) pass
        on first access and kept.
        """
        if self._y is None:
            self._count()
            self._y = np.concatenate(each_block(self.source, lambda X, y: y))
        return self._y

    @property
    def y2(self):
        """numpy.ndarray, shape (n,): the labels of the second-order moment.

        ``y`` unless the operator was built with ``source2``; then given, or
        gathered from it in one (counted) pass on first access and kept.
        """
        if self.source2 is None:
            return self.y
        if self._y2 is None:
            self._count()
            self._y2 = np.concatenate(each_block(self.source2, lambda X, y: y))
        return self._y2

    def _count(self):
        self._counted += 1
        self.counter.count(self.stage)

    def _pass(self, acc, source=None):
        self._count()
        return run_pass(self.source if source is None else source, acc).result()

    def iuu(self, U):
        return self._pass(A.ThirdMomentIUU(U, check=False))

    def uuu(self, U):
        return self._pass(A.ThirdMomentUUU(U, check=False))

    def slice_dot(self, theta, Omega):
        return self._pass(A.ThirdMomentSliceDot(theta, Omega, check=False))

    def second_moment_dot(self, Omega):
        """The second cross-moment times a matrix, E[y2 S2] Omega, in one pass.

        Not part of the third-order protocol; the ``"auto"`` method of
        :func:`fastten.decompose` uses it to decide whether to whiten.

        Parameters
        ----------
        Omega : numpy.ndarray, shape (d, m)
            float64 vectors to multiply, one per column.

        Returns
        -------
        numpy.ndarray, shape (d, m)
            (1/n) sum_i y2_i (x_i x_i^T - I) Omega (``y2`` is ``y`` unless a
            control variate gave the second order labels of its own).
        """
        return self._pass(A.SecondMomentDot(Omega, check=False), self.source2)

    def project(self, W):
        return self._pass(A.ProjectedMoment(W, 3, check=False))

    def fourth_projected(self, W):
        """The fourth cross-moment projected on W, E[y S4](W, W, W, W), in one pass.

        Not part of the third-order protocol; the fit's joint decomposition
        uses it for units the third moment does not see.

        Parameters
        ----------
        W : numpy.ndarray, shape (d, k)
            float64 projection, one direction per column.

        Returns
        -------
        numpy.ndarray, shape (k, k, k, k)
            E[y S4](W, W, W, W), symmetric.
        """
        return self._pass(A.ProjectedMoment(W, 4, check=False))

    def score_spread(self, U, order):
        """The spread over the samples of r S_order(x)(u_j, ..., u_j), per column, in one pass.

        What the significance tests need of the per-sample scores (their
        mean and standard deviation per column), accumulated block by block
        (:class:`fastten.accumulate.ScoreSpread`): memory O(d m), not n x m.

        Parameters
        ----------
        U : numpy.ndarray, shape (d, m)
            float64 vectors u_j, one per column.
        order : {2, 3}
            The score's order; r is ``y2`` for order 2 and ``y`` for order 3.

        Returns
        -------
        fastten.accumulate.Spread
            ``n``, and per column ``mean`` and ``std`` (divided by n) of
            r_i S_order(x_i)(u_j, ..., u_j), where S2(x)(u, u) = (u . x)^2 -
            ``|u|^2`` and S3(x)(u, u, u) = (u . x)^3 - 3 ``|u|^2`` (u . x).
        """
        return self._pass(A.ScoreSpread(U, order, check=False), self.source2 if order == 2 else None)


class Deflated(TensorOperator):
    """T - sum_j w_j v_j^(x)3 for an operator T, without touching T.

    Each contraction of :class:`TensorOperator` is the base operator's
    minus the components' (O(d r m) more operations).

    Parameters
    ----------
    base : TensorOperator
        The operator T.
    weights : array_like, shape (r,)
        The weights w_j of the components to subtract.
    vectors : array_like, shape (d, r)
        The components v_j, one per column.

    Raises
    ------
    ValueError
        When ``vectors`` is not (d, r) for r weights.
    """

    def __init__(self, base, weights, vectors):
        self.base = base
        self.dim = base.dim
        self.weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        self.vectors = np.asarray(vectors, dtype=np.float64)
        if self.vectors.shape != (self.dim, self.weights.shape[0]):
            raise ValueError(
                f"vectors: expected shape ({self.dim}, {self.weights.shape[0]}), one column per weight, "
                f"got shape {self.vectors.shape}"
            )

    def iuu(self, U):
        C = self.vectors.T @ U  # (r, m)
        return self.base.iuu(U) - self.vectors @ (self.weights[:, None] * C * C)

    def uuu(self, U):
        C = self.vectors.T @ U
        return self.base.uuu(U) - self.weights @ (C * C * C)

    def slice_dot(self, theta, Omega):
        c = self.weights * (self.vectors.T @ theta)
        return self.base.slice_dot(theta, Omega) - self.vectors @ (c[:, None] * (self.vectors.T @ Omega))

    def project(self, W):
        P = W.T @ self.vectors  # (k, r)
        return self.base.project(W) - np.einsum("j,aj,bj,cj->abc", self.weights, P, P, P)

    def deflated(self, weights, vectors):
        more = Deflated(self.base, weights, vectors)
        return Deflated(self.base, np.concatenate([self.weights, more.weights]),
                        np.hstack([self.vectors, more.vectors]))


def as_operator(T):
    """An operator from an operator (returned as is) or a dense symmetric array.

    Parameters
    ----------
    T : TensorOperator or array_like, shape (d, d, d)
        The tensor.

    Returns
    -------
    TensorOperator
        T itself, or a :class:`DenseTensor` of it.

    Raises
    ------
    ValueError, TypeError
        As :class:`DenseTensor` for an array that is not a finite real
        symmetric tensor.
    """
    return T if isinstance(T, TensorOperator) else DenseTensor(T)
