"""Implicit contractions of E[y S_m(x)] for a product-density score.

For inputs with density p(x) = prod_a p_a(x_a) and psi_a = -(log p_a)', the
score functions S_m(x) = (-1)^m grad^m p(x) / p(x) are

    S1(x) = psi
    S2(x) = psi psi^T - diag(psi')
    S3(x) = psi(x)3 - sym(diag(psi') (x) psi) + diag3(psi'')      (3 terms)

with psi, psi', psi'' evaluated at x coordinatewise. A data set is given by
three (n, d) arrays Psi, dPsi, d2Psi (row i: psi(x_i), psi'(x_i),
psi''(x_i)); for the Gaussian (Psi = X, dPsi = 1, d2Psi = 0) these are the
Hermite tensors of :mod:`fastten._kernels.contractions`. Writing
p = psi.u, q = psi'.(u*u) and r = psi''.(u*u*u) (elementwise powers of u),

    S2(u, u)       = p^2 - q
    S3(u, u, u)    = p^3 - 3 q p + r
    S3(I, u, u)    = (p^2 - q) psi - 2 p (psi' * u) + psi'' * u * u.

The conventions are those of :mod:`fastten._kernels.contractions`: inputs
first, preallocated float64 output(s) last, the kernel *adds* its sum over
rows (sums, not means), rows in fixed blocks of ``BLOCK`` added in row order
(the same bits on any thread count), the heavy work in BLAS products on a
block (Psi_b U and Psi_b^T G) and the per-sample weights G in a Numba loop.
All arrays are float64. Nothing of size d^2 (unless the output is) or d^3 is
formed.
"""

import numpy as np

from ._jit import kernel
from .contractions import BLOCK
from .projected import sym_packed_acc


@kernel
def _add(dst, src):
    """dst += src for 2-D arrays (a loop: array expressions compile slowly)."""
    for a in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[a, j] += src[a, j]


@kernel
def _add1(dst, src):
    """dst += src for 1-D arrays."""
    for a in range(dst.shape[0]):
        dst[a] += src[a]


@kernel
def _powers(U):
    """(U * U, U * U * U), elementwise."""
    U2 = np.empty(U.shape)
    U3 = np.empty(U.shape)
    for a in range(U.shape[0]):
        for j in range(U.shape[1]):
            U2[a, j] = U[a, j] * U[a, j]
            U3[a, j] = U2[a, j] * U[a, j]
    return U2, U3


@kernel
def _uuu_rows(Psi, dPsi, d2Psi, U, U2, U3, P, Q):
    """P (rows, m) <- S3(x_i)(u_j, u_j, u_j) for the rows of Psi, dPsi, d2Psi
    (P and Q are scratch of the same shape; Q is overwritten)."""
    np.dot(Psi, U, P)
    np.dot(dPsi, U2, Q)
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            p = P[i, j]
            P[i, j] = p * (p * p - 3.0 * Q[i, j])
    np.dot(d2Psi, U3, Q)
    _add(P, Q)


@kernel
def _uu_rows(Psi, dPsi, U, U2, P, Q):
    """P (rows, m) <- S2(x_i)(u_j, u_j) for the rows of Psi, dPsi (Q is scratch)."""
    np.dot(Psi, U, P)
    np.dot(dPsi, U2, Q)
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            P[i, j] = P[i, j] * P[i, j] - Q[i, j]


@kernel
def _uuu_pass(Psi, dPsi, d2Psi, y, U, per_sample, rows, total):
    """S3(x_i)(u_j, u_j, u_j) block by block: added to rows (n, m) when
    ``per_sample`` (y unused), else summed with weights y into total (m,)."""
    n = Psi.shape[0]
    m = U.shape[1]
    U2, U3 = _powers(U)
    P = np.empty((BLOCK, m))
    Q = np.empty((BLOCK, m))
    tmp = np.empty(m)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        _uuu_rows(Psi[i0:i1], dPsi[i0:i1], d2Psi[i0:i1], U, U2, U3, Pb, Q[: i1 - i0])
        if per_sample:
            _add(rows[i0:i1], Pb)
        else:
            np.dot(Pb.T, y[i0:i1], tmp)
            _add1(total, tmp)


