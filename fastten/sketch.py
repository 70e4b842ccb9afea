r"""Sketched symmetric third-order tensors (TensorSketch with FFT contractions).

This is the sketched path of the pipeline (DESIGN 4.3), after Wang, Tung,
Smola and Anandkumar, "Fast and Guaranteed Tensor Decomposition via
Sketching" (NIPS 2015): a symmetric tensor T (d x d x d) is replaced by B
independent sketches of length b, built in one pass over the data, and the
contractions the power method needs are estimated from the sketches with a
few FFTs of length b each, at a cost that depends neither on n nor on d^3.

Sketch
------
Each of the B sketches has its own hash h: [d] -> [b] and signs
s: [d] -> {+1, -1}, drawn once from the caller's Generator (uniformly and
independently per coordinate). With the *same* hash for the three modes (the
paper's symmetric setting), the sketch of T is::

    S_T[t] = sum_{a,b,c} s_a s_b s_c T_abc [h_a + h_b + h_c = t mod b],

the sum running over *all ordered* index triples. It is linear in T, and for a
rank-one term it is a circular convolution of three count sketches:
S(v (x) v (x) v) = IFFT(FFT(cs(v))^3), cs(v)[t] = sum_{h_l = t} s_l v_l.
The object stores S_T (B, b) and its real FFT.

Estimators (and why not the textbook ones)
------------------------------------------
Write z_l(f) = s_l exp(-2 pi i f h_l / b) and, for a vector u,
P1 = sum_l u_l z_l = FFT(cs(u)), P2 = sum_l u_l^2 z_l^2 (a count sketch of u^2
under the hash 2h with signs s^2 = 1), P3 = sum_l u_l^3 z_l^3. Two things
make the plain inner product <S_T, IFFT(P1^3)> a *biased* estimator of
T(u, u, u) when one hash serves all three modes:

1. Multiplicity. An entry T_abc with distinct a, b, c is met by the 6
   ordered triples of u's sketch that are permutations of (a, b, c); so the
   plain estimator counts off-diagonal entries 6 times, entries T_aac 3 times
   and T_aaa once. The query must instead be the *complete homogeneous*
   sketch H3 = sum_{l <= m <= n} u_l u_m u_n z_l z_m z_n
   = (P1^3 + 3 P1 P2 + 2 P3) / 6 (Newton's identities), which meets each
   multiset once.
2. Colliding pairs. Real signs square to one, so an entry T_aac (sketched at
   2h_a + h_c with sign s_c) also meets u_l^2 u_c whenever 2h_l = 2h_a
   (mod b) for l != a: probability q = gcd(2, b)/b for uniform hashes
   (2/b for the power-of-two sizes). This biases every estimate by O(q)
   times a trace of T, which for a Gaussian-score moment M3 (whose Hermite
   term has trace -(d+2) m) is not small: 16% at b = 64 in the tests.
   Adding r P1 P2 to the query and the constant ``-r (s.u)|u|^2`` to every
   bucket, with r = q / (1 - q), cancels it exactly in expectation. Why:
   averaged over the signs, the query terms meeting T_aac are the u_l^2 u_c,
   which share its bucket with probability 1 if l = a and q otherwise; so
   H3 + r P1 P2 contributes ``(1 + r) [(1 - q) u_a^2 u_c + q |u|^2 u_c]``, the
   constant contributes ``-r |u|^2 u_c``, and the sum is u_a^2 u_c. T_aaa works
   out the same way; entries with distinct indices only meet their own
   multiset. The tests check unbiasedness against dense tensors at b = 64
   and b = 63, and that each correction, left out, is detected.

So, per sketch, with F = FFT(S_T), F0 = F[0] = sum_t S_T[t]::

    T(u,u,u)  ~ <S_T, IFFT(H3 + r P1 P2)> - r F0 (s.u) |u|^2
    T(I,u,u)_i ~ (1/3) d/du_i of the above
              = (1/3) [ s_i C1[h_i] + u_i C2[2h_i] + u_i^2 s_i S_T[3h_i] ]
                - (r/3) F0 (|u|^2 s_i + 2 (s.u) u_i),
      C1 = IFFT(F conj(P1^2/2 + (1/2 + r) P2)),  C2 = (1 + 2r) IFFT(F conj(P1)),

all indices mod b: two forward and two inverse FFTs per vector and sketch,
and all d coordinates at once. T(I, I, theta) Omega and T(W, W, W) use the
polarised (bilinear, trilinear) forms of the same estimator, so every
estimate is exactly unbiased over the draw of the hashes, and
T(W,W,W)[a,b,c] = w_a . T(I, w_b, w_c) holds sketch by sketch. Each method
returns the median over the B sketches, entry by entry, as the paper does
(the median of unbiased estimates is robust but not itself unbiased).

Defaults
--------
b = 2**11 and B = 20 are the values Wang et al. use in their experiments;
they are kept as defaults for that reason only. docs/performance.md has the
measured residual-versus-b curve on their synthetic setting (0.32 at the
defaults, falling like b^-1/2): the sketched engine gives a rough answer,
not an exact one. b may be any integer >= 8; powers of two give the fastest
FFTs.
The error of one estimate falls like ``||T||_F |u|^2 / sqrt(b)``.
"""

