"""The public surface under fuzzing: fit, decompose, TwoLayerNet.predict /
predict_proba / predict_class, save and load.

The property everywhere: a correct, finite result, or a ValueError /
TypeError whose message starts with the name of the parameter at fault;
nothing else (no other exception, no NaN or infinite output). Warnings are
allowed when they are fastten's own classes or the documented "fit: ..."
UserWarning. Fits are tiny (n <= 60, d <= 4, n_hidden <= 2, a few
Levenberg-Marquardt steps) so that the examples are cheap.

Examples per test scale with the hypothesis profile (tests/conftest.py):
``settings.default.max_examples`` is 100 under HYPOTHESIS_PROFILE=ci and 40
under dev; the multipliers below give 3,100 examples in the ci profile over
this file (counted with ``pytest --hypothesis-show-statistics``).
"""

import io
import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit

import fastten
from fastten import TwoLayerNet, decompose, fit
from fastten.activations import ACTIVATIONS, Activation

EXAMPLES = settings.default.max_examples


def examples(factor):
    return settings(max_examples=int(factor * EXAMPLES), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


OWN_WARNINGS = (fastten.IdentifiabilityWarning, fastten.ConvergenceWarning, fastten.RankWarning)

FIT_OPTIONS = ("activation", "task", "input_model", "init", "method", "bias_method", "refine", "alpha",
               "early_stopping", "validation_fraction", "n_iter_no_change", "ridge", "max_iter", "n_rounds",
               "random_state", "callback", "blas_threads", "n_threads")
DECOMPOSE_OPTIONS = ("method", "second_moment", "n_restarts", "n_iter", "tol", "oversample", "n_subspace_rounds",
                     "n_polish", "subspace", "sketch_size", "n_sketches", "random_state")


def run(call, names):
    """call()'s result, or None when it raised ValueError/TypeError with a
    message starting with one of ``names``; fails on anything else, and on
    a warning that is not fastten's."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except (ValueError, TypeError) as exc:
            message = str(exc)
            assert re.match(rf"({'|'.join(map(re.escape, names))})\b", message), \
                f"{type(exc).__name__} does not name a parameter of {names}: {message}"
            result = None
            event(f"raised {type(exc).__name__}")
        else:
            event("returned a result")  # the split shows in --hypothesis-show-statistics
    for w in caught:
        ours = issubclass(w.category, OWN_WARNINGS) or (
            w.category is UserWarning and str(w.message).startswith("fit: "))
        assert ours, f"a warning that is not fastten's: {w.category.__name__}: {w.message}"
    return result


def assert_finite_network(net, X):
    for name in ("A1", "b1", "a2", "b2"):
        assert np.isfinite(getattr(net, name)).all(), name
    assert np.isfinite(net.predict(X)).all()
    if net.classes is not None:
        P = net.predict_proba(X)
        assert np.isfinite(P).all() and np.allclose(P.sum(axis=1), 1.0)
        assert set(net.predict_class(X).tolist()) <= set(net.classes.tolist())


# ---------------------------------------------------------------- strategies

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64, np.complex64, np.complex128, np.object_, np.str_]


@st.composite
def fuzzed_arrays(draw, shape, *, special=True, magnitude=True):
    """An array of `shape` (or a near miss) in any dtype and layout, with
    NaN/inf anywhere (special), scaled by 10^e, |e| <= 300 (magnitude)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    base = np.asarray(rng.standard_normal(shape))  # 0-d: an array, not a float
    if magnitude and draw(st.booleans()):
        base = base * 10.0 ** draw(st.integers(-300, 300))
    if special and draw(st.integers(0, 3)) == 0 and base.size:
        base.flat[draw(st.integers(0, base.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if dtype.kind == "b":
        arr = np.asarray(base > 0)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            arr = np.clip(np.nan_to_num(np.round(base * 10)), info.min, info.max).astype(dtype)
    elif dtype.kind == "O":
        arr = base.astype(object)
        if base.size and draw(st.booleans()):
            arr.flat[0] = draw(st.sampled_from([None, "a", [1.0], {}]))
    elif dtype.kind == "U":
        arr = base.astype(str)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = base.astype(dtype)
    layout = draw(st.sampled_from(["c", "fortran", "strided", "readonly", "list"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1:
        arr = np.repeat(arr, 2, axis=0)[::2]  # the same values, not contiguous
    elif layout == "readonly":
        arr = np.array(arr)
        arr.flags.writeable = False
    elif layout == "list":
        return arr.tolist()
    return arr


junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(10 ** 19, 10 ** 20),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                 st.just([1, 2]), st.just(np.array(["auto", "power"])), st.just(np.float64(0.5)),
                 st.just(np.int64(2)), st.just({"a": 1}), st.just(object()))

def _logistic(t, order):
    s = expit(t)
    ds = s * (1 - s)
    return (s, ds, ds * (1 - 2 * s), ds * (1 - 6 * ds), ds * (1 - 2 * s) * (1 - 12 * ds))[order]


USER_ACTIVATION = Activation("user-logistic", _logistic)

FIT_VALID = {
    "activation": st.sampled_from(sorted(ACTIVATIONS) + [USER_ACTIVATION]),
    "task": st.sampled_from(["regression", "classification"]),
    "input_model": st.sampled_from(["gaussian", "standard", "product"]),  # product: too few rows here, X named
    "init": st.sampled_from(["tensor", "random"]),
    "method": st.sampled_from(["auto", "orthogonal", "nonorthogonal", "power"]),
    "bias_method": st.sampled_from(["moments", "fourier", "zero"]),
    "refine": st.booleans(),
    "alpha": st.sampled_from([0.0, 1e-3, 1.0, 9e99]),
    "early_stopping": st.booleans(),
    "validation_fraction": st.sampled_from([0.1, 0.3, 0.5]),
    "n_iter_no_change": st.integers(1, 3),
    "ridge": st.sampled_from([0.0, 1e-8, 1.0, 9e99]),
    "max_iter": st.integers(0, 3),
    "n_rounds": st.integers(1, 2),
    "random_state": st.one_of(st.none(), st.integers(0, 2 ** 32), st.builds(np.random.default_rng)),
    "callback": st.sampled_from([None, lambda net, info: False, lambda net, info: True]),
    "blas_threads": st.sampled_from([None, 1, 2]),
    "n_threads": st.sampled_from([None, 1, 3]),
}


def small_problem(seed, n=40, d=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.tanh(X @ rng.standard_normal(d) + 0.5) + 0.1 * rng.standard_normal(n)
    return X, y


# ---------------------------------------------------------------- fit

@examples(4)
@given(st.data())
def test_fit_on_fuzzed_data(data):
    n = data.draw(st.integers(0, 60), "n")
    d = data.draw(st.integers(0, 4), "d")
    X = data.draw(fuzzed_arrays((n, d) if data.draw(st.integers(0, 7)) else (n,)), "X")
    task = data.draw(st.sampled_from(["regression", "classification"]), "task")
    y_shape = data.draw(st.sampled_from([(n,), (n,), (n, 2), (max(n - 1, 0),)]), "y shape")
    y = data.draw(fuzzed_arrays(y_shape), "y")
    if task == "classification" and n and data.draw(st.booleans()):
        y = np.arange(n) % data.draw(st.integers(1, 3))  # class labels
    k = data.draw(st.integers(1, 2), "n_hidden")
    net = run(lambda: fit(X, y, k, task=task, max_iter=2, n_rounds=1, random_state=0), ("X", "y", "n_hidden"))
    if net is not None:
        assert net.A1.shape == (d, k)
        assert_finite_network(net, np.asarray(X, dtype=np.float64))


@examples(6)
@given(st.data())
def test_fit_options_valid_or_junk(data):
    X, y = small_problem(data.draw(st.integers(0, 3), "seed"))
    options = {}
    for name in data.draw(st.lists(st.sampled_from(FIT_OPTIONS), max_size=4, unique=True), "options"):
        options[name] = data.draw(junk if data.draw(st.integers(0, 2)) == 0 else FIT_VALID[name], name)
    options.setdefault("max_iter", 2)
    options.setdefault("n_rounds", 1)
    if isinstance(options["max_iter"], int) and options["max_iter"] > 3:
        options["max_iter"] = 3  # a valid huge limit is honoured: too slow for a fuzz
    if isinstance(options["n_rounds"], int) and options["n_rounds"] > 2:
        options["n_rounds"] = 2
    labels = (y > 0).astype(int) if isinstance(options.get("task"), str) and options["task"] == "classification" \
        else y
    k = data.draw(junk if data.draw(st.integers(0, 3)) == 0 else st.integers(1, 2), "n_hidden")
    if isinstance(k, int) and k > 2:
        k = 2
    # X: input_model="product" refuses these 40 rows (X: input_model='product' cannot fit ...).
    net = run(lambda: fit(X, labels, k, **options), FIT_OPTIONS + ("n_hidden", "X"))
    if net is not None:
        assert_finite_network(net, X)


@st.composite
def awkward_problems(draw):
    """Finite data that a fit must take: few rows, repeated rows, features
    of two values, constant and collinear features, columns on scales
    1e-200 ... 1e200, integer features, labels of a few classes."""
    n = draw(st.integers(2, 60), "n")
    d = draw(st.integers(1, 4), "d")
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    X = rng.standard_normal((n, d))
    for j in range(d):
        kind = draw(st.sampled_from(["normal", "normal", "two values", "constant", "copy", "scaled", "integer"]))
        if kind == "two values":
            X[:, j] = rng.integers(0, 2, n)
        elif kind == "constant":
            X[:, j] = 3.0
        elif kind == "copy" and j:
            X[:, j] = 2 * X[:, 0] - 1
        elif kind == "scaled":
            X[:, j] *= 10.0 ** draw(st.integers(-200, 200))
        elif kind == "integer":
            X[:, j] = np.round(3 * X[:, j])
    if draw(st.booleans()):
        X[n // 2:] = X[: n - n // 2]  # repeated rows
    y = np.tanh(X[:, 0] - 0.3) if draw(st.booleans()) else rng.standard_normal(n)
    y = y * 10.0 ** draw(st.integers(-200, 200)) if draw(st.booleans()) else y
    classes = np.arange(n) % draw(st.integers(2, 3))
    return X, y, rng.permutation(classes)


@examples(3)
@given(awkward_problems(), st.fixed_dictionaries({}, optional={key: FIT_VALID[key] for key in FIT_VALID}),
       st.integers(1, 2))
def test_fit_valid_options_on_awkward_data(problem, options, k):
    X, y, classes = problem
    options = {"max_iter": 2, "n_rounds": 1, **options}
    labels = classes if options.get("task") == "classification" else y
    net = run(lambda: fit(X, labels, k, **options), FIT_OPTIONS + ("X", "y", "n_hidden"))
    if net is not None:
        assert_finite_network(net, X)


def test_fit_leaves_its_inputs_alone():
    X, y = small_problem(0)
    X0, y0 = X.copy(), y.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit(X, y, 2, max_iter=3, random_state=0, early_stopping=True, validation_fraction=0.3)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


# ---------------------------------------------------------------- decompose

@st.composite
def tensors(draw):
    d = draw(st.integers(0, 4), "d")
    r = draw(st.integers(1, 3), "components")
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    V = rng.standard_normal((d, r))
    T = np.einsum("j,aj,bj,cj->abc", rng.uniform(0.5, 2, r), V, V, V)
    T = T * 10.0 ** draw(st.integers(-300, 300)) if draw(st.booleans()) else T
    kind = "ok" if draw(st.integers(0, 2)) else draw(st.sampled_from(["dtype", "shape", "nan", "zero", "asym",
                                                                      "list"]))
    if kind == "dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            T = T.astype(draw(st.sampled_from(DTYPES)))
    elif kind == "shape":
        T = T[:, :, : max(d - 1, 0)] if draw(st.booleans()) else T.reshape(d, d * d)
    elif kind == "nan" and T.size:
        T = T.copy()
        T.flat[draw(st.integers(0, T.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    elif kind == "zero":
        T = np.zeros_like(T)
    elif kind == "asym" and d > 1:
        T = T + rng.standard_normal(T.shape)
    elif kind == "list":
        T = T.tolist()
    if kind == "ok" and draw(st.booleans()):
        T = np.asfortranarray(T)
    return T, d


DECOMPOSE_VALID = {
    "method": st.sampled_from(["auto", "orthogonal", "nonorthogonal", "power", "sketch"]),
    "n_restarts": st.integers(1, 3), "n_iter": st.integers(1, 10), "tol": st.sampled_from([0.0, 1e-8, 1.0]),
    "oversample": st.integers(0, 3), "n_subspace_rounds": st.integers(1, 2), "n_polish": st.integers(0, 3),
    "random_state": st.integers(0, 10),
}


@examples(6)
@given(st.data())
def test_decompose_on_fuzzed_tensors_and_options(data):
    T, d = data.draw(tensors(), "T")
    rank = data.draw(st.one_of(st.integers(0, 5), junk) if data.draw(st.integers(0, 3)) == 0
                     else st.integers(1, max(d, 1)), "rank")
    options = {"n_restarts": 2, "n_iter": 5}
    for name in data.draw(st.lists(st.sampled_from(DECOMPOSE_OPTIONS), max_size=3, unique=True), "options"):
        if name in DECOMPOSE_VALID and data.draw(st.integers(0, 2)):
            options[name] = data.draw(DECOMPOSE_VALID[name], name)
        elif name in ("second_moment", "subspace") and d and data.draw(st.booleans()):
            options[name] = data.draw(st.sampled_from([np.eye(d), np.eye(d)[:, :1], np.full((d, d), np.nan),
                                                       "abc", [[1], [1, 2]]]), name)
        elif name == "sketch_size" and data.draw(st.booleans()):
            options.update(method="sketch", sketch_size=data.draw(st.sampled_from([3, 8, 64, 1.5]), name))
        else:
            options[name] = data.draw(junk, name)
    for name in ("n_restarts", "n_iter", "oversample", "n_subspace_rounds", "n_polish", "n_sketches"):
        if isinstance(options.get(name), int) and not isinstance(options[name], bool) and options[name] > 10:
            options[name] = 10  # valid, and honoured: too slow for a fuzz
    if isinstance(options.get("sketch_size"), int) and options["sketch_size"] > 256:
        options["sketch_size"] = 256
    result = run(lambda: decompose(T, rank, **options), ("T", "rank") + DECOMPOSE_OPTIONS)
    if result is not None:
        assert np.isfinite(result.weights).all() and np.isfinite(result.factors).all()
        assert (result.weights >= 0).all() and np.all(np.diff(result.weights) <= 0)
        np.testing.assert_allclose(np.linalg.norm(result.factors, axis=0), 1.0, rtol=1e-9)
        assert np.isfinite(result.residual)


# ---------------------------------------------------------------- predict

def networks():
    rng = np.random.default_rng(7)
    yield TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.3, "sigmoid")
    yield TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((2, 3)),
                      rng.standard_normal(3), "tanh")
    yield TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((2, 3)),
                      rng.standard_normal(3), "softplus", {}, np.array(["a", "b", "c"]))
    yield TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.1, "relu",
                      {}, np.array([0, 1]))


NETWORKS = list(networks())


@examples(4)
@given(st.data())
def test_predict_on_fuzzed_data(data):
    net = data.draw(st.sampled_from(NETWORKS), "net")
    n = data.draw(st.integers(0, 20), "n")
    d = 3 if data.draw(st.integers(0, 3)) else data.draw(st.sampled_from([0, 1, 4]), "d")
    X = data.draw(fuzzed_arrays((n, d) if data.draw(st.integers(0, 7)) else (n,)), "X")
    method = data.draw(st.sampled_from(["predict", "predict_proba", "predict_class"]), "method")
    out = run(lambda: getattr(net, method)(X), ("X", "predict_proba"))
    if out is not None:
        assert len(out) == n
        if method != "predict_class":
            assert np.isfinite(out).all()
        else:
            assert set(out.tolist()) <= set(net.classes.tolist())


# ---------------------------------------------------------------- save / load

@st.composite
def fitted_like_networks(draw):
    """Networks of every shape fit returns: one or m outputs, regression or
    classification, any built-in activation, weights of any magnitude."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    d, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    scale = 10.0 ** draw(st.integers(-100, 100))
    kind = draw(st.sampled_from(["single", "multi", "classes", "two-class legacy"]))
    m = draw(st.integers(2, 4))
    a2, b2, classes = rng.standard_normal(k) * scale, float(rng.standard_normal() * scale), None
    if kind != "single":
        a2, b2 = rng.standard_normal((k, m)) * scale, rng.standard_normal(m) * scale
    if kind == "classes":
        classes = draw(st.sampled_from([np.arange(m), np.array(list("abcd"))[:m], np.linspace(-1, 1, m)]))
    elif kind == "two-class legacy":
        a2, b2, classes = rng.standard_normal(k), 0.5, np.array([False, True])
    diagnostics = draw(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(), st.text()),
                                       max_size=3))
    return TwoLayerNet(rng.standard_normal((d, k)) * scale, rng.standard_normal(k), a2, b2,
                       draw(st.sampled_from(sorted(ACTIVATIONS))), diagnostics, classes)


@examples(2)
@given(fitted_like_networks(), st.integers(0, 2 ** 32 - 1))
def test_save_load_predict_bit_identical(net, seed):
    buffer = io.BytesIO()
    net.save(buffer)
    buffer.seek(0)
    loaded = TwoLayerNet.load(buffer)
    X = np.random.default_rng(seed).standard_normal((9, net.A1.shape[0]))
    with np.errstate(over="ignore"):  # relu and softplus of 1e100-scale weights: large, not a failure here
        np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
        if net.classes is not None:
            np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
            np.testing.assert_array_equal(loaded.predict_class(X), net.predict_class(X))
            np.testing.assert_array_equal(loaded.classes, net.classes)
    assert loaded.activation == net.activation
    assert json.dumps(loaded.diagnostics) == json.dumps(net.diagnostics)


def _saved(net):
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


SAVED = [_saved(net) for net in NETWORKS]


@examples(4)
@given(st.data())
def test_load_on_damaged_files(data):
    which = data.draw(st.integers(0, len(SAVED) - 1), "file")
    raw = bytearray(SAVED[which])
    damage = data.draw(st.sampled_from(["truncate", "flip", "splice", "random", "none"]), "damage")
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif damage == "splice":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    elif damage == "random":
        raw = bytearray(data.draw(st.binary(max_size=400)))
    net = run(lambda: TwoLayerNet.load(io.BytesIO(bytes(raw))), ("path",))
    if net is not None:  # an intact file, or damage where nothing is read (zip padding, a spare byte)
        X = np.random.default_rng(0).standard_normal((5, net.A1.shape[0]))
        assert_finite_network(net, X)
        # Never a silently different network: each member's CRC-32 is checked.
        np.testing.assert_array_equal(net.predict(X), NETWORKS[which].predict(X))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3),
                           max_leaves=6)


@examples(2)
@given(st.data())
def test_load_on_foreign_archives(data):
    """npz archives that are not quite model files: headers of any JSON,
    members of any dtype or shape, missing or extra members."""
    net = NETWORKS[2]
    header = {"format": "fastten.TwoLayerNet/1", "activation": "softplus", "builtin": True, "diagnostics": {}}
    fields = ["format", "activation", "builtin", "diagnostics"]
    for key in data.draw(st.lists(st.sampled_from(fields), max_size=2 * bool(data.draw(st.integers(0, 2))),
                                  unique=True), "header fields"):
        header[key] = data.draw(json_values | st.sampled_from(["fastten.TwoLayerNet/2", "fastten.TwoLayerNet/x",
                                                                "fastten.TwoLayerNet/01"]), key)
    if data.draw(st.integers(0, 3)) == 0:
        header = data.draw(json_values, "header")
    elif data.draw(st.booleans()):  # benign: other diagnostics, no builtin flag (files before it had none)
        header["diagnostics"] = data.draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
        header.pop("builtin")
    arrays = {"header": np.array(json.dumps(header)), "A1": net.A1, "b1": net.b1, "a2": net.a2, "b2": net.b2,
              "classes": net.classes}
    for key in data.draw(st.lists(st.sampled_from(sorted(arrays) + ["extra"]),
                                  max_size=2 * bool(data.draw(st.integers(0, 2))), unique=True), "members"):
        if data.draw(st.booleans()):
            arrays.pop(key, None)
        else:
            shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), key + " shape")
            arrays[key] = data.draw(fuzzed_arrays(shape, magnitude=False), key)
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
    loaded = run(lambda: TwoLayerNet.load(io.BytesIO(buffer.getvalue())), ("path",))
    if loaded is not None:
        assert_finite_network(loaded, np.random.default_rng(0).standard_normal((5, loaded.A1.shape[0])))


# ---------------------------------------------------------------- scale

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [1e-6, 1e-3, 3.7, 1e3, 1e6])
def test_rescaling_x_or_y_rescales_only_the_fitted_function(seed, c):
    """fit standardises X and y, so in exact arithmetic fit(c X, y) predicts
    at c x what fit(X, y) predicts at x, and fit(X, c y) predicts c times
    it, for the same seed. In floating point the standardised data differ
    by rounding (1e-16 relative), which the fit's solves amplify by their
    conditioning: measured at most 2.2e-14 of std(y) on these seeds and
    factors. The bound 1e-9 leaves that five orders of room and still fails
    at once if a factor leaked into a threshold or a step (an O(1) change)."""
    net = fastten.datasets.make_planted_network(60, 3, 2, random_state=seed)
    X, y = net.X, net.y
    options = dict(max_iter=5, n_rounds=2, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 60 rows: convergence notes are not the point here
        base = fit(X, y, 2, **options).predict(X)
        scaled_x = fit(X * c, y, 2, **options).predict(X * c)
        scaled_y = fit(X, y * c, 2, **options).predict(X)
    spread = np.std(y)
    assert np.abs(scaled_x - base).max() <= 1e-9 * spread
    assert np.abs(scaled_y - c * base).max() <= 1e-9 * c * spread


@pytest.mark.parametrize("e", [-600, -20, 20, 600])
def test_rescaling_by_a_power_of_two_is_exact(e):
    """Scaling by 2^e is exact in floating point, and the standardisation is
    done on data divided by a power of two: the fitted function is the same
    bit for bit, even where the squares of the raw data leave float64's
    range (2^600 ~ 4e180)."""
    net = fastten.datasets.make_planted_network(60, 3, 2, random_state=0)
    X, y, c = net.X, net.y, np.ldexp(1.0, e)
    options = dict(max_iter=5, n_rounds=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        base = fit(X, y, 2, **options).predict(X)
        np.testing.assert_array_equal(fit(X * c, y, 2, **options).predict(X * c), base)
        np.testing.assert_array_equal(fit(X, y * c, 2, **options).predict(X), base * c)
