"""fastten: guaranteed training of two-layer neural networks by tensor methods.

Layers, imports pointing one way: ``fastten._kernels`` (Numba and BLAS sums
over samples) -> algorithms (``moments``, ``activations``) -> public surface
(``datasets``). Importing fastten compiles nothing: kernels compile on first
use and are cached on disk.
"""

from . import activations, datasets, moments

__version__ = "0.1.0.dev0"
__all__ = ["activations", "datasets", "moments", "__version__"]