import math
from itertools import combinations_with_replacement, permutations

import numpy as np
import scipy.fft as sfft

from ._kernels.contractions import first_acc
from ._kernels.sketch import count_sketch_acc, count_sketch_clear, cube_acc, dense_sketch_acc
from ._random import check_random_state
from ._validation import _as_real_array, _check_finite, check_int, check_labels, check_samples, check_vectors
from .operators import DenseTensor, TensorOperator

__all__ = ["TensorSketch", "draw_hashes", "DEFAULT_SIZE", "DEFAULT_N_SKETCHES"]

DEFAULT_SIZE = 2**11
"""Sketch length b of Wang et al. (NIPS 2015); kept as the default on their say-so."""

DEFAULT_N_SKETCHES = 20
"""Number B of independent sketches of Wang et al. (NIPS 2015)."""

MIN_SIZE = 8

ROWS = 16
"""Rows per block in :meth:`TensorSketch.from_data` (B * ROWS FFTs per call; measured
fastest among 8, 16, 64, 256 at b = 2**11, B = 20: the buffers stay in cache)."""


def draw_hashes(dim, b=DEFAULT_SIZE, B=DEFAULT_N_SKETCHES, random_state=None):
    """Draw the hashes and signs of B sketches.

    Drawn from one Generator (``random_state``): hashes first, then signs.

    Parameters
    ----------
    dim : int
        The tensor's dimension d, >= 1.
    b : int, default DEFAULT_SIZE
        The sketch length, >= 8.
    B : int, default DEFAULT_N_SKETCHES
        The number of sketches, >= 1.
    random_state : None, int or numpy.random.Generator
        The source of randomness.

    Returns
    -------
    hashes : numpy.ndarray of int64, shape (B, dim)
        Uniform in [0, b), independent across coordinates.
    signs : numpy.ndarray of float64, shape (B, dim)
        Entries in {-1, +1}.

    Raises
    ------
    ValueError, TypeError
        When a count is not an integer in its range, or as
        ``random_state`` allows (None, an int or a Generator).
    """
    dim = check_int(dim, "dim", 1)
    b = check_int(b, "b", MIN_SIZE)
    B = check_int(B, "B", 1)
    rng = check_random_state(random_state)
    hashes = rng.integers(0, b, size=(B, dim), dtype=np.int64)
    signs = 1.0 - 2.0 * rng.integers(0, 2, size=(B, dim)).astype(np.float64)
    return hashes, signs


