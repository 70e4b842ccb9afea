"""The one place that holds the Numba compilation options.

Every kernel is compiled lazily (nothing compiles at import), releases the GIL,
and is cached on disk. ``fastmath`` stays off: kernels must propagate NaN and
inf faithfully, and their sums must not be reassociated, because the library
promises the same bits on any thread count.

Why there is no ``prange`` twin: each kernel spends its time in matrix
products over fixed blocks of rows, which BLAS runs faster than a Numba loop
and on all the threads BLAS is given (threadpoolctl controls how many). BLAS
splits a product over its output entries, never over the summed index, so a
block's result has the same bits on any thread count (tested), and the
blocks are added in row order. A ``prange`` loop around those products would
oversubscribe the cores (measured: 1.0 s against 0.75 s serial for the
third-order contraction at n = 10^6, d = 256, m = 32). Each kernel is
therefore its own serial twin: safe to call from several user threads at
once, with the parallelism coming from BLAS.
"""

import numba

OPTIONS = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")

kernel = numba.njit(**OPTIONS)
