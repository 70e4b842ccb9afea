"""Implicit contractions of the Gaussian-score cross-moments E[y S_m(x)].

For standardised inputs the score functions are Hermite tensors:

    S2(x) = x x^T - I
    S3(x) = x(x)3 - sym(x (x) I)                      (3 terms)
    S4(x) = x(x)4 - sym(x (x) x (x) I) + sym(I (x) I) (6 and 3 terms)

Every kernel here contracts sum_i y_i S_m(x_i) with a batch of vectors without
forming anything of size d^2 (unless the output is) or d^3. The heavy work of
each is two matrix products on a fixed block of rows, P = X_b U and X_b^T G,
done by BLAS; the per-sample Hermite weights G in between are a Numba loop.

Conventions shared by all kernels:

* inputs first, preallocated float64 output last; the kernel *adds* the sum
  over its rows to ``out`` (so data can be streamed through it in chunks);
  sums, not means: the caller divides by the number of samples;
* rows are taken in fixed blocks of ``BLOCK`` and block results are added in
  order, so the result does not depend on the thread count (BLAS splits a
  product over its output entries, never over the summed index);
* X, y and the contraction vectors share one floating dtype (float32 or
  float64); per-block products run in that dtype and are accumulated across
  blocks in float64.
"""

import numpy as np

from ._jit import kernel

BLOCK = 2048


@kernel
def first_acc(X, y, out):
    """out (d,) += sum_i y_i x_i."""
    n = X.shape[0]
    tmp = np.empty(X.shape[1], dtype=X.dtype)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        np.dot(X[i0:i1].T, y[i0:i1], tmp)
        out += tmp


@kernel
def s2_dot_acc(X, y, Omega, out):
    """out (d, m) += sum_i y_i (x_i x_i^T - I) Omega."""
    n, d = X.shape
    m = Omega.shape[1]
    P = np.empty((BLOCK, m), dtype=X.dtype)
    tmp = np.empty((d, m), dtype=X.dtype)
    ysum = 0.0
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], Omega, Pb)
        for i in range(i1 - i0):
            yi = y[i0 + i]
            ysum += yi
            for j in range(m):
                Pb[i, j] *= yi
        np.dot(X[i0:i1].T, Pb, tmp)
        out += tmp
    for a in range(d):
        for j in range(m):
            out[a, j] -= ysum * Omega[a, j]


@kernel
def _sq_norms(U):
    m = U.shape[1]
    nu = np.zeros(m)
    for a in range(U.shape[0]):
        for j in range(m):
            nu[j] += np.float64(U[a, j]) * U[a, j]
    return nu


@kernel
def t3_iuu_acc(X, y, U, out):
    """out[:, j] (d, m) += sum_i y_i S3(x_i)(I, u_j, u_j).

    S3(x)(I, u, u) = ((x.u)^2 - |u|^2) x - 2 (x.u) u.
    """
    n, d = X.shape
    m = U.shape[1]
    nu = _sq_norms(U)
    s1 = np.zeros(m)
    P = np.empty((BLOCK, m), dtype=X.dtype)
    tmp = np.empty((d, m), dtype=X.dtype)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], U, Pb)
        for i in range(i1 - i0):
            yi = np.float64(y[i0 + i])
            for j in range(m):
                p = np.float64(Pb[i, j])
                s1[j] += yi * p
                Pb[i, j] = yi * (p * p - nu[j])
        np.dot(X[i0:i1].T, Pb, tmp)
        out += tmp
    for a in range(d):
        for j in range(m):
            out[a, j] -= 2.0 * s1[j] * U[a, j]


@kernel
def t3_uuu_acc(X, y, U, out):
    """out[j] (m,) += sum_i y_i S3(x_i)(u_j, u_j, u_j) = y ((x.u)^3 - 3|u|^2 (x.u))."""
    n = X.shape[0]
    m = U.shape[1]
    nu = _sq_norms(U)
    P = np.empty((BLOCK, m), dtype=X.dtype)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], U, Pb)
        for i in range(i1 - i0):
            yi = np.float64(y[i0 + i])
            for j in range(m):
                p = np.float64(Pb[i, j])
                out[j] += yi * p * (p * p - 3.0 * nu[j])


@kernel
def t3_slice_dot_acc(X, y, theta, Omega, out):
    """out (d, m) += sum_i y_i S3(x_i)(I, I, theta) Omega.

    S3(x)(I, I, t) Omega = (x.t) x (x^T Omega) - (x.t) Omega - x (t^T Omega)
                           - t (x^T Omega).
    One product X_b [Omega | theta] gives x^T Omega and x.t; the last column
    of the weights carries y, so X_b^T G also yields sum_i y_i x_i.
    """
    n, d = X.shape
    m = Omega.shape[1]
    V = np.empty((d, m + 1), dtype=X.dtype)
    V[:, :m] = Omega
    V[:, m] = theta
    P = np.empty((BLOCK, m + 1), dtype=X.dtype)
    tmp = np.empty((d, m + 1), dtype=X.dtype)
    yx = np.zeros(d)
    yq = 0.0
    yp = np.zeros(m)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], V, Pb)
        for i in range(i1 - i0):
            yi = np.float64(y[i0 + i])
            q = np.float64(Pb[i, m])
            yq += yi * q
            for j in range(m):
                p = np.float64(Pb[i, j])
                yp[j] += yi * p
                Pb[i, j] = yi * q * p
            Pb[i, m] = yi
        np.dot(X[i0:i1].T, Pb, tmp)
        for a in range(d):
            for j in range(m):
                out[a, j] += tmp[a, j]
            yx[a] += tmp[a, m]
    tO = np.zeros(m)
    for a in range(d):
        for j in range(m):
            tO[j] += np.float64(theta[a]) * Omega[a, j]
    for a in range(d):
        for j in range(m):
            out[a, j] -= yq * Omega[a, j] + yx[a] * tO[j] + theta[a] * yp[j]


@kernel
def t4_iuuu_acc(X, y, U, out):
    """out[:, j] (d, m) += sum_i y_i S4(x_i)(I, u_j, u_j, u_j).

    S4(x)(I, u, u, u) = ((x.u)^3 - 3|u|^2 (x.u)) x - 3 (x.u)^2 u + 3 |u|^2 u.
    """
    n, d = X.shape
    m = U.shape[1]
    nu = _sq_norms(U)
    s2 = np.zeros(m)
    s0 = 0.0
    P = np.empty((BLOCK, m), dtype=X.dtype)
    tmp = np.empty((d, m), dtype=X.dtype)
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], U, Pb)
        for i in range(i1 - i0):
            yi = np.float64(y[i0 + i])
            s0 += yi
            for j in range(m):
                p = np.float64(Pb[i, j])
                s2[j] += yi * p * p
                Pb[i, j] = yi * p * (p * p - 3.0 * nu[j])
        np.dot(X[i0:i1].T, Pb, tmp)
        out += tmp
    for a in range(d):
        for j in range(m):
            out[a, j] += 3.0 * (nu[j] * s0 - s2[j]) * U[a, j]
