"""Gauss-Newton products for a two-layer network, one pass over the data.

With G = sigma'(Z) * a2 and S = sigma(Z) (n x k, from the current network),
the product of J^T J with a direction v = (V_A, v_b1, v_a2, v_b2) is

    u_i = sum_j ((x_i . V_A[:, j]) + v_b1_j) G_ij + S_i . v_a2 + v_b2
    J^T J v = (X^T (u G), 1^T (u G), S^T u, 1^T u)

done here per block of rows as two BLAS products (X_b V_A, then X_b^T (u G))
with the weights in between, like the moment kernels: fixed blocks added in
row order, so the bits do not depend on the thread count.
"""

import numpy as np

from ._jit import kernel
from .contractions import BLOCK


@kernel
def gn_product_acc(X, G, S, VA, vb1, va2, vb2, outA, outb1, outa2, outb2):
    """Adds the sums of J^T J v (not divided by n) into outA (d, k), outb1,
    outa2 (k,) and outb2 (1,)."""
    n, d = X.shape
    k = G.shape[1]
    P = np.empty((BLOCK, k))
    tmp = np.empty((d, k))
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        Pb = P[: i1 - i0]
        np.dot(X[i0:i1], VA, Pb)
        for i in range(i1 - i0):
            u = vb2
            for j in range(k):
                u += (Pb[i, j] + vb1[j]) * G[i0 + i, j] + S[i0 + i, j] * va2[j]
            outb2[0] += u
            for j in range(k):
                w = u * G[i0 + i, j]
                Pb[i, j] = w
                outb1[j] += w
                outa2[j] += u * S[i0 + i, j]
        np.dot(X[i0:i1].T, Pb, tmp)
        outA += tmp
