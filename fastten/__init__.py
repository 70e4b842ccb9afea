"""fastten: guaranteed training of two-layer neural networks by tensor methods.

Layers, imports pointing one way: ``fastten._kernels`` (Numba and BLAS sums
over samples) -> algorithms (``moments``, ``operators``, ``sketch``, the
decomposition engines, ``_bias``, ``_refine``) -> public surface (``fit``,
``decompose``, ``TwoLayerNet``, ``datasets``, ``scores``).
Importing fastten compiles nothing: kernels compile on first use and are
cached on disk.
"""

from . import accumulate, activations, datasets, moments, operators, scores, sketch
from .decomposition import ConvergenceWarning, Decomposition, RankWarning, WhiteningError, decompose
from .network import TwoLayerNet
from .nnlift import IdentifiabilityWarning, LocalOptimumWarning, fit
from .scores import ProductScore, ScoreFunction, ScoreMoment, estimate_product_score

__version__ = "0.1.0.dev0"
__all__ = [
    "fit", "TwoLayerNet", "IdentifiabilityWarning", "LocalOptimumWarning",
    "decompose", "Decomposition", "ConvergenceWarning", "RankWarning", "WhiteningError",
    "ProductScore", "ScoreFunction", "ScoreMoment", "estimate_product_score",
    "accumulate", "activations", "datasets", "moments", "operators", "scores", "sketch", "__version__",
]