def _half_weights(b):
    """Weights w (b//2 + 1,) with sum_t x_t y_t = (1/b) sum_f w_f Re(X_f conj(Y_f)) for real x, y."""
    w = np.full(b // 2 + 1, 2.0)
    w[0] = 1.0
    if b % 2 == 0:
        w[-1] = 1.0
    return w


def _gather(C, idx):
    """C (B, m, b), idx (B, d) -> C[j, i, idx[j, l]] of shape (B, m, d)."""
    B, m, _ = C.shape
    return np.take_along_axis(C, np.broadcast_to(idx[:, None, :], (B, m, idx.shape[1])), axis=2)


def _sym_triples(k):
    return tuple(np.array(p, dtype=np.intp) for p in zip(*combinations_with_replacement(range(k), 3)))


def _symmetrize3(R):
    """Exactly symmetric (..., k, k, k): each sorted triple gets the mean over its 6 permutations."""
    k = R.shape[-1]
    idx = _sym_triples(k)
    perms = list(permutations(idx))
    vals = sum(R[(Ellipsis,) + p] for p in perms) / 6.0
    out = np.empty_like(R)
    for p in perms:
        out[(Ellipsis,) + p] = vals
    return out


def _check_components(weights, vectors, dim=None):
    """weights (r,), vectors (dim, r) float64; one vector of length dim is one component."""
    V = _as_real_array(vectors, "vectors")
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] < 1 or V.shape[1] < 1 or (dim is not None and V.shape[0] != dim):
        want = "d" if dim is None else str(dim)
        raise ValueError(
            f"vectors: expected an array of shape ({want}, r) with one component per column "
            f"(or one vector of length {want}), got shape {np.shape(vectors)}"
        )
    V = np.ascontiguousarray(V, dtype=np.float64)
    _check_finite(V, "vectors")
    w = _as_real_array(weights, "weights")
    if w.ndim == 0:
        w = w.reshape(1)
    if w.ndim != 1 or w.shape[0] != V.shape[1]:
        raise ValueError(
            f"weights: expected {V.shape[1]} weights (one per column of vectors), got shape {np.shape(weights)}"
        )
    w = np.ascontiguousarray(w, dtype=np.float64)
    _check_finite(w, "weights")
    return w, V


def _resolve_hashes(dim, b, B, random_state, like):
    """(hashes, signs) drawn for (dim, b, B), or taken from the TensorSketch ``like``."""
    if like is None:
        return draw_hashes(dim, DEFAULT_SIZE if b is None else b,
                           DEFAULT_N_SKETCHES if B is None else B, random_state)
    if not isinstance(like, TensorSketch):
        raise TypeError(f"like: expected a TensorSketch whose hashes to reuse, got {type(like).__name__}")
    if like.dim != dim:
        raise ValueError(f"like: expected a sketch of dimension {dim}, got one of dimension {like.dim}")
    for name, value, have in (("b", b, like.size), ("B", B, like.n_sketches)):
        if value is not None and value != have:
            raise ValueError(f"{name}: got {value!r}, but like= has {name} = {have}; pass {name}=None to reuse it")
    if random_state is not None:
        raise ValueError("random_state: must be None when like= is given (its hashes are reused)")
    return like.hashes, like.signs