@kernel
def score_s3_uuu_samples(Psi, dPsi, d2Psi, U, out):
    """out (n, m) += S3(x_i)(u_j, u_j, u_j), one row per sample (no labels)."""
    _uuu_pass(Psi, dPsi, d2Psi, np.empty(0), U, True, out, np.empty(0))


@kernel
def score_t3_uuu_acc(Psi, dPsi, d2Psi, y, U, out):
    """out (m,) += sum_i y_i S3(x_i)(u_j, u_j, u_j)."""
    _uuu_pass(Psi, dPsi, d2Psi, y, U, False, np.empty((0, 0)), out)


@kernel
def score_s2_uu_samples(Psi, dPsi, U, out):
    """out (n, m) += S2(x_i)(u_j, u_j), one row per sample (no labels)."""
    n = Psi.shape[0]
    m = U.shape[1]
    U2 = _powers(U)[0]
    P = np.empty((BLOCK, m))
    Q = np.empty((BLOCK, m))
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        _uu_rows(Psi[i0:i1], dPsi[i0:i1], U, U2, Pb, Q[: i1 - i0])
        _add(out[i0:i1], Pb)


@kernel
def _two_sided_acc(Psi, dPsi, d2Psi, y, V, W, sliced, out, acc, r):
    """The pass of iuu and slice_dot: per block A = Psi_b V and B = dPsi_b W
    (m = W.shape[1] columns), per-sample weights turning B into G1 and A
    into G2, then out (d, m) += Psi_b^T G1, acc += dPsi_b^T G2 and
    r (d,) += d2Psi_b^T y.

    iuu (``sliced`` False; V = U, W = U * U; p = A, q = B):
        G1 = y (p^2 - q), G2 = y p.
    slice_dot (True; V = [Omega | theta], W = theta * Omega; p = A[:, :m],
    c = A[:, m], s = B): G1 = y (c p - s), G2 = [y p | y c].
    """
    n, d = Psi.shape
    m = W.shape[1]
    A = np.empty((BLOCK, V.shape[1]))
    B = np.empty((BLOCK, m))
    tmp = np.empty((d, m))
    tmp_acc = np.empty(acc.shape)
    tmp_y = np.empty(d)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Ab = A[: i1 - i0]
        Bb = B[: i1 - i0]
        yb = y[i0:i1]
        np.dot(Psi[i0:i1], V, Ab)
        np.dot(dPsi[i0:i1], W, Bb)
        for i in range(i1 - i0):
            yi = yb[i]
            c = 0.0
            if sliced:
                c = Ab[i, m]
                Ab[i, m] = yi * c
            for j in range(m):
                p = Ab[i, j]
                Bb[i, j] = yi * (c * p - Bb[i, j]) if sliced else yi * (p * p - Bb[i, j])
                Ab[i, j] = yi * p
        np.dot(Psi[i0:i1].T, Bb, tmp)
        _add(out, tmp)
        np.dot(dPsi[i0:i1].T, Ab, tmp_acc)
        _add(acc, tmp_acc)
        np.dot(d2Psi[i0:i1].T, yb, tmp_y)
        _add1(r, tmp_y)


@kernel
def score_t3_iuu_acc(Psi, dPsi, d2Psi, y, U, out):
    """out[:, j] (d, m) += sum_i y_i S3(x_i)(I, u_j, u_j).

    With G1 = y (p^2 - q) and G2 = y p per sample: Psi^T G1
    - 2 u * (dPsi^T G2) + u * u * (d2Psi^T y).
    """
    d, m = U.shape
    acc = np.zeros((d, m))  # sum_i y_i p_i psi'_i
    r = np.zeros(d)         # sum_i y_i psi''_i
    _two_sided_acc(Psi, dPsi, d2Psi, y, U, _powers(U)[0], False, out, acc, r)
    for a in range(d):
        for j in range(m):
            out[a, j] += U[a, j] * (U[a, j] * r[a] - 2.0 * acc[a, j])


