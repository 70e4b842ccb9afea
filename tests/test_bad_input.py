"""One test per bad input that the fuzzing (tests/test_fuzz.py) found
mishandled, and per row of the model-file table in docs/bad_input.md: the
exception, and a message that names the parameter and the problem."""

import io
import json
import re
import warnings
import zipfile

import numpy as np
import pytest

import fastten
from fastten import IdentifiabilityWarning, TwoLayerNet, decompose, fit
from fastten.network import FORMAT


def problem(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.tanh(X @ rng.standard_normal(d) + 0.5)


def quiet_fit(*args, **kwargs):
    kwargs.setdefault("max_iter", 3)
    kwargs.setdefault("n_rounds", 1)
    kwargs.setdefault("random_state", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit(*args, **kwargs)


def assert_finite(net, X):
    assert all(np.isfinite(getattr(net, key)).all() for key in ("A1", "b1", "a2", "b2"))
    assert np.isfinite(net.predict(X)).all()


# ---------------------------------------------------------------- fit: data

@pytest.mark.parametrize("c", [1e-250, 1e160, 1e300])
def test_fit_features_near_the_ends_of_float64(c):
    # Was: IndexError (the squares in the standard deviation overflowed or
    # underflowed, and every feature looked constant).
    X, y = problem()
    net = quiet_fit(X * c, y, 1)
    assert_finite(net, X * c)
    np.testing.assert_allclose(net.predict(X * c), quiet_fit(X, y, 1).predict(X), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("c", [1e-300, 1e-310])
def test_fit_features_whose_spread_is_below_representable_weights(c):
    X, y = problem()
    with pytest.raises(ValueError, match=r"X: expected features whose standard deviation is 0 or at least 1e-280"):
        fit(X * c, y, 1)


@pytest.mark.parametrize("X", [np.ones((40, 3)), np.random.default_rng(0).standard_normal((40, 3)) + 1e17])
def test_fit_all_features_constant(X):
    # Was: IndexError in the standardisation.
    with pytest.raises(ValueError, match=r"X: expected at least one feature that varies, got 3 constant features"):
        fit(X, problem()[1], 1)


@pytest.mark.parametrize("c", [1e-300, 1e-320, 1e154, 1e300])
def test_fit_labels_near_the_ends_of_float64(c):
    # Was: "y: expected finite values" for finite tiny labels (their
    # standard deviation underflowed), and "T: the tensor is zero" for huge
    # ones (it overflowed).
    X, y = problem()
    net = quiet_fit(X, y * c, 1)
    assert_finite(net, X)
    assert np.abs(net.predict(X)).max() <= 10 * c


@pytest.mark.parametrize("cx, cy", [(1e300, 1.0), (1e-250, 1.0), (1.0, 1e300), (1.0, 1e-300)])
def test_fit_out_of_core_near_the_ends_of_float64(cx, cy):
    # The statistics pass (fastten.accumulate.Covariance) scales by powers
    # of two for chunked and in-memory data alike: the chunked fit reads the
    # same blocks as the in-memory one, so the networks agree to rounding.
    X, y = problem(n=60)
    X, y = X * cx, y * cy

    def chunks():
        for i in range(0, 60, 16):
            yield X[i:i + 16], y[i:i + 16]

    in_memory = quiet_fit(X, y, 1, block_rows=16)
    chunked = quiet_fit(chunks, None, 1, block_rows=16)
    assert_finite(chunked, X)
    np.testing.assert_allclose(chunked.predict(X), in_memory.predict(X), rtol=1e-9, atol=1e-12 * cy)


def test_fit_standard_inputs_far_from_standard():
    X, y = problem()
    with pytest.raises(ValueError, match=r"X: input_model='standard' expects N\(0, I\) features, got entries up to"):
        fit(X * 1e200, y, 1, input_model="standard")
    with pytest.raises(ValueError, match=r"X: input_model='standard' expects N\(0, I\) features, got entries up to"):
        fit(lambda: iter([(X * 1e200, y)]), None, 1, input_model="standard")


def test_fit_product_model_on_too_few_rows():
    X, y = problem()
    with pytest.raises(ValueError, match=r"X: input_model='product' cannot fit the features' score functions"):
        fit(X, y, 1, input_model="product")


@pytest.mark.parametrize("X, y", [
    (np.array([[True], [False]]), np.array([1, -1])),           # two rows: a line through them
    (np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([1, -1, 6, 1])),  # two distinct inputs
    (np.arange(30.0).reshape(10, 3) ** 1.5, np.arange(10.0)),      # labels linear in X
])
def test_fit_when_every_moment_of_the_residual_vanishes(X, y):
    # Was: ValueError "T: the tensor is zero on every probe" from inside
    # the tensor stage or the residual check, or NaN probes at d = 1.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = fit(X, y, 1, max_iter=3, n_rounds=1, random_state=0)
    assert_finite(net, X)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any(issubclass(w.category, IdentifiabilityWarning) and "vanish" in str(w.message) for w in caught) \
        or net.diagnostics["init"] == "tensor"


def test_fit_one_row_is_about_the_rows():
    # Was: "y: expected labels that vary", true but beside the point.
    X, y = problem()
    with pytest.raises(ValueError, match=r"X: expected at least 2 samples, got 1"):
        fit(X[:1], y[:1], 1)


def test_fit_ragged_inputs():
    # Was: numpy's ValueError about inhomogeneous shapes, naming nothing.
    X, y = problem()
    with pytest.raises(TypeError, match=r"X: expected a real numeric array, could not convert it"):
        fit([[1.0], [1.0, 2.0]], y, 1)
    with pytest.raises(TypeError, match=r"y: expected a 1-D array of class labels, could not convert it"):
        fit(X[:2], [[1.0], 2.0], 1, task="classification")


def test_fit_class_labels_of_mixed_types():
    # Was: TypeError "'<' not supported between instances of 'str' and 'int'".
    X, _ = problem()
    with pytest.raises(TypeError, match=r"y: expected class labels that can be sorted \(of one type\)"):
        fit(X, np.array([1, "a"] * 20, dtype=object), 1, task="classification")
    with pytest.raises(ValueError, match=r"y: expected a class label in every row, got NaN"):
        fit(X, np.array([1.0, float("nan")] * 20, dtype=object), 1, task="classification")
    with pytest.raises(ValueError, match=r"y: expected finite class labels"):
        fit(X, np.array([1j, np.nan] * 20), 1, task="classification")


# ---------------------------------------------------------------- fit: options

@pytest.mark.parametrize("name", ["alpha", "ridge"])
@pytest.mark.parametrize("value", [np.inf, 1e100, 1e300])
def test_fit_penalties_beyond_float64(name, value):
    # Was: accepted; inf gave a network of zeros by way of inf * 0, and
    # 1e300 overflowed inside the penalised solves.
    X, y = problem()
    with pytest.raises(ValueError, match=rf"{name}: expected a number >= 0 and < 1e\+100, got {re.escape(repr(value))}"):
        fit(X, y, 1, **{name: value})


def test_fit_blas_threads_as_numpy_integer_and_out_of_range():
    # Was: threadpoolctl's TypeError for np.int64, ctypes' OverflowError for 10**20.
    X, y = problem()
    assert_finite(quiet_fit(X, y, 1, blas_threads=np.int64(1)), X)
    with pytest.raises(ValueError, match=r"blas_threads: expected an integer in \[1, 2147483647\], got 10{20}"):
        fit(X, y, 1, blas_threads=10 ** 20)


# ---------------------------------------------------------------- decompose

def rank_one(d=3, scale=1.0):
    v = np.arange(1.0, d + 1)
    return scale * np.einsum("a,b,c->abc", v, v, v)


@pytest.mark.parametrize("method", ["auto", "orthogonal", "nonorthogonal", "power"])
@pytest.mark.parametrize("scale", [1e-300, 1e200, 1e300])
def test_decompose_tensors_far_from_unit_scale(method, scale):
    # Was: FloatingPointError (non-finite factors) or "T: the tensor is zero"
    # at 1e200 and beyond. Weights are linear in T.
    unit = decompose(rank_one(), 1, method=method, random_state=0)
    big = decompose(rank_one(scale=scale), 1, method=method, random_state=0)
    np.testing.assert_allclose(big.weights / scale, unit.weights, rtol=1e-12)
    np.testing.assert_allclose(np.abs(big.factors.T @ unit.factors), 1.0, rtol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(subspace="abc"), TypeError, r"subspace: expected a real numeric array, got dtype <U3"),
    (dict(second_moment=[[1], [1, 2]]), TypeError, r"second_moment: expected a real numeric array, could not"),
    (dict(method=np.array(["auto", "power"])), ValueError, r"method: expected one of"),
    (dict(method="sketch", sketch_size="a"), TypeError, r"sketch_size: expected an integer, got 'a'"),
    (dict(method="sketch", sketch_size=3), ValueError, r"sketch_size: expected an integer >= 8, got 3"),
    (dict(method="sketch", n_sketches=0), ValueError, r"n_sketches: expected an integer >= 1, got 0"),
])
def test_decompose_options_named_in_errors(kwargs, error, match):
    # Was: numpy's conversion errors, "truth value of an array is
    # ambiguous", and the sketch's internal names b and B.
    with pytest.raises(error, match=match):
        decompose(rank_one(), 1, **kwargs)


# ---------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def saved():
    X, y = problem()
    net = quiet_fit(X, y, 2)
    buffer = io.BytesIO()
    net.save(buffer)
    return net, buffer.getvalue(), X


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def members(net, **header):
    fields = {"format": FORMAT, "activation": "sigmoid", "builtin": True, "diagnostics": {}, **header}
    return {"header": np.array(json.dumps(fields)), "A1": net.A1, "b1": net.b1, "a2": net.a2,
            "b2": np.float64(net.b2)}


def load_bytes(tmp_path, data):
    path = tmp_path / "model.npz"
    path.write_bytes(data)
    return TwoLayerNet.load(path)


def test_model_file_round_trip_is_bit_identical(saved, tmp_path):
    net, data, X = saved
    loaded = load_bytes(tmp_path, data)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.diagnostics == net.diagnostics


def test_model_file_of_version_one_as_written_before(saved, tmp_path):
    # The header main wrote before versioning: "format" only, no other change.
    net, _, X = saved
    data = npz(**members(net))
    np.testing.assert_array_equal(load_bytes(tmp_path, data).predict(X), net.predict(X))


@pytest.mark.parametrize("mutate, match", [
    (lambda data, net: b"", r"is not a fastten model file \(not an .npz archive: No data left in file\)"),
    (lambda data, net: b"x = 1\n", r"not an .npz archive: neither .npz nor .npy"),
    (lambda data, net: data[: len(data) // 2], r"not an .npz archive: File is not a zip file"),
    (lambda data, net: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:], r"is corrupted: member 'header'"),
    (lambda data, net: npz(A1=np.ones(3)).replace(b"", b""), r"not a fastten model file \(an .npz archive without"),
    (lambda data, net: npz(**members(net), extra=np.ones(2)), r"unexpected members \['extra'\]"),
    (lambda data, net: npz(**{**members(net), "header": np.array(3.0)}), r"its header is not a string"),
    (lambda data, net: npz(**{**members(net), "header": np.array("{")}), r"its header is not JSON"),
    (lambda data, net: npz(**members(net, format="sklearn")),
     r"expected a fastten.TwoLayerNet/<version> file, got format 'sklearn'"),
    (lambda data, net: npz(**members(net, format="fastten.TwoLayerNet/2")),
     r"is fastten.TwoLayerNet format version 2, written by a newer fastten; this fastten reads format versions "
     r"up to 1"),
    (lambda data, net: npz(**members(net, diagnostics=[1])), r"expected header field 'diagnostics' of type dict"),
    (lambda data, net: npz(**{**members(net), "A1": np.array([[1.0, None]], dtype=object)}),
     r"member 'A1' holds Python objects \(pickled data\)"),
    (lambda data, net: npz(**{**members(net), "A1": net.A1 * np.nan}), r"expected finite weights, got NaN"),
    (lambda data, net: npz(**{**members(net), "A1": np.ones((3, 2), dtype=int)}), r"expected float weights"),
    (lambda data, net: npz(**{**members(net), "b1": net.b1[:1]}), r"inconsistent shapes: A1 \(3, 2\), b1 \(1,\)"),
    (lambda data, net: npz(**members(net), classes=np.array(["a", "a"])), r"expected distinct classes"),
])
def test_model_file_damaged_or_foreign(saved, tmp_path, mutate, match):
    net, data, _ = saved
    with pytest.raises(ValueError, match=r"path: '.*model.npz'.*" + match):
        load_bytes(tmp_path, mutate(data, net))


def test_model_file_that_is_not_there(tmp_path):
    with pytest.raises(FileNotFoundError):
        TwoLayerNet.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match=r"path: expected a file name \(str or os.PathLike\) or a binary file object"):
        TwoLayerNet.load(3)


def test_model_file_written_only_when_load_would_read_it(tmp_path):
    rng = np.random.default_rng(0)
    bad = TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), np.array([np.nan, 1.0]), 0.0, "tanh")
    with pytest.raises(ValueError, match=r"TwoLayerNet: expected finite weights, got NaN or infinite entries in a2"):
        bad.save(tmp_path / "bad.npz")
    odd = TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.0, "tanh",
                      {"when": object()})
    with pytest.raises(TypeError, match=r"diagnostics: expected JSON-ready values"):
        odd.save(tmp_path / "odd.npz")
    text = TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2), "x", "tanh")
    with pytest.raises(ValueError, match=r"TwoLayerNet: expected float weights, got b2 = 'x'"):
        text.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_model_file_zip_with_bad_crc_is_corrupted_not_a_zipfile_error(saved, tmp_path):
    _, data, _ = saved
    path = tmp_path / "model.npz"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("A1.npy")
    raw = bytearray(data)
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 140] ^= 0x01  # inside A1's values
    with pytest.raises(ValueError, match=r"is corrupted: member 'A1' cannot be read \(BadZipFile: Bad CRC-32"):
        load_bytes(tmp_path, bytes(raw))


