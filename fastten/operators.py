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

from . import _kernels as K
from . import moments
from ._validation import check_labels, check_samples

__all__ = ["TensorOperator", "DenseTensor", "DataMoment", "Deflated", "as_operator"]


class TensorOperator(ABC):
    """Base class: a symmetric d x d x d tensor known through contractions.

    Subclasses define ``dim`` and the four contractions. Arguments are
    float64 arrays already checked by the caller (the engines); operators
    trust them.
    """

    dim = None

    @abstractmethod
    def iuu(self, U):
        """See the module docstring."""

    def uuu(self, U):
        """Default: u . T(I, u, u); subclasses may do it in one cheaper pass."""
        return np.einsum("aj,aj->j", U, self.iuu(U))

    @abstractmethod
    def slice_dot(self, theta, Omega):
        """See the module docstring."""

    @abstractmethod
    def project(self, W):
        """See the module docstring."""

    def deflated(self, weights, vectors):
        return Deflated(self, weights, vectors)


class DenseTensor(TensorOperator):
    """A dense symmetric (d, d, d) array, checked for shape, finiteness and symmetry."""

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

    X and y are checked once here; each contraction is then one pass over X
    through the kernels (:mod:`fastten._kernels`), and nothing of size d^2
    or d^3 is formed. ``passes`` counts the passes. Labels are used as given
    (centre them first to lower the variance).
    """

    def __init__(self, X, y):
        self.X = check_samples(X)
        self.y = check_labels(y, self.X.shape[0], self.X.dtype)
        self.dim = self.X.shape[1]
        self.passes = 0

    def _pass(self, kernel, shape, *vectors):
        self.passes += 1
        out = np.zeros(shape)
        kernel(self.X, self.y, *(np.ascontiguousarray(v, dtype=self.X.dtype) for v in vectors), out)
        return out / self.X.shape[0]

    def iuu(self, U):
        return self._pass(K.t3_iuu_acc, U.shape, U)

    def uuu(self, U):
        return self._pass(K.t3_uuu_acc, U.shape[1], U)

    def slice_dot(self, theta, Omega):
        return self._pass(K.t3_slice_dot_acc, Omega.shape, theta, Omega)

    def second_moment_dot(self, Omega):
        """E[y S2] Omega, one pass (not part of the third-order protocol)."""
        return self._pass(K.s2_dot_acc, Omega.shape, Omega)

    def project(self, W):
        self.passes += 1
        W = np.ascontiguousarray(W, dtype=self.X.dtype)
        return moments.projected3(self.X, self.y, W).astype(np.float64)

    def s2_samples(self, U):
        """Per-sample S2(x_i)(u, u) = (u . x_i)^2 - |u|^2, (n, m); one pass."""
        self.passes += 1
        Z = self.X @ U
        return Z * Z - np.einsum("aj,aj->j", U, U)

    def uuu_samples(self, U):
        """Per-sample S3(x_i)(u, u, u) = (u . x_i)^3 - 3 |u|^2 (u . x_i), (n, m); one pass."""
        self.passes += 1
        Z = self.X @ U
        return Z * (Z * Z - 3.0 * np.einsum("aj,aj->j", U, U))


class Deflated(TensorOperator):
    """T - sum_j w_j v_j^(x)3 for an operator T, without touching T."""

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
    """An operator from an operator (returned as is) or a dense symmetric array."""
    return T if isinstance(T, TensorOperator) else DenseTensor(T)
