"""The fitted two-layer network, and its file format."""

import json
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_samples
from .activations import ACTIVATIONS, derivative

__all__ = ["TwoLayerNet"]

FORMAT = "fastten.TwoLayerNet/1"


@dataclass
class TwoLayerNet:
    """f(x) = a2^T sigma(A1^T x + b1) + b2, in the caller's coordinates.

    A1 (d, k), b1 (k,), a2 (k,), b2 (float), activation (a name in
    ``fastten.activations.ACTIVATIONS``); ``diagnostics`` is a JSON-ready
    record of how the network was fitted.
    """

    A1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: float
    activation: str
    diagnostics: dict = field(default_factory=dict)

    def predict(self, X):
        """Network outputs (n,) at the rows of X (n, d)."""
        X = check_samples(X)
        if X.shape[1] != self.A1.shape[0]:
            raise ValueError(f"X: expected {self.A1.shape[0]} features (columns), got {X.shape[1]}")
        return derivative(self.activation, X @ self.A1 + self.b1, 0) @ self.a2 + self.b2

    def save(self, path):
        """Write an ``.npz`` file: the arrays, and a JSON header (format tag,
        activation, diagnostics) as a string array; no pickle."""
        header = json.dumps({"format": FORMAT, "activation": self.activation, "b2": float(self.b2),
                             "diagnostics": self.diagnostics})
        with open(path, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez(fh, A1=self.A1, b1=self.b1, a2=self.a2, header=np.array(header))

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"path: expected a {FORMAT} file, got format {header.get('format')!r}")
            if header["activation"] not in ACTIVATIONS:
                raise ValueError(f"path: unknown activation {header['activation']!r} in the file")
            A1, b1, a2 = data["A1"], data["b1"], data["a2"]
            if A1.ndim != 2 or b1.shape != (A1.shape[1],) or a2.shape != (A1.shape[1],):
                raise ValueError(f"path: inconsistent shapes in the file: A1 {A1.shape}, b1 {b1.shape}, "
                                 f"a2 {a2.shape}")
            return cls(A1, b1, a2, header["b2"], header["activation"], header["diagnostics"])