def test_load_is_not_a_top_level_function():
    # One spelling: TwoLayerNet.load (docs/bad_input.md says why).
    assert not hasattr(fastten, "load")


def test_fourier_biases_skip_units_the_moments_scaled_to_zero(monkeypatch):
    # Was: ValueError "A1: expected nonzero columns" from inside fit with
    # bias_method="fourier" (found by test_fit_valid_options_on_awkward_data
    # on a 28-row problem): a unit whose moments gave scale 0 keeps the
    # moments' bias and the others get the Fourier estimate.
    from fastten import _bias, _directions
    from fastten.activations import get_activation

    X, y = problem(n=200, d=2)
    U = np.eye(2)
    real = _bias.recover_units

    def one_zero_scale(*args, **kwargs):
        A1, b1, a2, records = real(*args, **kwargs)
        A1 = A1.copy()
        A1[:, 0] = 0.0
        return A1, b1, a2, records

    monkeypatch.setattr(_bias, "recover_units", one_zero_scale)
    A1, b1, units = _directions.scales_and_biases(X, y - y.mean(), U, [0, 1], get_activation("sigmoid"), "fourier",
                                                  np.random.default_rng(0))
    assert np.isfinite(A1).all() and np.isfinite(b1).all()
    assert len(units) == 2


def test_fit_with_a_unit_dead_on_every_row_and_no_ridge():
    # Two rows, two ReLU units and ridge=0 (hypothesis found it): a unit
    # zero on both rows made the output layer's normal equations singular,
    # and fit raised LinAlgError. The least-norm solution is used instead.
    X = np.array([[0.12573022], [-0.13210486]])
    y = np.array([0.64042265, 0.10490012])
    for seed in range(5):
        assert_finite(quiet_fit(X, y, 2, activation="relu", ridge=0.0, max_iter=2, n_rounds=1, random_state=seed), X)
