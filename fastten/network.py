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

    :func:`fastten.fit` returns one; it can be built directly from known
    weights too (the arrays are stored as given, not checked).

    Parameters
    ----------
    A1 : numpy.ndarray, shape (d, k)
        First-layer weights, one hidden unit per column.
    b1 : numpy.ndarray, shape (k,)
        First-layer biases.
    a2 : numpy.ndarray, shape (k,) or (k, m)
        Output weights, for one output or m outputs.
    b2 : float or numpy.ndarray, shape (m,)
        Output bias: a float for one output, (m,) for m outputs.
    activation : str or fastten.activations.Activation
        A name in ``fastten.activations.ACTIVATIONS``, or a user activation
        (saved by name: it must be handed back to :meth:`load`).
    diagnostics : dict, optional
        A JSON-ready record of how the network was fitted (the keys are
        listed in the API overview, docs/api.md).
    classes : numpy.ndarray, optional
        The labels of a classification fit, one output (logit) per class;
        None for regression.
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
        """The network's outputs at the rows of X.

        Parameters
        ----------
        X : array_like, shape (n, d)
            Samples, one per row; real or boolean.

        Returns
        -------
        numpy.ndarray, shape (n,) or (n, m)
            f(x) per row; (n, m) for m outputs (the logits of a
            classification fit).

        Raises
        ------
        ValueError, TypeError
            When X is not a finite real 2-D array with d columns.
        """
        X = self._checked(X)
        return derivative(self.activation, X @ self.A1 + self.b1, 0) @ self.a2 + self.b2

    def predict_proba(self, X):
        """The probabilities of the classes at the rows of X (classification).

        The softmax of the outputs (the logits). A network with one output
        and two classes (a file written before multi-class fits) estimates
        P(classes[1]) itself, clipped to [0, 1].

        Parameters
        ----------
        X : array_like, shape (n, d)
            Samples, one per row; real or boolean.

        Returns
        -------
        numpy.ndarray, shape (n, n_classes)
            P(classes[c] | x) per row, rows summing to one.

        Raises
        ------
        ValueError
            When the network was fitted for regression, or as ``predict``.
        TypeError
            As ``predict``.
        """
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
        """The most probable class at each row of X (classification).

        Parameters
        ----------
        X : array_like, shape (n, d)
            Samples, one per row; real or boolean.

        Returns
        -------
        numpy.ndarray, shape (n,)
            A label from ``classes`` per row.

        Raises
        ------
        ValueError, TypeError
            As :meth:`predict_proba`.
        """
        return self.classes[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path):
        """Write the network to an ``.npz`` file.

        The file holds the arrays and a JSON header (format tag
        ``fastten.TwoLayerNet/1``, activation name, diagnostics) as a string
        array; no pickle. The name is used as given (no ``.npz`` is added).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (overwritten if it exists).

        Raises
        ------
        ValueError, TypeError
            When ``activation`` is neither a known name nor an Activation.
        OSError
            When the file cannot be written.
        """
        header = json.dumps({"format": FORMAT, "activation": get_activation(self.activation).name,
                             "builtin": isinstance(self.activation, str), "diagnostics": self.diagnostics})
        arrays = {"A1": self.A1, "b1": self.b1, "a2": self.a2, "b2": np.asarray(self.b2, dtype=np.float64)}
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes)
        with open(path, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez(fh, header=np.array(header), **arrays)

    @classmethod
    def load(cls, path, activation=None):
        """Read a network written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file to read.
        activation : fastten.activations.Activation, optional
            The activation of a network fitted with a user activation (the
            file holds only its name); None for a built-in one.

        Returns
        -------
        TwoLayerNet
            The network, with its diagnostics and classes.

        Raises
        ------
        ValueError
            When the file is not a ``fastten.TwoLayerNet/1`` file, its arrays'
            shapes disagree, or the activation is a user's one and
            ``activation`` is missing or named differently; numpy's
            ``ValueError`` for a file that is not an npz archive.
        KeyError
            For an npz archive without the header or an array (hardening the
            model files against such input is item 6 of issue #13).
        OSError
            When the file cannot be read.
        """
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
