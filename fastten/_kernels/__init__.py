"""Numba kernels: the sums over samples that the algorithms are built from.

Kernels trust their inputs: validation happens in the public functions that
call them (:mod:`fastten.moments`). Conventions are in the docstring of
:mod:`fastten._kernels.contractions`.
"""

from .contractions import (
    BLOCK,
    first_acc,
    s2_dot_acc,
    t3_iuu_acc,
    t3_slice_dot_acc,
    t3_uuu_acc,
    t4_iuuu_acc,
)
from .checks import nonfinite
from .network import gn_product_acc
from .projected import packed_plan, sym_packed_acc
from . import scores
from .sketch import count_sketch_acc, count_sketch_clear, cube_acc, dense_sketch_acc

__all__ = [
    "BLOCK", "nonfinite", "first_acc", "s2_dot_acc", "t3_iuu_acc", "t3_uuu_acc",
    "t3_slice_dot_acc", "t4_iuuu_acc", "packed_plan", "sym_packed_acc",
    "count_sketch_acc", "count_sketch_clear", "cube_acc", "dense_sketch_acc", "gn_product_acc",
]