@kernel
def score_t3_slice_dot_acc(Psi, dPsi, d2Psi, y, theta, Omega, out):
    """out (d, m) += sum_i y_i S3(x_i)(I, I, theta) Omega.

    With c = psi.theta, p_j = psi.omega_j and s_j = psi'.(theta * omega_j):
    S3(I, I, theta) omega_j = psi (c p_j - s_j) - c psi' * omega_j
    - p_j psi' * theta + psi'' * theta * omega_j. One product Psi_b [Omega |
    theta] gives p and c, one dPsi_b (theta * Omega) gives s; then Psi_b^T G
    and dPsi_b^T [y p | y c].
    """
    d, m = Omega.shape
    V = np.empty((d, m + 1))
    TO = np.empty((d, m))
    for a in range(d):
        for j in range(m):
            V[a, j] = Omega[a, j]
            TO[a, j] = theta[a] * Omega[a, j]
        V[a, m] = theta[a]
    acc = np.zeros((d, m + 1))  # dPsi^T [y p | y c]
    r = np.zeros(d)             # sum_i y_i psi''_i
    _two_sided_acc(Psi, dPsi, d2Psi, y, V, TO, True, out, acc, r)
    for a in range(d):
        for j in range(m):
            out[a, j] += theta[a] * (Omega[a, j] * r[a] - acc[a, j]) - Omega[a, j] * acc[a, m]


@kernel
def _scaled_back_acc(Back, Diag, y, Z, tmp, tmp_y, out, r):
    """For one block: Z <- y Z (row-wise), out += Back^T Z, r += Diag^T y."""
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] *= y[i]
    np.dot(Back.T, Z, tmp)
    _add(out, tmp)
    np.dot(Diag.T, y, tmp_y)
    _add1(r, tmp_y)


@kernel
def score_s2_dot_acc(Psi, dPsi, y, Omega, out):
    """out (d, m) += sum_i y_i (psi_i psi_i^T - diag(psi'_i)) Omega
    = Psi^T (y * Psi Omega) - (dPsi^T y) * Omega."""
    n, d = Psi.shape
    m = Omega.shape[1]
    P = np.empty((BLOCK, m))
    tmp = np.empty((d, m))
    tmp_y = np.empty(d)
    w = np.zeros(d)  # sum_i y_i psi'_i
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(Psi[i0:i1], Omega, Pb)
        _scaled_back_acc(Psi[i0:i1], dPsi[i0:i1], y[i0:i1], Pb, tmp, tmp_y, out, w)
    for a in range(d):
        for j in range(m):
            out[a, j] -= w[a] * Omega[a, j]


@kernel
def score_t3_project_acc(Psi, dPsi, d2Psi, y, W, tuples, offsets, tile_start, packed, C, r):
    """The sums that make M3(W, W, W), in one pass (W is (d, k)):

    packed (packed,) += sum_i y_i z_i^(x)3 with z_i = W^T psi_i, in the
    packed storage of :func:`fastten._kernels.projected.sym_packed_acc` (the
    plan is its ``packed_plan(k, 3)``); C (d, k) += sum_i y_i psi'_i z_i^T;
    r (d,) += sum_i y_i psi''_i. The caller assembles
    M3(W, W, W) = packed - sym(W^T diag(C[:, c]) W) + sum_a r_a w_a^(x)3.
    """
    n, d = Psi.shape
    k = W.shape[1]
    Z = np.empty((BLOCK, k))
    tmp = np.empty((d, k))
    tmp_y = np.empty(d)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Zb = Z[: i1 - i0]
        np.dot(Psi[i0:i1], W, Zb)
        sym_packed_acc(Zb, y[i0:i1], tuples, offsets, tile_start, packed)
        _scaled_back_acc(dPsi[i0:i1], d2Psi[i0:i1], y[i0:i1], Zb, tmp, tmp_y, C, r)
