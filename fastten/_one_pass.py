"""One read of a stream that cannot be replayed: ``fit(..., one_pass=True)``.

The multi-pass fit out of core reads its rows 19-26 times (most of them
the tensor stage's contractions). Here every row is read once (docs/api.md,
"Data out of core"; its accuracy cost: docs/performance.md, "One pass"):

1. **Pilot.** The first P rows of the stream (P = the rows the fit keeps in
   memory anyway, ``fastten._rounds.gathered_rows``) are buffered. From them:
   a pilot standardiser, the pilot's linear control variate, and a range:
   ``signal_subspace`` of the pilot's moments, an orthonormal basis B
   (d, m) of m = k + ONE_PASS_EXTRA whitened directions (more than the
   multi-pass fit's k + 5: the rest of the data cannot correct the range).
2. **The pass** (the pilot's blocks first, then the rest of the stream):
   the ``Covariance`` of the raw rows (the final network's exact
   standardisation), the ``Covariance`` of z = B^T x~ (x~ whitened by the
   pilot) with the residual r, the raw power sums (1/n) sum_i r_i
   [z_i; 1]^(x)4 (every order 0-4 of the projected moments in one
   symmetric array, ``PowerSums``), the raw sums of r x~ (x) z (x) z (the
   third moment with one mode in all d dimensions, ``CrossSums``) and a
   uniform sample of P rows (``Reservoir``).
3. **The sketch.** The power sums are re-centred and whitened with the
   full data's mean and covariance of z (exact algebra: the moments are
   those of the full-data standardisation on span(B), not the pilot's),
   then turned into the Hermite moments of orders 2, 3 and 4 in those m
   coordinates (``SketchedMoment``, an operator for the tensor stage; the
   spreads its z-tests need come from the sample).
4. **Out of the pilot's subspace.** The components the third moment
   trusts take one alternating-least-squares step of E[r S3] in all d
   dimensions (``OnePass.full_space_step``): the pilot's subspace holds
   each unit only up to the pilot's sampling error (|cos| 0.989-0.9995
   at d=20, k=3 with a pilot of 16384 rows), and the step replaces that
   error by the full data's. The directions then map back to the full
   data's whitened inputs (``OnePass.to_full``).

Memory: O(P d + d^2 + d m^2 + m^4) and one block; nothing of size n, and
m^3 (m^4 only up to m = FOURTH_MAX) equals d^3 only when d <= k + 10.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np

from . import _kernels as K
from ._control import streamed_weights
from ._inputs import Standardiser
from ._sources import ArraySource
from ._subspace import signal_subspace
from .accumulate import Accumulator, Covariance, ScoreSpread, Spread
from .moments import _plan, unpack_symmetric
from .operators import DataMoment, DenseTensor, TensorOperator

__all__ = ["one_pass", "OnePass", "SketchedMoment", "Reservoir", "PowerSums", "CrossSums", "hermite_moments",
           "mixed_hermite", "ONE_PASS_EXTRA", "FOURTH_MAX", "FULL_STEP_COS"]

# Dimensions of the pilot's range beyond k (the multi-pass fit keeps 5).
ONE_PASS_EXTRA = 10
# Largest m for which the pass sums the fourth-order moments (the joint
# decomposition's E[r S4]): they cost comb(m + 4, 4) products a row (10,626
# at m = 20, 23,751 at m = 25, 46,376 at m = 30) against comb(m + 3, 3) for
# the third order; beyond it the joint path runs without them, as for
# non-Gaussian inputs.
FOURTH_MAX = 25
# Smallest |cos| between a direction and its full-space step for the step
# to be taken (OnePass.full_space_step): a turn of more than 60 degrees is
# not the correction of a unit the pilot's subspace holds. At d=50, k=10
# (pilot 16672 rows, n=1e6, seed 0) the subspace held the two weakest units
# at |cos| 0.81 and 0.84; the step turned them to 0.9988 and 0.9986, which
# a bar of 0.9 refused (worst |cos| 0.81 on seed 0 and 0.86 on seed 2 then).
FULL_STEP_COS = 0.5


class Reservoir:
    """A uniform sample of ``size`` rows (and their labels) of a stream, without
    replacement, in one read: each row gets a key uniform on [0, 1) from
    ``rng`` and the rows of the ``size`` smallest keys are kept (Algorithm
    R's distribution; the keys, one draw per row in stream order, do not
    depend on how the stream is cut into blocks). ``result()`` gives the
    kept rows in stream order."""

    def __init__(self, size, rng):
        self.size, self.rng = size, rng
        self.seen = 0
        self.X = self.Y = self.keys = self.rows = None

    def update(self, X, Y):
        count = X.shape[0]
        keys = self.rng.random(count)
        rows = np.arange(self.seen, self.seen + count)
        self.seen += count
        if self.X is None:
            self.X, self.Y = X[:0].copy(), Y[:0].copy()
            self.keys, self.rows = keys[:0], rows[:0]
        room = self.size - self.keys.shape[0]
        if room > 0:  # still filling: take the first rows as they come
            take = slice(0, min(room, count))
            self.X = np.concatenate([self.X, X[take]])
            self.Y = np.concatenate([self.Y, Y[take]])
            self.keys = np.concatenate([self.keys, keys[take]])
            self.rows = np.concatenate([self.rows, rows[take]])
            X, Y, keys, rows = X[take.stop:], Y[take.stop:], keys[take.stop:], rows[take.stop:]
        new = np.flatnonzero(keys < self.keys.max()) if keys.shape[0] else keys[:0].astype(np.intp)
        if new.size == 0:
            return
        union = np.concatenate([self.keys, keys[new]])
        kept = np.argpartition(union, self.size - 1)[:self.size]
        entering = new[kept[kept >= self.size] - self.size]
        slots = np.setdiff1d(np.arange(self.size), kept[kept < self.size])
        self.X[slots], self.Y[slots] = X[entering], Y[entering]
        self.keys[slots], self.rows[slots] = keys[entering], rows[entering]

    def result(self):
        order = np.argsort(self.rows)
        return self.X[order], self.Y[order]


class PowerSums(Accumulator):
    """(1/n) sum_i y_i [z_i; 1]^(x)order for rows z (dim,) and 1-D labels: the
    raw (uncentred, no Hermite correction) power sums of every order up to
    ``order`` at once, as one dense symmetric (dim + 1,)*order array (the
    entries with j indices equal to dim are the order-(order - j) sums).
    Packed symmetric sums through the projected moments' kernel, in
    float64."""

    _labels = "vector"

    def __init__(self, dim, order=4):
        super().__init__(dim)
        self.order = order

    def _config(self):
        return ("order",)

    def _start(self):
        self._plan = _plan(self.width + 1, self.order)
        self.out = np.zeros(math.comb(self.width + self.order, self.order))

    def _update(self, X, y):
        Z = np.empty((X.shape[0], self.width + 1))
        Z[:, :-1], Z[:, -1] = X, 1.0
        K.sym_packed_acc(Z, np.ascontiguousarray(y, dtype=np.float64), *self._plan, self.out)

    def _merge(self, other):
        self.out += other.out

    def _result(self):
        return unpack_symmetric(self.out / self.n, self.width + 1, self.order)


def hermite_moments(E):
    """From E = E[r [v; 1]^(x)order] ((m + 1)^order, order 4 or 3,
    ``PowerSums`` of standardised v): the cross-moments with the Gaussian
    scores, E[r S2] (m, m), E[r S3] (m, m, m) and E[r S4] (m,)*4 (None for
    order 3)."""
    m, order = E.shape[0] - 1, E.ndim

    def raw(j):  # E[r v^(x)j]: j indices among the m coordinates, the others at the constant
        return E[(slice(0, m),) * j + (m,) * (order - j)]

    E0, E1, E2 = raw(0), raw(1), raw(2)
    eye = np.eye(m)
    M2 = E2 - E0 * eye
    T3 = raw(3) - (np.einsum("a,bc->abc", E1, eye) + np.einsum("b,ac->abc", E1, eye)
                   + np.einsum("c,ab->abc", E1, eye))
    if order == 3:
        return M2, T3, None
    E4 = raw(4)
    pairs = "ab,ce ac,be ae,bc bc,ae be,ac ce,ab".split()
    T4 = E4.copy()
    for p in pairs:
        T4 -= np.einsum(f"{p}->abce", E2, eye)
    for p in ("ab,ce", "ac,be", "ae,bc"):
        T4 += E0 * np.einsum(f"{p}->abce", eye, eye)
    return M2, T3, T4


class CrossSums(Accumulator):
    """(1/n) sum_i y_i [x_i; 1] (x) [z_i; 1] (x) [z_i; 1] for rows [x_i, z_i]
    (d + m columns) and 1-D labels: the raw sums of the third-order moments
    with one free mode (d) and two in the m coordinates z, every lower order
    included (the entries at index d, or m, of the constant). Accumulated
    as (d + 1) x (m + 1)(m + 2) / 2 pairs b <= c by BLAS products over
    sub-blocks of SUB_ROWS rows; ``result()`` is the dense (d + 1, m + 1,
    m + 1) array."""

    _labels = "vector"
    SUB_ROWS = 4096

    def __init__(self, d, m):
        super().__init__(d + m)
        self.d, self.m = d, m

    def _config(self):
        return ("d", "m")

    def _start(self):
        self._pairs = np.triu_indices(self.m + 1)
        self.out = np.zeros((self.d + 1, self._pairs[0].shape[0]))

    def _update(self, X, y):
        b, c = self._pairs
        for i in range(0, X.shape[0], self.SUB_ROWS):
            Xb, yb = X[i:i + self.SUB_ROWS], y[i:i + self.SUB_ROWS]
            Z = np.empty((Xb.shape[0], self.m + 1))
            Z[:, :-1], Z[:, -1] = Xb[:, self.d:], 1.0
            P = Z[:, b] * Z[:, c] * yb[:, None]
            self.out[:-1] += Xb[:, :self.d].T @ P
            self.out[-1] += P.sum(axis=0)

    def _merge(self, other):
        self.out += other.out

    def _result(self):
        b, c = self._pairs
        full = np.empty((self.d + 1, self.m + 1, self.m + 1))
        full[:, b, c] = self.out / self.n
        full[:, c, b] = self.out / self.n
        return full


def mixed_hermite(E, C):
    """From E = E[r [u; 1] (x) [v; 1] (x) [v; 1]] for standardised u (d,) and
    v = C^T u (C (d, m) with orthonormal columns): E[r S3(u)](I, C, C),
    (d, m, m)."""
    d, m = E.shape[0] - 1, E.shape[1] - 1
    Eu, Ev = E[:d, m, m], E[d, :m, m]
    return (E[:d, :m, :m] - Eu[:, None, None] * np.eye(m) - np.einsum("b,ac->abc", Ev, C)
            - np.einsum("c,ab->abc", Ev, C))


class SketchedMoment(TensorOperator):
    """The tensor stage's operator from the one pass: the cross-moments of
    the residuals with the Gaussian scores of orders 2, 3 and 4 in the m
    whitened coordinates of the pilot's range (dense: M2, T3, T4), the
    means of all n rows. What ``fastten._directions.tensor_directions``
    asks of an operator: the contractions (of the dense T3),
    ``second_moment_dot``, ``fourth_projected``, ``score_spread`` (means
    from the moments, spreads from the sample rows V with residuals r),
    ``label_noise``, ``passes`` (0: no more reads) and ``search_dim`` (the
    dimension the range was chosen in, which sets the noise thresholds)."""

    passes = 0

    def __init__(self, M2, T3, T4, n, label_sd, V, r, search_dim):
        self.dim = T3.shape[0]
        self.M2, self.T4, self.n = (M2 + M2.T) / 2, T4, n
        self._T = DenseTensor._trusted(T3)
        self.V, self.r = np.ascontiguousarray(V), np.ascontiguousarray(r)
        self.label_noise = (label_sd / np.sqrt(n),) * 2
        self.search_dim = search_dim

    def iuu(self, U):
        return self._T.iuu(U)

    def slice_dot(self, theta, Omega):
        return self._T.slice_dot(theta, Omega)

    def project(self, W):
        return self._T.project(W)

    def second_moment_dot(self, Omega):
        return self.M2 @ Omega

    def fourth_projected(self, W):
        """E[r S4](W, W, W, W), or None when the pass did not sum the fourth
        order (m > FOURTH_MAX)."""
        if self.T4 is None:
            return None
        return np.einsum("abce,ai,bj,ck,el->ijkl", self.T4, W, W, W, W, optimize=True)

    def score_spread(self, U, order):
        mean = np.einsum("aj,ab,bj->j", U, self.M2, U) if order == 2 else self.uuu(U)
        spread = ScoreSpread(U, order, check=False)._add(self.V, self.r).result()
        return Spread(self.n, mean, spread.std)


@dataclass
class OnePass:
    """What the pass gives the fit: ``stats`` (the raw rows' Covariance
    result), ``theta`` (the outputs' random combination), the ``sample``
    (raw X, Y) of ``gathered_rows`` rows, the tensor stage's ``operator``,
    and how to map its directions back (``to_full``); ``record`` for the
    diagnostics."""

    stats: object
    theta: np.ndarray
    sample: tuple
    operator: SketchedMoment
    pilot: Standardiser
    basis: np.ndarray
    whiten: np.ndarray
    whiten_inputs: np.ndarray
    embed: np.ndarray
    mixed: np.ndarray
    record: dict

    def full_space_step(self, U):
        """The directions U (m, t) of the sketch (third-moment components)
        moved out of the pilot's subspace by one alternating-least-squares
        step of the third moment in all d dimensions: A = T(I, U, U)
        ((U^T U) * (U^T U))^{-1}, from the full data's E[r S3](I, C, C)
        (``mixed``), normalised and oriented as U. Where U is the components
        to first order, A is too, with the pilot's error in the other two
        modes entering only through their overlaps with the other
        components. A column whose |cos| with its step is below
        FULL_STEP_COS (a turn the pilot's error cannot explain) keeps its
        direction. Returns
        weights on the pilot's whitened inputs (d, t)."""
        old = self.embed @ U  # the same directions on the standardised inputs u
        Y = np.einsum("abc,bj,cj->aj", self.mixed, U, U)
        G = (U.T @ U) ** 2
        try:
            new = np.linalg.solve(G, Y.T).T
        except np.linalg.LinAlgError:
            return self.whiten_inputs @ old
        norms = np.linalg.norm(new, axis=0)
        new = new / np.where(norms > 0, norms, 1.0)
        cos = np.einsum("aj,aj->j", new, old)
        new *= np.where(cos < 0, -1.0, 1.0)
        moved = np.abs(cos) >= FULL_STEP_COS
        self.record["full_space_steps"] = int(moved.sum())
        return self.whiten_inputs @ np.where(moved, new, old)

    def to_full(self, U, inputs, trusted=0):
        """Unit directions U (m, k) of the sketch as unit weights on the
        full data's whitened inputs (``inputs``): through the pilot's
        whitened coordinates and the raw inputs, exactly (O(d^2) each); the
        first ``trusted`` columns (third-moment components) after
        ``full_space_step``."""
        W = self.basis @ (self.whiten @ U)
        if trusted:
            W[:, :trusted] = self.full_space_step(U[:, :trusted])
        raw, _ = self.pilot.network(W, np.zeros(U.shape[1]))
        keep = inputs.keep
        V = inputs.from_standardised(inputs.s[keep][:, None] * raw[keep])
        norms = np.linalg.norm(V, axis=0)
        return V / np.where(norms > 0, norms, 1.0)


def _inverse_sqrt(C):
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    vals = np.maximum(vals, 1e-12 * max(vals[-1], np.finfo(float).tiny))
    return (vecs / np.sqrt(vals)) @ vecs.T


def _sqrt(C):
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def one_pass(source, k, control_variate, standard, rng, counter, sample_rows):
    """Read ``source`` once (module docstring) for a fit of k units; the
    linear control variate unless ``control_variate`` is "none"; the
    identity standardisation when ``standard``. ``sample_rows(d, m)``: the
    pilot's and the sample's rows for d inputs and m outputs. The pass is
    counted in ``counter`` under "one_pass". Returns a ``OnePass``."""
    blocks = iter(source.blocks())
    buffered, rows, size = [], 0, None
    for X, Y in blocks:  # the pilot: the first blocks, up to `size` rows
        buffered.append((X, Y))
        rows += X.shape[0]
        if size is None and X.shape[0]:
            size = sample_rows(X.shape[1], 1 if Y.ndim == 1 else Y.shape[1])
        if size is not None and rows >= size:
            break
    if rows < 2:
        raise ValueError(f"X: expected at least 2 samples, got {rows}")
    size = min(size, rows)
    Xp = np.concatenate([X for X, _ in buffered])[:size]
    Yp = np.concatenate([Y for _, Y in buffered])[:size]
    pstats = Covariance()._add(Xp, Yp).result()
    try:
        pilot = Standardiser.identity(Xp.shape[1]) if standard else \
            Standardiser.from_covariance(pstats.mean, pstats.scaled_cov, pstats.scale)
    except ValueError as exc:
        raise ValueError(f"{exc} in the first {size} rows, from which one_pass=True standardises the stream (a "
                         f"stream whose first rows are not like the rest needs shuffling, or one_pass=False)") \
            from None
    y_mean = pstats.y_mean
    y_scale = np.where(pstats.y_std > 0, pstats.y_std, 1.0)
    theta = rng.standard_normal(y_mean.shape[0])
    theta_hat = theta / np.linalg.norm(theta)
    w = streamed_weights(pstats, pilot, y_scale, theta_hat, standard) if control_variate == "linear" \
        else np.zeros(pilot.rank)

    def whitened(X, Y):
        Xs = np.ascontiguousarray(pilot.transform(X), dtype=np.float64)
        r = ((Y.reshape(X.shape[0], -1) - y_mean) / y_scale) @ theta_hat - Xs @ w
        return Xs, np.ascontiguousarray(r)

    Xs, r = whitened(Xp, Yp)
    del Xp, Yp
    sub = signal_subspace(DataMoment.from_source(ArraySource(Xs, r), pilot.rank, y=r), min(k, pilot.rank), rng,
                          extra=ONE_PASS_EXTRA)
    B = sub.basis
    m = B.shape[1]
    del Xs, r

    raw, xstats, zstats, sums = Covariance(), Covariance(), Covariance(), PowerSums(m, 4 if m <= FOURTH_MAX else 3)
    cross = CrossSums(pilot.rank, m)
    sample = Reservoir(size, rng)
    for X, Y in itertools.chain(buffered, blocks):
        raw._add(X, Y)
        sample.update(X, Y)
        Xs, r = whitened(X, Y)
        Z = Xs @ B
        xstats._add(Xs, None)
        zstats._add(Z, r)
        sums._add(Z, r)
        cross._add(np.hstack([Xs, Z]), r)
    buffered.clear()
    counter.count("one_pass")
    stats, xs, zs = raw.result(), xstats.result(), zstats.result()

    # z = B^T x~ over all rows has mean mu and covariance C (near 0 and I:
    # the pilot's standardisation is an estimate); v = A (z - mu), A =
    # C^{-1/2}, is exactly standard on the full data. [v; 1] = Abar [z; 1].
    A = _inverse_sqrt(zs.cov)
    Abar = np.zeros((m + 1, m + 1))
    Abar[:m, :m], Abar[:m, m], Abar[m, m] = A, -A @ zs.mean, 1.0
    E = sums.result()
    for axis in range(E.ndim):  # Abar along every axis
        E = np.moveaxis(np.tensordot(Abar, E, axes=(1, axis)), 0, axis)
    M2, T3, T4 = hermite_moments(E)
    Xr, Yr = sample.result()
    Xs, r = whitened(Xr, Yr)
    V = (Xs @ B - zs.mean) @ A
    op = SketchedMoment(M2, T3, T4, stats.n, float(zs.y_std[0]), V, r, pilot.rank)
    # u = Wx (x~ - mu_x), Wx = Cov(x~)^{-1/2}: the inputs standardised on all
    # rows (in the pilot's basis); v = C^T u with C = Cov(x~)^{1/2} B A.
    Wx, root = _inverse_sqrt(xs.cov), _sqrt(xs.cov)
    C = root @ B @ A
    d = pilot.rank
    Xbar = np.zeros((d + 1, d + 1))
    Xbar[:d, :d], Xbar[:d, d], Xbar[d, d] = Wx, -Wx @ xs.mean, 1.0
    T_icc = mixed_hermite(np.einsum("abc,ia,jb,kc->ijk", cross.result(), Xbar, Abar, Abar, optimize=True), C)
    record = {"pilot_rows": int(size), "sample_rows": int(Xr.shape[0]), "subspace_dimension": int(m),
              "pilot_supported": int(sub.supported), "pilot_rank": int(pilot.rank), "full_space_steps": 0}
    return OnePass(stats, theta, (Xr, Yr), op, pilot, B, A, Wx, C, T_icc, record)
