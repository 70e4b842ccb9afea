"""Gauss-Newton products for a two-layer network, one pass over the data.

The network has m outputs: F = sigma(X A1 + b1) A2 + b2 with A2 (k x m).
With S = sigma(Z) and D = sigma'(Z) (n x k, from the current network), the
product of J^T J with a direction v = (V_A, v_b1, V_A2, v_b2) is

    U = ((X V_A + v_b1) * D) A2 + S V_A2 + v_b2          (n x m)
    W = (U A2^T) * D                                       (n x k)
    J^T J v = (X^T W, 1^T W, S^T U, 1^T U)

done here per block of rows as two BLAS products (X_b V_A, then X_b^T W)
with the row-wise work in between, like the moment kernels: fixed blocks
added in row order, so the bits do not depend on the thread count.

For the cross-entropy of softmax logits F the generalised Gauss-Newton
matrix J^T H J weighs each row by H_i = diag(p_i) - p_i p_i^T (p_i the
row's probabilities): ``gn_softmax_product_acc`` replaces each row of U by
p * (U - p.U) before the back-product, and is otherwise the same loop
(``_gn_rows``, compiled once for both).
"""

import numpy as np

from ._jit import kernel
from .contractions import BLOCK


GN_BLOCK_ENTRIES = 1 << 16
"""Entries per block of rows (256 KB in float32): small enough that a block
stays in cache between its two products. ``python -m bench gn`` measured
(one thread, float32, n=1e5, k=10, minimum of 15 runs) at d=1000 104 ms
per product with blocks of 65 rows (2^16 entries) against 161 ms with 262
rows (2^18), at d=200 36 against 41 ms, at d=50 the same 16 ms."""


def gn_block(d):
    """Rows per block: BLOCK, or fewer for wide X (GN_BLOCK_ENTRIES)."""
    return max(64, min(BLOCK, GN_BLOCK_ENTRIES // max(d, 1)))


@kernel
def gn_product_acc(X, D, S, A2, VA, vb1, VA2, vb2, outA, outb1, outA2, outb2, block):
    """Adds the sums of J^T J v (not divided by n) into outA (d, k),
    outb1 (k,), outA2 (k, m) and outb2 (m,), in blocks of ``block`` rows
    (``gn_block``)."""
    _gn_rows(X, D, S, A2, np.empty((0, A2.shape[1])), False, VA, vb1, VA2, vb2, outA, outb1, outA2, outb2, block)


@kernel
def gn_softmax_product_acc(X, D, S, A2, P, VA, vb1, VA2, vb2, outA, outb1, outA2, outb2, block):
    """Adds the sums of J^T H J v (not divided by n), H the block diagonal
    of diag(P[i]) - P[i] P[i]^T over the rows (P (n, m): the softmax
    probabilities), into outA (d, k), outb1 (k,), outA2 (k, m) and
    outb2 (m,)."""
    _gn_rows(X, D, S, A2, P, True, VA, vb1, VA2, vb2, outA, outb1, outA2, outb2, block)


@kernel
def _gn_rows(X, D, S, A2, P, weighted, VA, vb1, VA2, vb2, outA, outb1, outA2, outb2, block):
    """The loop of both products: U = J v row by row, weighted by H_i
    when ``weighted``, then J^T U."""
    n, d = X.shape
    k, m = A2.shape
    B = np.empty((block, k), dtype=X.dtype)
    tmp = np.empty((d, k), dtype=X.dtype)
    u = np.empty(m)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        Bb = B[: i1 - i0]
        np.dot(X[i0:i1], VA, Bb)
        for i in range(i1 - i0):
            r = i0 + i
            for c in range(m):
                u[c] = vb2[c]
            for j in range(k):
                q = (Bb[i, j] + vb1[j]) * D[r, j]
                s = S[r, j]
                for c in range(m):
                    u[c] += q * A2[j, c] + s * VA2[j, c]
            if weighted:
                pu = 0.0
                for c in range(m):
                    pu += P[r, c] * u[c]
                for c in range(m):
                    u[c] = P[r, c] * (u[c] - pu)
            for c in range(m):
                outb2[c] += u[c]
            for j in range(k):
                t = 0.0
                s = S[r, j]
                for c in range(m):
                    t += u[c] * A2[j, c]
                    outA2[j, c] += s * u[c]
                w = t * D[r, j]
                Bb[i, j] = w
                outb1[j] += w
        np.dot(X[i0:i1].T, Bb, tmp)
        outA += tmp
