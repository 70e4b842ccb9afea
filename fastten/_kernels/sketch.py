"""Count-sketch kernels for the sketched tensor operator (:mod:`fastten.sketch`).

A count sketch of u in R^d into b buckets, for a hash h: [d] -> [b] and signs
s: [d] -> {+1, -1}, is cs(u)[t] = sum_{l : h(l) = t} s(l) u_l. The kernels
here accumulate count sketches of many rows under B independent (h, s) pairs,
the cubes of their Fourier transforms weighted by labels, and the sketch of
a dense third-order tensor. The FFTs themselves run in NumPy/SciPy (Numba
has none); the caller passes the transformed arrays back in.

Conventions are those of :mod:`fastten._kernels.contractions`: inputs first,
the preallocated output last, the kernel *adds* into ``out``; no randomness
(hashes and signs are inputs); rows are taken in order, so the result does
not depend on any thread count. Each kernel is its own serial twin.
"""

import numpy as np

from ._jit import kernel


@kernel
def count_sketch_acc(X, hashes, signs, out):
    """out[j, i, hashes[j, l]] += signs[j, l] * X[i, l].

    X (r, d) float32 or float64 rows; hashes (B, d) integers in [0, b);
    signs (B, d) float64; out (B, r, b) float32 or float64 (sums of the few
    colliding coordinates are formed in out's dtype).
    """
    r, d = X.shape
    B = hashes.shape[0]
    for j in range(B):
        for i in range(r):
            for l in range(d):
                out[j, i, hashes[j, l]] += signs[j, l] * X[i, l]


@kernel
def count_sketch_clear(hashes, out):
    """out[j, i, hashes[j, l]] = 0 for all j, i, l: resets a buffer filled by
    :func:`count_sketch_acc` in O(B r d) instead of O(B r b)."""
    B, r, _ = out.shape
    d = hashes.shape[1]
    for j in range(B):
        for i in range(r):
            for l in range(d):
                out[j, i, hashes[j, l]] = 0.0


@kernel
def cube_acc(P, y, out):
    """out[j, f] += sum_i y_i P[j, i, f]^3, rows i in order.

    P (B, r, nf) complex64 or complex128 (Fourier transforms of count
    sketches; the cube is formed in P's precision); y (r,) real; out (B, nf)
    complex128.
    """
    B, r, nf = P.shape
    for j in range(B):
        for i in range(r):
            yi = np.float64(y[i])
            for f in range(nf):
                p = P[j, i, f]
                out[j, f] += yi * (p * p * p)


@kernel
def dense_sketch_acc(T, hashes, signs, out):
    """out[j, (h_a + h_b + h_c) mod b] += s_a s_b s_c T[a, b, c] over all
    ordered index triples, for each sketch j = 0..B-1 (h = hashes[j],
    s = signs[j]).

    T (d, d, d) float64; hashes (B, d) integers in [0, b); signs (B, d)
    float64; out (B, b) float64. O(B d^3) time: only for tensors handed in
    densely.
    """
    d = T.shape[0]
    B, b = out.shape
    for j in range(B):
        for a in range(d):
            ha = hashes[j, a]
            sa = signs[j, a]
            for c2 in range(d):
                hab = ha + hashes[j, c2]
                sab = sa * signs[j, c2]
                for c3 in range(d):
                    t = (hab + hashes[j, c3]) % b
                    out[j, t] += sab * signs[j, c3] * T[a, c2, c3]