class TensorSketch(TensorOperator):
    """B independent TensorSketches of length b of a symmetric d x d x d tensor.

    Build it with :meth:`from_data` (the cross-moment M3 of standardised data,
    one pass), :meth:`from_components` (sum_j w_j v_j^(x)3) or
    :meth:`from_dense` (a dense symmetric array), or directly from sketches
    and hashes: ``TensorSketch(sketches, hashes, signs)`` with sketches (B, b)
    float64 (time domain, see the module docstring), hashes (B, d) integers in
    [0, b) and signs (B, d) in {-1, +1}. Every builder takes ``like=other`` to
    reuse another sketch's hashes, so two sketches can be compared or combined
    exactly.

    Defaults b = 2**11 and B = 20 are Wang et al.'s (NIPS 2015);
    docs/performance.md measures what they give (a residual of about 0.3 on
    the paper's d = 200 setting, falling like b^-1/2). The estimators are
    exactly unbiased over the hash draw provided hashes are uniform on [0, b)
    and independent across coordinates (as :func:`draw_hashes` makes them).

    Parameters
    ----------
    sketches : array_like, shape (B, b)
        The sketches in the time domain (see the module docstring), b >= 8.
    hashes : array_like of int, shape (B, d)
        Values in [0, b).
    signs : array_like, shape (B, d)
        Entries in {-1, +1}.

    Attributes
    ----------
    sketches : numpy.ndarray, shape (B, b)
        Read-only float64 copy of the sketches.
    hashes : numpy.ndarray, shape (B, d)
        Read-only int64 hashes.
    signs : numpy.ndarray, shape (B, d)
        Read-only float64 signs.
    dim : int
        d.
    size : int
        b.
    n_sketches : int
        B.

    Raises
    ------
    ValueError, TypeError
        When an argument has the wrong dtype, shape or values, naming it.
    """

    def __init__(self, sketches, hashes, signs):
        S = _as_real_array(sketches, "sketches")
        if S.ndim != 2 or S.shape[0] < 1 or S.shape[1] < MIN_SIZE:
            raise ValueError(
                f"sketches: expected a 2-D array of shape (B, b) with B >= 1 and b >= {MIN_SIZE}, got shape {S.shape}"
            )
        B, b = S.shape
        S = np.array(S, dtype=np.float64)
        _check_finite(S, "sketches")
        H = np.asarray(hashes)
        if H.dtype.kind not in "iu":
            raise TypeError(f"hashes: expected an integer array, got dtype {H.dtype}")
        if H.ndim != 2 or H.shape[0] != B or H.shape[1] < 1:
            raise ValueError(f"hashes: expected shape ({B}, d) (one row per sketch), got shape {H.shape}")
        if H.min() < 0 or H.max() >= b:
            raise ValueError(f"hashes: expected values in [0, {b}), got values in [{H.min()}, {H.max()}]")
        G = _as_real_array(signs, "signs")
        if G.shape != H.shape:
            raise ValueError(f"signs: expected shape {H.shape} (the shape of hashes), got shape {G.shape}")
        if not np.all((G == 1) | (G == -1)):
            raise ValueError("signs: expected entries in {-1, +1}, got other values")
        self._setup(S, np.array(H, dtype=np.int64), np.array(G, dtype=np.float64))

    @classmethod
    def _trusted(cls, sketches, hashes, signs):
        obj = cls.__new__(cls)
        obj._setup(sketches, hashes, signs)
        return obj

    def _setup(self, S, H, G):
        B, b = S.shape
        for arr in (S, H, G):
            arr.flags.writeable = False
        self.sketches, self.hashes, self.signs = S, H, G
        self.n_sketches, self.size, self.dim = B, b, H.shape[1]
        q = math.gcd(2, b) / b
        self._r = q / (1.0 - q)
        self._F = sfft.rfft(S, axis=1)
        self._F0 = self._F[:, 0].real.copy()
        self._h2 = (2 * H) % b
        self._h3 = (3 * H) % b
        self._ones = np.ones_like(G)
        self._diag = np.take_along_axis(S, self._h3, axis=1) * G  # s_l S_T[3 h_l]
        self._wFc = _half_weights(b) * np.conj(self._F)

    def __repr__(self):
        return f"TensorSketch(dim={self.dim}, b={self.size}, B={self.n_sketches})"

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_dense(cls, T, b=None, B=None, random_state=None, *, like=None):
        """Sketch a dense symmetric (d, d, d) array: O(B d^3) time.

        Parameters
        ----------
        T : array_like, shape (d, d, d)
            A real symmetric tensor, checked as by
            :class:`fastten.operators.DenseTensor`.
        b : int, optional
            Sketch length, >= 8; :data:`DEFAULT_SIZE` when None.
        B : int, optional
            Number of sketches; :data:`DEFAULT_N_SKETCHES` when None.
        random_state : None, int or numpy.random.Generator
            Draws the hashes.
        like : TensorSketch, optional
            Reuse this sketch's hashes and signs (then b, B and
            random_state must be None or agree with it).

        Returns
        -------
        TensorSketch
            The sketch of T.

        Raises
        ------
        ValueError, TypeError
            A bad argument, naming it.
        """
        T = DenseTensor(T).T
        hashes, signs = _resolve_hashes(T.shape[0], b, B, random_state, like)
        out = np.zeros((hashes.shape[0], cls._size_of(b, like)))
        dense_sketch_acc(T, hashes, signs, out)
        return cls._trusted(out, hashes, signs)

    @classmethod
    def from_components(cls, weights, vectors, b=None, B=None, random_state=None, *, like=None):
        """Sketch sum_j weights_j v_j^(x)3: O(B r (d + b log b)) time.

        Parameters
        ----------
        weights : array_like, shape (r,)
            Component weights.
        vectors : array_like, shape (d, r) or (d,)
            The components v_j, one per column, or one vector.
        b : int, optional
            Sketch length, >= 8; :data:`DEFAULT_SIZE` when None.
        B : int, optional
            Number of sketches; :data:`DEFAULT_N_SKETCHES` when None.
        random_state : None, int or numpy.random.Generator
            Draws the hashes.
        like : TensorSketch, optional
            Reuse this sketch's hashes and signs (then b, B and
            random_state must be None or agree with it).

        Returns
        -------
        TensorSketch
            The sketch of the components' tensor.

        Raises
        ------
        ValueError, TypeError
            A bad argument, naming it.
        """
        weights, V = _check_components(weights, vectors)
        hashes, signs = _resolve_hashes(V.shape[0], b, B, random_state, like)
        size = cls._size_of(b, like)
        return cls._trusted(_components_sketch(weights, V, hashes, signs, size), hashes, signs)

    @classmethod
    def from_data(cls, X, y, b=None, B=None, random_state=None, *, like=None, workers=1):
        """Sketch M3 = (1/n) sum_i y_i S3(x_i) of standardised data in one pass.

        S3(x) = x(x)x(x)x - (x_a d_bc + x_b d_ac + x_c d_ab). The rank-one
        terms cost one count sketch and one real FFT of length b per sample
        and sketch, O(n B (d + b log b)), in blocks of ``ROWS`` rows taken in
        order; the Hermite term is added in closed form,
        3 conv(cs(m), sum_a e_{2 h_a mod b}) with m = (1/n) sum_i y_i x_i.
        float32 data gets single-precision FFTs (about 1.7x faster; cubes are
        accumulated in complex128 either way). ``workers`` is passed to
        :mod:`scipy.fft`: each transform runs on one thread, so the result
        has the same bits for any value. Labels are used as given (centre
        them first to lower the variance).

        Parameters
        ----------
        X : array_like, shape (n, d)
            Standardised samples.
        y : array_like, shape (n,)
            Labels.
        b : int, optional
            Sketch length, >= 8; :data:`DEFAULT_SIZE` when None.
        B : int, optional
            Number of sketches; :data:`DEFAULT_N_SKETCHES` when None.
        random_state : None, int or numpy.random.Generator
            Draws the hashes.
        like : TensorSketch, optional
            Reuse this sketch's hashes and signs (then b, B and
            random_state must be None or agree with it).
        workers : int, default 1
            Threads for :mod:`scipy.fft`.

        Returns
        -------
        TensorSketch
            The sketch of M3.

        Raises
        ------
        ValueError, TypeError
            A bad argument, naming it.
        """
        X = check_samples(X)
        n, d = X.shape
        y = check_labels(y, n, X.dtype)
        workers = check_int(workers, "workers", 1)
        hashes, signs = _resolve_hashes(d, b, B, random_state, like)
        size = cls._size_of(b, like)
        nB = hashes.shape[0]
        acc = np.zeros((nB, size // 2 + 1), dtype=np.complex128)
        buf = np.zeros((nB, ROWS, size), dtype=X.dtype)
        m = np.zeros(d)
        for i0 in range(0, n, ROWS):  # the one pass over the data
            i1 = min(n, i0 + ROWS)
            Xb, yb = X[i0:i1], y[i0:i1]
            cs = buf if i1 - i0 == ROWS else np.zeros((nB, i1 - i0, size), dtype=X.dtype)
            count_sketch_acc(Xb, hashes, signs, cs)
            cube_acc(sfft.rfft(cs, axis=2, workers=workers), yb, acc)
            count_sketch_clear(hashes, cs)
            first_acc(Xb, yb, m)
        acc /= n
        m /= n
        P_m = _fft_count_sketch(m[None, :], hashes, signs, size)[:, 0]
        P_pairs = _fft_count_sketch(np.ones((1, d)), (2 * hashes) % size, np.ones_like(signs), size)[:, 0]
        acc -= 3.0 * P_m * P_pairs
        return cls._trusted(sfft.irfft(acc, n=size, axis=1), hashes, signs)

    @staticmethod
    def _size_of(b, like):
        if like is not None:
            return like.size
        return DEFAULT_SIZE if b is None else b

    # ------------------------------------------------------------ contractions

    def _fft_cs(self, rows, hashes, signs):
        return _fft_count_sketch(rows, hashes, signs, self.size)

    def _bilinear_each(self, V, W):
        """Per-sketch estimates of T(I, v_j, w_j), shape (B, m, d).

        V, W (d, m) float64; V may have one column (broadcast against W);
        V is W selects the quadratic (cheaper) path.
        """
        same = V is W
        VT = np.ascontiguousarray(V.T)
        WT = VT if same else np.ascontiguousarray(W.T)
        b, r, s = self.size, self._r, self.signs
        F = self._F[:, None, :]
        P1v = self._fft_cs(VT, self.hashes, s)
        P1w = P1v if same else self._fft_cs(WT, self.hashes, s)
        VW = VT * WT
        P2 = self._fft_cs(VW, self._h2, self._ones)
        # in place: these (B, m, b/2+1) complex arrays dominate the time
        Q = np.multiply(P1v, P1w)
        Q *= 0.5
        P2 *= 0.5 + r
        Q += P2
        C1 = sfft.irfft(np.multiply(F, np.conj(Q, out=Q), out=Q), n=b, axis=2)
        C2v = sfft.irfft(np.multiply(F, np.conj(P1v, out=P1v), out=P1v), n=b, axis=2)
        C2w = C2v if same else sfft.irfft(np.multiply(F, np.conj(P1w, out=P1w), out=P1w), n=b, axis=2)
        g = s[:, None, :] * _gather(C1, self.hashes)
        g += (0.5 + r) * (VT * _gather(C2w, self._h2) + WT * _gather(C2v, self._h2))
        g += VW * self._diag[:, None, :]
        vw = VW.sum(axis=1)  # (m,)
        sv = s @ V  # (B, mv)
        sw = sv if same else s @ W
        g -= (r * self._F0)[:, None, None] * (
            vw[None, :, None] * s[:, None, :] + sv[:, :, None] * WT[None] + sw[:, :, None] * VT[None]
        )
        g /= 3.0
        return g

    def _uuu_each(self, U):
        """Per-sketch estimates of T(u_j, u_j, u_j), shape (B, m)."""
        UT = np.ascontiguousarray(U.T)
        r = self._r
        P1 = self._fft_cs(UT, self.hashes, self.signs)
        P2 = self._fft_cs(UT * UT, self._h2, self._ones)
        Q = np.multiply(P1, P1)  # Q = P1 (P1^2 / 6 + (1/2 + r) P2), in place
        Q *= 1.0 / 6.0
        P2 *= 0.5 + r
        Q += P2
        Q *= P1
        # <S_T, IFFT(Q)> = (1/b) sum over the half spectrum of w_f Re(conj(F_f) Q_f)
        est = np.einsum("jf,jmf->jm", self._wFc, Q).real / self.size
        est += (UT ** 3 * self._diag[:, None, :]).sum(axis=2) / 3.0
        est -= r * self._F0[:, None] * (self.signs @ U) * (UT * UT).sum(axis=1)[None, :]
        return est

    def _project_each(self, W):
        """Per-sketch estimates of T(W, W, W), shape (B, k, k, k), exactly symmetric."""
        k = W.shape[1]
        pb, pc = np.triu_indices(k)
        G = self._bilinear_each(np.ascontiguousarray(W[:, pb]), np.ascontiguousarray(W[:, pc]))
        Rp = np.einsum("jpd,da->jap", G, W)
        R = np.empty((self.n_sketches, k, k, k))
        R[:, :, pb, pc] = Rp
        R[:, :, pc, pb] = Rp
        return _symmetrize3(R)

    def _vectors(self, U, name):
        return check_vectors(U, self.dim, np.float64, name)

    def iuu(self, U):
        """Estimate the columns T(I, u_j, u_j): median over the B sketches.

        Parameters
        ----------
        U : array_like, shape (d, m) or (d,)
            The vectors u_j, one per column, or one vector.

        Returns
        -------
        numpy.ndarray, shape (d, m) or (d,)
            The median estimate, entry by entry.

        Raises
        ------
        ValueError, TypeError
            When U is not a finite real array with d rows.
        """
        U, single = self._vectors(U, "U")
        out = np.ascontiguousarray(np.median(self._bilinear_each(U, U), axis=0).T)
        return out[:, 0] if single else out

    def uuu(self, U):
        """Estimate T(u_j, u_j, u_j): median over the B sketches.

        Parameters
        ----------
        U : array_like, shape (d, m) or (d,)
            The vectors u_j, one per column, or one vector.

        Returns
        -------
        numpy.ndarray, shape (m,), or a float
            The median estimate; a float for one vector.

        Raises
        ------
        ValueError, TypeError
            When U is not a finite real array with d rows.
        """
        U, single = self._vectors(U, "U")
        out = np.median(self._uuu_each(U), axis=0)
        return out[0] if single else out

    def slice_dot(self, theta, Omega):
        """Estimate T(I, I, theta) Omega: median over the B sketches.

        Parameters
        ----------
        theta : array_like, shape (d,)
            The direction of the slice.
        Omega : array_like, shape (d, m) or (d,)
            The vectors to multiply, one per column, or one vector.

        Returns
        -------
        numpy.ndarray, shape (d, m) or (d,)
            The median estimate, entry by entry.

        Raises
        ------
        ValueError, TypeError
            When an argument is not a finite real array with d rows, or
            theta holds more than one vector.
        """
        theta, _ = self._vectors(theta, "theta")
        if theta.shape[1] != 1:
            raise ValueError(f"theta: expected one vector of length {self.dim}, got shape {theta.shape}")
        Omega, single = self._vectors(Omega, "Omega")
        out = np.ascontiguousarray(np.median(self._bilinear_each(theta, Omega), axis=0).T)
        return out[:, 0] if single else out

    def project(self, W):
        """Estimate T(W, W, W): median over the B sketches, entry by entry.

        Costs k(k+1)/2 bilinear estimates (3 FFTs and 3 inverse FFTs each,
        per sketch).

        Parameters
        ----------
        W : array_like, shape (d, k)
            The projection, one direction per column.

        Returns
        -------
        numpy.ndarray, shape (k, k, k)
            The median estimate, exactly symmetric.

        Raises
        ------
        ValueError, TypeError
            When W is not a finite real array with d rows.
        """
        W, _ = self._vectors(W, "W")
        return np.median(self._project_each(W), axis=0)

    def deflated(self, weights, vectors):
        """Sketch T - sum_j weights_j v_j^(x)3 on the same hashes.

        The subtraction is exact on the sketch (it is linear in T).

        Parameters
        ----------
        weights : array_like, shape (r,)
            Component weights.
        vectors : array_like, shape (d, r) or (d,)
            The components v_j, one per column, or one vector.

        Returns
        -------
        TensorSketch
            A new sketch; this one is left unchanged.

        Raises
        ------
        ValueError, TypeError
            When the components are not finite real arrays of matching
            shapes.
        """
        weights, V = _check_components(weights, vectors, self.dim)
        D = _components_sketch(weights, V, self.hashes, self.signs, self.size)
        return TensorSketch._trusted(self.sketches - D, self.hashes, self.signs)


def _fft_count_sketch(rows, hashes, signs, b):
    """FFT (B, m, b//2 + 1) of the count sketches of rows (m, d) under each (hash, sign) pair."""
    cs = np.zeros((hashes.shape[0], rows.shape[0], b))
    count_sketch_acc(np.ascontiguousarray(rows), hashes, signs, cs)
    return sfft.rfft(cs, axis=2)


def _components_sketch(weights, V, hashes, signs, b):
    """Time-domain sketch (B, b) of sum_j weights_j v_j^(x)3, V (d, r)."""
    P = _fft_count_sketch(V.T, hashes, signs, b)
    acc = np.zeros((hashes.shape[0], b // 2 + 1), dtype=np.complex128)
    cube_acc(P, weights, acc)
    return sfft.irfft(acc, n=b, axis=1)
