"""Scans used by input validation, without the n x d temporaries of numpy."""

import numpy as np

from ._jit import kernel


@kernel
def nonfinite(a):
    """(count, first flat index or -1) of the NaN and infinite entries of a 1-D array."""
    count = 0
    first = -1
    for i in range(a.shape[0]):
        if not np.isfinite(a[i]):
            if count == 0:
                first = i
            count += 1
    return count, first
