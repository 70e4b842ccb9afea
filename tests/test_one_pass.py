"""fit(..., one_pass=True): every row read once, for streams that cannot be replayed.

The problems here are small (d = 20, k = 3) but have more rows than the
pilot and the sample (16384 each at this size), so the pass really runs
past the pilot and the reservoir really samples.
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import fastten
from fastten import _one_pass
from fastten._one_pass import CrossSums, PowerSums, Reservoir, hermite_moments, mixed_hermite
from fastten.datasets import make_planted_network
from fastten.operators import DataMoment

ROWS = 4096
N = 50_000


def worst_cos(A, B):
    C = np.abs((A / np.linalg.norm(A, axis=0)).T @ (B / np.linalg.norm(B, axis=0)))
    rows, cols = linear_sum_assignment(-C)
    return C[rows, cols].min()


@pytest.fixture(scope="module")
def planted():
    return make_planted_network(N, 20, 3, random_state=3)


class Stream:
    """A callable of chunks that counts its calls and the chunks it yields."""

    def __init__(self, X, y, rows=ROWS):
        self.X, self.y, self.rows = X, y, rows
        self.calls, self.yielded = 0, []

    def __call__(self):
        self.calls += 1
        for i in range(0, self.X.shape[0], self.rows):
            self.yielded.append(i)
            yield self.X[i:i + self.rows], self.y[i:i + self.rows]


def one_pass_fit(X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a planted noise-free network: nothing to warn about
        return fastten.fit(X, y, 3, one_pass=True, random_state=0, block_rows=ROWS, **kwargs)


@pytest.fixture(scope="module")
def streamed(planted):
    stream = Stream(planted.X, planted.y)
    return stream, one_pass_fit(stream, None)


def test_the_stream_is_called_once_and_each_chunk_read_once(streamed):
    stream, model = streamed
    assert stream.calls == 1
    assert stream.yielded == list(range(0, N, ROWS))
    assert model.diagnostics["data_passes"] == {"one_pass": 1}
    record = model.diagnostics["one_pass"]
    assert record == {"pilot_rows": 16384, "sample_rows": 16384, "subspace_dimension": 13,
                      "pilot_supported": record["pilot_supported"], "pilot_rank": 20,
                      "full_space_steps": record["full_space_steps"]}
    assert 1 <= record["pilot_supported"] <= 13 and 0 <= record["full_space_steps"] <= 3
    assert model.diagnostics["rows"] == {"n": N, "in_memory": 16384}
    assert any(note.startswith("one pass: ") for note in model.diagnostics["warnings"])


def test_a_planted_network_is_recovered(planted, streamed):
    _, model = streamed
    # Noise-free labels: the refinement on the 16384 sampled rows reaches
    # the planted network (measured: |cos| 1.0 to rounding, relative test
    # MSE 3e-28, as the multi-pass fit). The bars are the exact-recovery
    # bars of bench/recovery.py; the tensor stage alone is far from them
    # (|cos| 0.996, MSE 6e-3: the next test).
    assert worst_cos(model.A1, planted.A1) >= 0.9999
    mse = np.mean((model.predict(planted.X_test) - planted.f_test) ** 2) / np.var(planted.f_test)
    assert mse <= 1e-6


def test_tensor_stage_alone_finds_the_directions(planted):
    model = one_pass_fit(Stream(planted.X, planted.y), None, refine=False)
    # Without refinement, the directions come from the sketched moments of
    # all 50000 rows. Measured 0.9925 (without the full-space step 0.9955;
    # the multi-pass fit of the same data 0.9948); the sampling error of the moments at n = 5e4 is about
    # sqrt(d / n) = 0.02 in angle (|cos| 0.9998) per unit before the
    # decomposition amplifies it. 0.97 leaves room for that amplification;
    # a direction the pilot's subspace missed scores near a random one's
    # |cos| (about 0.2 in d = 20, at best the projection of the unit on
    # the subspace).
    assert worst_cos(model.A1, planted.A1) >= 0.97
    assert model.diagnostics["trusted_components"] != []


def test_units_the_third_moment_misses_come_from_the_sketched_fourth():
    # Zero-bias ReLU units: the expected third derivative vanishes, and the
    # joint decomposition of the sketched second and fourth moments finds
    # them. Measured 0.998 (the multi-pass fit 0.9987); without the
    # fourth-order sums (FOURTH_MAX forced below m) 0.09. 0.97 as in the
    # tensor-stage test above.
    net = make_planted_network(N, 20, 3, activation="relu", bias_range=(0.0, 0.0), random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the third moment's silence is reported; judged here by recovery
        model = fastten.fit(Stream(net.X, net.y), None, 3, activation="relu", one_pass=True, refine=False,
                            random_state=0)
    assert model.diagnostics["joint_directions"] == 3
    assert worst_cos(model.A1, net.A1) >= 0.97


def test_without_the_fourth_order_sums(planted, monkeypatch):
    # Wider sketches (m > FOURTH_MAX) sum orders 0-3 only (and the joint
    # path runs without E[r S4]); on units the third moment sees the fit is
    # unchanged in kind: it reaches the planted network (the exact bar).
    monkeypatch.setattr(_one_pass, "FOURTH_MAX", 5)
    model = one_pass_fit(Stream(planted.X, planted.y), None)
    assert model.diagnostics["one_pass"]["subspace_dimension"] == 13
    assert worst_cos(model.A1, planted.A1) >= 0.9999


def test_same_seed_same_bits(planted, streamed):
    _, model = streamed
    again = one_pass_fit(Stream(planted.X, planted.y), None)
    for name in ("A1", "b1", "a2", "b2"):
        assert np.array_equal(getattr(model, name), getattr(again, name)), name


def test_in_memory_equals_the_stream_of_its_blocks(planted, streamed):
    _, model = streamed
    in_memory = one_pass_fit(planted.X, planted.y)
    for name in ("A1", "b1", "a2", "b2"):
        x, z = np.atleast_1d(getattr(model, name)), np.atleast_1d(getattr(in_memory, name))
        assert np.abs(x - z).max() <= 1e-10 * np.abs(x).max(), name
    assert in_memory.diagnostics["data_passes"] == {"one_pass": 1}


def test_memmap_reads_once(planted, tmp_path, streamed):
    _, model = streamed
    path = tmp_path / "X.npy"
    np.save(path, planted.X)
    mapped = one_pass_fit(str(path), planted.y)
    for name in ("A1", "b1", "a2", "b2"):
        x, z = np.atleast_1d(getattr(model, name)), np.atleast_1d(getattr(mapped, name))
        assert np.abs(x - z).max() <= 1e-10 * np.abs(x).max(), name


@pytest.mark.parametrize("option, value", [
    ("early_stopping", True), ("control_variate", "quadratic"), ("cross_fit", True), ("method", "sketch"),
    ("task", "classification"), ("input_model", "product"), ("bias_method", "fourier")])
def test_options_one_pass_cannot_serve_are_refused(planted, option, value):
    stream = Stream(planted.X, planted.y)
    with pytest.raises(ValueError, match=f"{option}: .* is not supported with one_pass=True"):
        fastten.fit(stream, None, 3, one_pass=True, **{option: value})
    assert stream.calls == 0  # refused before any read


def test_one_pass_flag_is_checked(planted):
    with pytest.raises(TypeError, match="one_pass: expected True or False, got 'yes'"):
        fastten.fit(planted.X, planted.y, 3, one_pass="yes")


def test_dask_array_refused():
    da = pytest.importorskip("dask.array", reason="dask is an optional extra (fastten[dask])")
    X = da.zeros((100, 4), chunks=(50, 4))
    with pytest.raises(ValueError, match="one_pass: True reads a stream once.*dask array"):
        fastten.fit(X, np.ones(100), 2, one_pass=True)


def late_bad(planted, late):
    def chunks():
        yield planted.X[:20_000], planted.y[:20_000]  # past the pilot: the bad chunk comes in the pass
        yield late
    return chunks


@pytest.mark.parametrize("late, error, match", [
    ((np.ones((10, 19)), np.ones(10)), ValueError, "block 1: expected 20 features"),
    ((np.ones((10, 20), dtype=np.float32), np.ones(10)), TypeError, "block 1: expected dtype float64"),
    ((np.full((10, 20), np.nan), np.ones(10)), ValueError, "block 1: expected finite values, got 200 NaN"),
    ((np.ones((10, 20)), np.ones(9)), ValueError, r"block 1: expected labels of shape \(10,\)"),
])
def test_bad_chunks_after_the_pilot_name_the_chunk(planted, late, error, match):
    with pytest.raises(error, match=match):
        fastten.fit(late_bad(planted, late), None, 3, one_pass=True, random_state=0)


def test_stream_errors():
    with pytest.raises(ValueError, match="X: expected at least one chunk, got an empty iterator"):
        fastten.fit(lambda: iter([]), None, 2, one_pass=True)
    with pytest.raises(ValueError, match="X: expected at least 2 samples, got 1"):
        fastten.fit(lambda: iter([(np.ones((1, 3)), np.ones(1))]), None, 2, one_pass=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30_000, 4))
    X[:20_000, :] = 1.0  # the pilot sees constant features only

    def chunks():
        yield X, X[:, 0] + X[:, 1] ** 2
    with pytest.raises(ValueError, match="X: expected at least one feature that varies.* in the first 16384 rows"):
        fastten.fit(chunks, None, 2, one_pass=True)


@pytest.mark.parametrize("order", [4, 3])
def test_power_sums_give_the_hermite_moments_of_any_affine_standardisation(order):
    # PowerSums and the re-centring and whitening of the fit against the
    # moments of explicitly standardised rows (DataMoment: its own kernels).
    rng = np.random.default_rng(1)
    n, m = 3000, 4
    Z = rng.standard_normal((n, m)) @ rng.standard_normal((m, m)) + rng.standard_normal(m)
    r = np.tanh(Z @ rng.standard_normal(m)) + 0.1 * rng.standard_normal(n)
    acc = PowerSums(m, order)
    for i in range(0, n, 700):  # blocks: the sums do not depend on the split
        acc.update(Z[i:i + 700], r[i:i + 700])
    mu, C = Z.mean(axis=0), np.cov(Z.T, bias=True)
    vals, vecs = np.linalg.eigh(C)
    A = (vecs / np.sqrt(vals)) @ vecs.T
    Abar = np.zeros((m + 1, m + 1))
    Abar[:m, :m], Abar[:m, m], Abar[m, m] = A, -A @ mu, 1.0
    E = np.einsum(("abce,ia,jb,kc,le->ijkl" if order == 4 else "abc,ia,jb,kc->ijk"), acc.result(),
                  *(Abar,) * order)
    M2, T3, T4 = hermite_moments(E)
    ref = DataMoment((Z - mu) @ A, r)
    eye = np.eye(m)
    pairs = [(M2, ref.second_moment_dot(eye)), (T3, ref.project(eye))]
    if order == 4:
        pairs.append((T4, ref.fourth_projected(eye)))
    else:
        assert T4 is None
    for got, want in pairs:
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


def test_reservoir_is_uniform_and_independent_of_the_blocks():
    n, size = 10_000, 1000
    X = np.arange(n, dtype=np.float64)[:, None]
    samples = []
    for rows in (97, 1000, n):
        res = Reservoir(size, np.random.default_rng(5))
        for i in range(0, n, rows):
            res.update(X[i:i + rows], X[i:i + rows, 0])
        samples.append(res.result())
    for Xs, ys in samples:
        assert np.array_equal(Xs, samples[0][0]) and np.array_equal(ys, samples[0][1])
    picked = samples[0][1]
    assert picked.shape == (size,) and np.unique(picked).size == size and np.all(np.diff(picked) > 0)
    # The count in the first half is hypergeometric: mean 500, sd 15.0; a
    # sampler that kept the first rows (or the last) gives 1000 (or 0).
    first = np.sum(picked < n // 2)
    assert abs(first - 500) <= 5 * 15.0


def test_cross_sums_give_the_mixed_third_moment_of_the_standardised_rows():
    # E[r S3(u)](I, C, C) from CrossSums of rows x and z = B^T x, against
    # the DataMoment of the rows standardised explicitly: T(I, C w, C w).
    rng = np.random.default_rng(2)
    n, d, m = 3000, 5, 3
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    r = np.tanh(X @ rng.standard_normal(d)) + 0.1 * rng.standard_normal(n)
    B = np.linalg.qr(rng.standard_normal((d, m)))[0]
    acc = CrossSums(d, m)
    for i in range(0, n, 1100):
        acc.update(np.hstack([X[i:i + 1100], X[i:i + 1100] @ B]), r[i:i + 1100])

    def root(S, power):
        vals, vecs = np.linalg.eigh(S)
        return (vecs * vals ** power) @ vecs.T

    mu, S = X.mean(axis=0), np.cov(X.T, bias=True)
    Wx = root(S, -0.5)
    A = root(B.T @ S @ B, -0.5)
    C = root(S, 0.5) @ B @ A
    Xbar, Abar = np.zeros((d + 1, d + 1)), np.zeros((m + 1, m + 1))
    Xbar[:d, :d], Xbar[:d, d], Xbar[d, d] = Wx, -Wx @ mu, 1.0
    Abar[:m, :m], Abar[:m, m], Abar[m, m] = A, -A @ (B.T @ mu), 1.0
    T = mixed_hermite(np.einsum("abc,ia,jb,kc->ijk", acc.result(), Xbar, Abar, Abar), C)
    W = rng.standard_normal((m, 4))
    want = DataMoment((X - mu) @ Wx, r).iuu(C @ W)
    got = np.einsum("abc,bj,cj->aj", T, W, W)
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


@pytest.mark.slow
def test_one_pass_recovers_planted_networks_over_seeds():
    # The seed contract of STYLE.md: 10 seeds of a d=20, k=3 planted
    # network with n = 60000 rows (past the 16384-row pilot). Every seed must
    # refine to the planted network (the exact bar), and the tensor stage
    # alone reach |cos| 0.97. Measured: exact on all 10 (test MSE / Var
    # 2e-31 to 6e-27), the tensor stage 0.9937-0.9986.
    for seed in range(10):
        net = make_planted_network(60_000, 20, 3, random_state=seed)
        initial = []

        def keep(network, info):
            if info["stage"] == "init":
                initial.append(network)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fastten.fit(Stream(net.X, net.y), None, 3, one_pass=True, random_state=seed, callback=keep)
        mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
        assert worst_cos(model.A1, net.A1) >= 0.9999 and mse <= 1e-6, seed
        assert worst_cos(initial[0].A1, net.A1) >= 0.97, seed
