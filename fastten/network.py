"""The fitted two-layer network, and its file format."""

import json
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_samples
from .activations import ACTIVATIONS, Activation, derivative, get_activation

__all__ = ["TwoLayerNet"]

FORMAT = "fastten.TwoLayerNet/1"


@dataclass
class TwoLayerNet:
    """f(x) = a2^T sigma(A1^T x + b1) + b2, in the caller's coordinates.

    A1 (d, k), b1 (k,); a2 (k,) and b2 a float for one output, or a2 (k, m)
    and b2 (m,) for m outputs; activation (a name in
    ``fastten.activations.ACTIVATIONS``). ``classes`` holds the labels of a
    classification fit, one output (logit) per class, None for
    regression. A user activation (an
    ``Activation`` object) is saved by name and must be handed back to
    ``load``. ``diagnostics`` is a JSON-ready
    record of how the network was fitted.
    """

    A1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: object
    activation: str
    diagnostics: dict = field(default_factory=dict)
    classes: np.ndarray = None

    def _checked(self, X):
        if np.asarray(X).dtype.kind == "b":  # boolean features, as fit takes them
            X = np.asarray(X, dtype=np.float64)
        X = check_samples(X)
        if X.shape[1] != self.A1.shape[0]:
            raise ValueError(f"X: expected {self.A1.shape[0]} features (columns), got {X.shape[1]}")
        return X

    def predict(self, X):
        """Network outputs at the rows of X (n, d): shape (n,), or (n, m) for m outputs."""
        X = self._checked(X)
        return derivative(self.activation, X @ self.A1 + self.b1, 0) @ self.a2 + self.b2

    def predict_proba(self, X):
        """For a classification fit: the probabilities of ``classes`` at the
        rows of X, (n, n_classes), rows summing to one: the softmax of the
        outputs (the logits). A network with one output and two classes
        (a file written before multi-class fits) estimates P(classes[1])
        itself, clipped to [0, 1]."""
        if self.classes is None:
            raise ValueError("predict_proba: this network was fitted for regression (task='regression')")
        F = self.predict(X)
        if F.ndim == 1:
            p = np.clip(F, 0.0, 1.0)
            return np.column_stack([1.0 - p, p])
        F = F - F.max(axis=1, keepdims=True)
        E = np.exp(F)
        return E / E.sum(axis=1, keepdims=True)

    def predict_class(self, X):
        """For a classification fit: the most probable class at each row."""
        return self.classes[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path):
        """Write an ``.npz`` file: the arrays, and a JSON header (format tag,
        activation, diagnostics) as a string array; no pickle."""
        header = json.dumps({"format": FORMAT, "activation": get_activation(self.activation).name,
                             "builtin": isinstance(self.activation, str), "diagnostics": self.diagnostics})
        arrays = {"A1": self.A1, "b1": self.b1, "a2": self.a2, "b2": np.asarray(self.b2, dtype=np.float64)}
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes)
        with open(path, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez(fh, header=np.array(header), **arrays)

    @classmethod
    def load(cls, path, activation=None):
        """Read a file written by ``save``. ``activation``: the Activation
        object of a network fitted with a user activation (the file holds
        only its name)."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"path: expected a {FORMAT} file, got format {header.get('format')!r}")
            name = header["activation"]
            if activation is not None:
                if not isinstance(activation, Activation) or activation.name != name:
                    raise ValueError(f"activation: expected an Activation named {name!r} (the file's), "
                                     f"got {activation!r}")
            elif header.get("builtin", True) and name in ACTIVATIONS:
                activation = name
            else:
                raise ValueError(f"path: the network uses the user activation {name!r}: pass its Activation "
                                 f"object as load(path, activation=...)")
            A1, b1, a2, b2 = data["A1"], data["b1"], data["a2"], data["b2"]
            k = A1.shape[1] if A1.ndim == 2 else -1
            if (A1.ndim != 2 or b1.shape != (k,) or a2.shape[:1] != (k,) or a2.ndim > 2
                    or b2.shape != a2.shape[1:]):
                raise ValueError(f"path: inconsistent shapes in the file: A1 {A1.shape}, b1 {b1.shape}, "
                                 f"a2 {a2.shape}, b2 {b2.shape}")
            classes = data["classes"] if "classes" in data else None
            b2 = float(b2) if b2.ndim == 0 else b2
            return cls(A1, b1, a2, b2, activation, header["diagnostics"], classes)
