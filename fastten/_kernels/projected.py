"""Symmetric power sums of projected samples, in packed storage.

For Z = X W (n x k) the kernel here accumulates sum_i y_i z_i^(x)m (m = 3 or
4) keeping only the entries whose indices are sorted, in lexicographic order:
k(k+1)(k+2)/6 numbers for m = 3 instead of k^3, and k(k+1)(k+2)(k+3)/24 for
m = 4 instead of k^4. ``fastten.moments`` adds the Hermite corrections and
unpacks.

Each packed entry (t, e) is a sorted (m-1)-tuple t followed by e >= t[-1].
The tuples are grouped by the tile of their last index; for a block of rows
and one tile the kernel forms the weights y_i prod_r z_{i,t_r} (tuples x rows)
and multiplies them by the columns of Z from the tile's start on, one small
matrix product. Only the columns e >= t[-1] are kept, so the work is within
a factor (1 + TILE/k) or so of the packed count, at matrix-product speed.
Blocks are reduced in row order: the result does not depend on the thread
count. The index tables come from :func:`packed_plan`.
"""

import numpy as np

from ._jit import kernel

ROWS = 256
TILE = 4


@kernel
def sym_packed_acc(Z, y, tuples, offsets, tile_start, out):
    """out (packed,) += sum_i y_i z_i^(x)m, for the plan (tuples, offsets,
    tile_start) of :func:`packed_plan` with m - 1 = tuples.shape[1] >= 2."""
    n, k = Z.shape
    r = tuples.shape[1]
    n_tiles = tile_start.shape[0] - 1
    max_rows = 0
    for t in range(n_tiles):
        max_rows = max(max_rows, tile_start[t + 1] - tile_start[t])
    zt_buf = np.empty(k * ROWS, dtype=Z.dtype)
    yzt_buf = np.empty(k * ROWS, dtype=Z.dtype)
    w_buf = np.empty(max_rows * ROWS, dtype=Z.dtype)
    c_buf = np.empty(max_rows * k, dtype=Z.dtype)
    for i0 in range(0, n, ROWS):
        nb = min(n, i0 + ROWS) - i0
        ZT = zt_buf[: k * nb].reshape((k, nb))
        yZT = yzt_buf[: k * nb].reshape((k, nb))
        for i in range(nb):
            yi = y[i0 + i]
            for a in range(k):
                z = Z[i0 + i, a]
                ZT[a, i] = z
                yZT[a, i] = yi * z
        for t in range(n_tiles):
            p0 = tile_start[t]
            n_rows = tile_start[t + 1] - p0
            if n_rows == 0:
                continue
            e0 = t * TILE
            n_cols = k - e0
            Wt = w_buf[: n_rows * nb].reshape((n_rows, nb))
            for p in range(n_rows):
                a0 = tuples[p0 + p, 0]
                a1 = tuples[p0 + p, 1]
                for i in range(nb):
                    Wt[p, i] = yZT[a0, i] * ZT[a1, i]
                for s in range(2, r):
                    a = tuples[p0 + p, s]
                    for i in range(nb):
                        Wt[p, i] *= ZT[a, i]
            C = c_buf[: n_rows * n_cols].reshape((n_rows, n_cols))
            np.dot(Wt, ZT[e0:].T, C)
            for p in range(n_rows):
                last = tuples[p0 + p, r - 1]
                o = offsets[p0 + p] - last
                for e in range(last, k):
                    out[o + e] += C[p, e - e0]


def packed_plan(k, order):
    """Index tables for :func:`sym_packed_acc`.

    Returns (tuples, offsets, tile_start): the sorted (order-1)-tuples grouped
    by the tile of their last index, the packed position of (t, t[-1]) for
    each, and where each tile's tuples begin.
    """
    from itertools import combinations_with_replacement

    heads = np.array(list(combinations_with_replacement(range(k), order - 1)), dtype=np.int64)
    heads = heads.reshape(-1, order - 1)
    # In lexicographic order the entries (t, e), e = t[-1] .. k-1, of one head
    # t are consecutive, so a head's packed position is a running count.
    counts = k - heads[:, -1]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    by_tile = np.argsort(heads[:, -1] // TILE, kind="stable")
    tuples = np.ascontiguousarray(heads[by_tile])
    n_tiles = -(-k // TILE)
    tile_start = np.searchsorted(tuples[:, -1] // TILE, np.arange(n_tiles + 1))
    return tuples, offsets[by_tile], tile_start.astype(np.int64)
