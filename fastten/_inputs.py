"""Inputs as they come: standardise per feature, whiten in the non-null space.

Real features sit on scales many orders apart (breast cancer: 1e-3 to 4e3),
some are constant (digits: pixels always blank) and some are linear
combinations of others. The fit works in whitened coordinates

    z = (x - mu) / s            per feature, over the non-constant features
    x~ = z L                    L (d', r): R^{-1/2} on the span of R = E[z z^T]

where r is the rank of the correlation matrix R. At full rank L is the
symmetric R^{-1/2}; otherwise L = V_r Lambda_r^{-1/2} maps onto the r
directions with eigenvalues above RANK_TOL times the largest, and the null
directions (on which the data do not vary, so no network can use them) are
dropped and named in the diagnostics. Standardising first makes the rank
test independent of the features' units. A network fitted on x~ maps back
to the caller's coordinates exactly (``Standardiser.network``).
"""

from dataclasses import dataclass

import numpy as np

from ._kernels.rows import standardise_columns, standardise_rows
from .accumulate import Covariance, Pass, power_of_two_scale

# Eigenvalues of the correlation matrix below this fraction of the largest
# are null directions. The eigenvalues of an exactly collinear set come out
# at about 1e-16 times the largest (rounding); 1e-10 leaves six orders of
# margin above that, and whitening a direction of relative variance 1e-10
# multiplies its rounding error by 1e5 at most.
RANK_TOL = 1e-10

# Smallest standard deviation of a feature the fit accepts: the weights on a
# feature scale as 1 / its spread, and below this they would leave the
# float64 range (about 1e308) once multiplied by the whitened weights.
MIN_SPREAD = 1e-280


@dataclass
class Standardiser:
    """mu, s (d,): the features' means and standard deviations (s = 1 for
    constant features); keep: the indices of the non-constant features; L
    (len(keep), r); condition: the largest over the smallest kept eigenvalue
    of the correlation matrix (None for ``identity``); dropped: what was
    left out, for the diagnostics."""

    mu: np.ndarray
    s: np.ndarray
    keep: np.ndarray
    L: np.ndarray
    condition: float = None
    dropped: dict = None

    @classmethod
    def identity(cls, d):
        """Inputs that are standard already (``input_model="standard"``)."""
        return cls(np.zeros(d), np.ones(d), np.arange(d), np.eye(d), None,
                   {"constant_features": [], "null_directions": 0})

    @classmethod
    def fit(cls, X, counter=None):
        """The standardiser of the rows of X (n, d); returns it and the
        standardised features Z (n, len(keep)), the coordinates in which a
        product density factorises. The statistics are one pass of
        ``fastten.accumulate.Covariance`` over blocks of rows (counted in
        ``counter``, a PassCounter, when given), on X divided by a power of
        two per feature (exact), so that entries near the ends of float64's
        range neither overflow nor underflow in the squares."""
        from ._sources import ArraySource  # the sources build on the accumulators

        stats = Pass(counter, "standardise").run(ArraySource(X).blocks(), Covariance(), check=False).result()
        inputs = cls.from_covariance(stats.mean, stats.scaled_cov, stats.scale)
        return inputs, inputs.standardise(X)

    @classmethod
    def from_covariance(cls, mu, cov, scale=None):
        """The standardiser of rows of mean mu (d,) and covariance cov (d, d)
        (divided by n: ``fastten.accumulate.Covariance``) of the rows divided
        by ``scale`` (d,), powers of two (ones when None): with
        ``CovarianceResult.scaled_cov`` and ``scale`` it is finite for any
        finite rows. Refuses (ValueError) rows whose every feature is
        constant, and features whose spread is below MIN_SPREAD."""
        scale = np.ones(mu.shape[0]) if scale is None else scale
        d = mu.shape[0]
        s = np.sqrt(np.maximum(np.diag(cov), 0.0)) * scale
        # Constant up to rounding: a spread below 1e-12 of the magnitude.
        constant = ~(s > 1e-12 * np.maximum(np.abs(mu), np.finfo(float).tiny))
        keep = np.flatnonzero(~constant)
        if keep.size == 0:
            raise ValueError(f"X: expected at least one feature that varies, got {d} constant feature"
                             f"{'s' * (d > 1)} (constant up to rounding: spread below 1e-12 of the mean)")
        small = np.flatnonzero(~constant & (s < MIN_SPREAD))
        if small.size:
            raise ValueError(f"X: expected features whose standard deviation is 0 or at least {MIN_SPREAD:g} "
                             f"(the weights on a feature scale as 1 / its spread), got {s[small[0]]:.3g} for "
                             f"feature {small[0]}: rescale X")
        s = np.where(constant, 1.0, s)
        sc = s[keep] / scale[keep]  # the spreads in the units of X / scale
        R = cov[np.ix_(keep, keep)] / np.outer(sc, sc)
        vals, vecs = np.linalg.eigh(R)
        good = vals > RANK_TOL * vals[-1]
        if good.all():
            L = (vecs / np.sqrt(vals)) @ vecs.T
        else:
            L = vecs[:, good] / np.sqrt(vals[good])
        dropped = {"constant_features": np.flatnonzero(constant).tolist(), "null_directions": int((~good).sum())}
        return cls(mu, s, keep, L, float(vals[-1] / vals[good][0]), dropped)

    @property
    def rank(self):
        return self.L.shape[1]

    def whiten(self, Z):
        """x~ = z L from standardised features Z."""
        return Z @ self.L

    def standardise(self, X):
        """z = (x - mu) / s on the kept features of rows X (n, d), computed
        on X divided by a power of two per feature (near max(|mu|, s)):
        exact, and it keeps x - mu from overflowing near float64's limit.
        In float64's normal range the bits are those of (x - mu) / s."""
        keep = self.keep
        mu, s = self.mu[keep], self.s[keep]
        c = power_of_two_scale(np.maximum(np.abs(mu), s))
        Z = np.empty((X.shape[0], keep.size))
        if X.dtype not in (np.float32, np.float64) or not X.flags.c_contiguous:  # the reference
            np.divide(X if keep.size == X.shape[1] else X[:, keep], c, out=Z)
            Z -= mu / c
            Z /= s / c
        elif keep.size == X.shape[1]:  # the same operations, one pass (fastten._kernels.rows)
            standardise_rows(X, c, mu / c, s / c, Z)
        else:
            standardise_columns(X, keep, c, mu / c, s / c, Z)
        return Z

    def transform(self, X):
        """x~ for rows X (n, d) in the caller's coordinates."""
        return self.whiten(self.standardise(X))

    def from_standardised(self, W):
        """Directions W (len(keep), k) on the standardised features z as
        weights on x~: z = x~ L^+ (exact on the span the data occupy)."""
        if self.L.shape[0] == self.L.shape[1]:
            return np.linalg.solve(self.L, W)
        return np.linalg.lstsq(self.L, W, rcond=None)[0]

    def network(self, A1, b1):
        """Hidden-layer weights and biases on x~ mapped to the caller's x:
        A1 (d, k) with zero rows on the constant features, b1 - A1^T mu."""
        A1_out = np.zeros((self.mu.shape[0], A1.shape[1]))
        A1_out[self.keep] = (self.L @ A1) / self.s[self.keep][:, None]
        return A1_out, b1 - A1_out.T @ self.mu

    def to_dict(self):
        return {"rank": self.rank, "condition_number": self.condition, **self.dropped}
