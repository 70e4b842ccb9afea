"""The fitted two-layer network, and its file format."""

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_samples
from .activations import ACTIVATIONS, Activation, derivative, get_activation

__all__ = ["TwoLayerNet"]

# The file format: a name and an integer version, written as "name/version"
# in the header. load reads every version up to FORMAT_VERSION and refuses
# newer ones; bump the version when a change would mislead an older reader.
FORMAT_NAME = "fastten.TwoLayerNet"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"


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
        X = check_samples(X, boolean=True)  # boolean features, as fit takes them
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

        The file holds the arrays and a JSON header (format name and
        version ``fastten.TwoLayerNet/1``, activation name, diagnostics) as
        a string array; no pickle. The name is used as given (no ``.npz`` is
        added).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file to write (overwritten if it exists).

        Raises
        ------
        ValueError
            When ``activation`` is not a known name, or for weights that
            :meth:`load` would refuse (not finite floats, inconsistent
            shapes, classes that do not match the outputs).
        TypeError
            When ``activation`` is neither a name nor an Activation, when
            ``path`` is neither a file name nor a file object, or for
            diagnostics that are not JSON-ready.
        OSError
            When the file cannot be written.
        """
        _check_path(path)
        try:
            b2 = np.asarray(self.b2, dtype=np.float64)  # a Python float or int for one output
        except (TypeError, ValueError):
            raise ValueError(f"TwoLayerNet: expected float weights, got b2 = {self.b2!r}") from None
        arrays = {"A1": np.asarray(self.A1), "b1": np.asarray(self.b1), "a2": np.asarray(self.a2), "b2": b2}
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes)
        _check_weights(arrays, "TwoLayerNet")
        try:
            header = json.dumps({"format": FORMAT, "activation": get_activation(self.activation).name,
                                 "builtin": isinstance(self.activation, str), "diagnostics": self.diagnostics},
                                allow_nan=True)
        except TypeError as exc:
            raise TypeError(f"diagnostics: expected JSON-ready values (dict, list, str, numbers), {exc}") from None
        if hasattr(path, "write"):
            np.savez(path, header=np.array(header), **arrays)
            return
        with open(path, "wb") as fh:  # a file object: numpy adds no ".npz" to the name
            np.savez(fh, header=np.array(header), **arrays)

    @classmethod
    def load(cls, path, activation=None):
        """Read a network written by :meth:`save`.

        Every format version up to this fastten's (``FORMAT_VERSION``) is
        read; the network predicts the same bits as the one saved.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
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
            Naming ``path``, for anything that is not a model file this
            fastten reads: not an .npz archive, truncated or corrupted,
            missing or unexpected members, object (pickled) arrays, a header
            that is not the expected JSON, a newer format version, weights
            that are not finite floats of consistent shapes, classes that do
            not match the outputs; and when the activation is a user's one
            and ``activation`` is missing or named differently.
            docs/bad_input.md lists each case.
        TypeError
            When ``path`` is neither a file name nor a file object.
        OSError
            When the file cannot be opened (missing, a directory, no
            permission).
        """
        _check_path(path)
        arrays, header, where = _read(path)
        name = header["activation"]
        if activation is not None:
            if not isinstance(activation, Activation) or activation.name != name:
                raise ValueError(f"activation: expected an Activation named {name!r} (the file's), "
                                 f"got {activation!r}")
        elif header.get("builtin", True) and name in ACTIVATIONS:
            activation = name
        else:
            raise ValueError(f"{where}: the network uses the user activation {name!r}: pass its Activation "
                             f"object as load(path, activation=...)")
        b2 = arrays["b2"]
        b2 = float(b2) if b2.ndim == 0 else b2
        return cls(arrays["A1"], arrays["b1"], arrays["a2"], b2, activation, header["diagnostics"],
                   arrays.get("classes"))


MEMBERS = ("header", "A1", "b1", "a2", "b2")


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)) and not (hasattr(path, "read") or hasattr(path, "write")):
        raise TypeError(f"path: expected a file name (str or os.PathLike) or a binary file object, "
                        f"got {type(path).__name__}")


def _read(path):
    """(arrays, header, the path for messages) of a model file, or
    ValueError naming what is wrong."""
    where = f"path: {os.fspath(path)!r}" if isinstance(path, (str, os.PathLike)) else "path: the file"
    try:
        data = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # pickle refused, empty, not a numpy file at all
        if "pickle" in str(exc):  # numpy's last resort for a file of neither format
            exc = "neither .npz nor .npy; numpy would read it only as a pickle, which fastten never loads"
        raise ValueError(f"{where} is not a fastten model file (not an .npz archive: {exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is not a fastten model file (a single .npy array, not an .npz archive)")
    with data:
        names = set(data.files)
        missing = [m for m in MEMBERS if m not in names]
        if missing:
            raise ValueError(f"{where} is not a fastten model file (an .npz archive without {missing})")
        unexpected = sorted(names - set(MEMBERS) - {"classes"})
        if unexpected:
            raise ValueError(f"{where} is not a fastten model file (unexpected members {unexpected})")
        arrays = {}
        for member in sorted(names):
            try:
                arrays[member] = data[member]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise ValueError(f"{where}: member {member!r} holds Python objects (pickled data), which "
                                     f"fastten never writes or reads") from None
                raise ValueError(f"{where} is corrupted: member {member!r} cannot be read ({exc})") from None
            except Exception as exc:  # truncated or damaged archive: zipfile, zlib, EOF errors
                raise ValueError(f"{where} is corrupted: member {member!r} cannot be read "
                                 f"({type(exc).__name__}: {exc})") from None
    header = _header(arrays.pop("header"), where)
    _check_weights(arrays, where)
    return arrays, header, where


def _header(array, where):
    """The JSON header of a model file: a dict with a supported format."""
    if array.dtype.kind != "U" or array.ndim != 0:
        raise ValueError(f"{where} is not a fastten model file (its header is not a string, "
                         f"got dtype {array.dtype} and shape {array.shape})")
    try:
        header = json.loads(str(array))
    except ValueError as exc:
        raise ValueError(f"{where} is not a fastten model file (its header is not JSON: {exc})") from None
    fmt = header.get("format") if isinstance(header, dict) else None
    name, _, version = fmt.rpartition("/") if isinstance(fmt, str) else ("", "", "")
    if name != FORMAT_NAME or not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise ValueError(f"{where}: expected a {FORMAT_NAME}/<version> file, got format {fmt!r}")
    if int(version) > FORMAT_VERSION:
        raise ValueError(f"{where} is {FORMAT_NAME} format version {int(version)}, written by a newer fastten; "
                         f"this fastten reads format versions up to {FORMAT_VERSION}: upgrade fastten to read it")
    kinds = {"activation": str, "builtin": bool, "diagnostics": dict}
    for key, kind in kinds.items():
        if key in header and not isinstance(header[key], kind):
            raise ValueError(f"{where}: expected header field {key!r} of type {kind.__name__}, "
                             f"got {type(header[key]).__name__}")
    if "activation" not in header:
        raise ValueError(f"{where}: expected a header with the field 'activation', got fields {sorted(header)}")
    header.setdefault("diagnostics", {})
    return header


def _check_weights(arrays, where):
    """Finite float weights of consistent shapes, and classes that match
    the outputs: what predict needs."""
    A1, b1, a2, b2 = (arrays[key] for key in ("A1", "b1", "a2", "b2"))
    for key in ("A1", "b1", "a2", "b2"):
        value = arrays[key]
        if value.dtype.kind != "f":
            raise ValueError(f"{where}: expected float weights, got {key} of dtype {value.dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: expected finite weights, got NaN or infinite entries in {key}")
    k = A1.shape[1] if A1.ndim == 2 else -1
    if (A1.ndim != 2 or 0 in A1.shape or b1.shape != (k,) or a2.shape[:1] != (k,) or a2.ndim > 2
            or b2.shape != a2.shape[1:] or (a2.ndim == 2 and a2.shape[1] < 1)):
        raise ValueError(f"{where}: inconsistent shapes: A1 {A1.shape}, b1 {b1.shape}, a2 {a2.shape}, "
                         f"b2 {b2.shape} (expected (d, k), (k,), (k,) or (k, m), () or (m,))")
    classes = arrays.get("classes")
    if classes is not None:
        n_out = a2.shape[1] if a2.ndim == 2 else 2  # one output: P(classes[1]) (an older two-class file)
        if classes.dtype.kind in "OV" or classes.shape != (n_out,):
            raise ValueError(f"{where}: expected classes, one label per output, of shape ({n_out},), got "
                             f"dtype {classes.dtype} and shape {classes.shape}")
        if np.unique(classes).size != n_out:
            raise ValueError(f"{where}: expected distinct classes, got {classes.tolist()}")
