"""Threads over fixed chunks of rows (fastten._workers): the chunks depend on
the row count only, so a fit and a pass give the same bits on any number of
threads."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastten import fit
from fastten._sources import ArraySource, run_pass
from fastten._workers import MAX_CHUNKS, MIN_CHUNK_ROWS, Workers, chunks
from fastten.accumulate import Covariance, ThirdMomentIUU
from fastten.datasets import make_planted_network


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3_000_000), limit=st.none() | st.integers(1, 100_000))
def test_chunks_cover_the_rows_in_order_evenly(n, limit):
    bounds = chunks(n, limit)
    if n == 0:
        assert bounds == []
        return
    assert [start for start, _ in bounds] == [0] + [stop for _, stop in bounds[:-1]]
    assert bounds[-1][1] == n
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1
    if limit is not None:
        assert max(sizes) <= limit
    else:
        # At most MAX_CHUNKS of equal length (the last shorter by less than
        # one row per chunk), none shorter than MIN_CHUNK_ROWS unless n is.
        assert len(bounds) <= MAX_CHUNKS
        assert len(set(sizes[:-1])) <= 1 and sizes[0] - sizes[-1] < len(bounds)
        assert len(bounds) == 1 or sizes[0] >= MIN_CHUNK_ROWS


def test_map_keeps_order_and_reads_a_stream_a_few_items_ahead():
    pulled = []

    def stream():
        for i in range(40):
            pulled.append(i)
            yield (i,)

    ahead = []

    def work(i):
        ahead.append(len(pulled) - i)
        return i * i

    with Workers(3) as workers:
        assert workers.map(work, stream()) == [i * i for i in range(40)]
    # At most 2 * threads items submitted before the oldest is collected.
    assert max(ahead) <= 2 * 3


def test_map_raises_the_first_error_in_order():
    def work(i):
        if i in (5, 7):
            raise ValueError(f"item {i}")
        return i

    with Workers(2) as workers, pytest.raises(ValueError, match="item 5"):
        workers.map(work, ((i,) for i in range(10)))


def _pass(X, y, threads, accumulators):
    with Workers(threads) as workers:
        return run_pass(ArraySource(X, y, 4096, workers), *accumulators)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_pass_by_blocks_has_the_same_bits_on_any_thread_count(threads):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50_000, 7))
    y = X[:, 0] ** 3 + rng.standard_normal(50_000)
    U = rng.standard_normal((7, 3))
    one = _pass(X, y, 1, (Covariance(), ThirdMomentIUU(U)))
    many = _pass(X, y, threads, (Covariance(), ThirdMomentIUU(U)))
    stats_one, stats_many = one[0].result(), many[0].result()
    for name in ("mean", "cov", "y_mean", "y_cov", "cross"):
        assert np.array_equal(getattr(stats_one, name), getattr(stats_many, name)), name
    assert np.array_equal(one[1].result(), many[1].result())
    # Against one accumulator fed the rows in order: the same statistic up to
    # rounding (the merges add the blocks' centred sums, Chan et al.).
    serial = Covariance().update(X, y).result()
    np.testing.assert_allclose(stats_one.cov, serial.cov, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(one[1].result(), ThirdMomentIUU(U).update(X, y).result(), rtol=1e-11, atol=1e-13)


def test_fit_has_the_same_bits_on_one_two_and_three_threads():
    # 40,000 rows: four chunks, so every stage splits its passes.
    net = make_planted_network(40_000, 8, 3, random_state=1)
    params = []
    for threads in (1, 2, 3):
        model = fit(net.X, net.y, 3, random_state=5, n_threads=threads)
        params.append(np.concatenate([model.A1.ravel(), model.b1, np.ravel(model.a2), np.ravel(model.b2)]))
        assert model.diagnostics["training_mse"] < 1e-20
    assert np.array_equal(params[0], params[1])
    assert np.array_equal(params[0], params[2])


def test_memmap_fit_has_the_same_bits_on_one_and_two_threads(tmp_path):
    # More rows than a fit out of core gathers (16384 here), and noisy
    # labels: the refinement's last stage takes steps on the stream.
    net = make_planted_network(30_000, 6, 2, noise=0.1, random_state=2)
    path = tmp_path / "X.npy"
    np.save(path, net.X)
    params = []
    for threads in (1, 2):
        model = fit(str(path), net.y, 2, random_state=3, n_threads=threads, block_rows=5000)
        params.append(np.concatenate([model.A1.ravel(), model.b1, np.ravel(model.a2), np.ravel(model.b2)]))
        last = model.diagnostics["refinement_stages"][-1]
        assert last["rows"] == 30_000 and last["iterations"] > 0
    assert np.array_equal(params[0], params[1])


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, r"n_threads: expected an integer in \[1, 1024\], got 0"),
    (1.5, TypeError, r"n_threads: expected an integer, got 1.5"),
    ("2", TypeError, r"n_threads: expected an integer, got '2'"),
])
def test_fit_refuses_a_bad_thread_count(value, error, message):
    net = make_planted_network(500, 3, 1, random_state=0)
    with pytest.raises(error, match=message):
        fit(net.X, net.y, 1, n_threads=value)


def test_moment_coefficients_by_chunks_match_one_block():
    from fastten import _bias

    rng = np.random.default_rng(4)
    X = rng.standard_normal((40_000, 6))
    U = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    y = np.tanh(X @ U).sum(axis=1) + 0.1 * rng.standard_normal(40_000)
    with Workers(1) as one, Workers(3) as three:
        a = _bias.moment_coefficients(X, y, U, return_cov=True, workers=one)
        b = _bias.moment_coefficients(X, y, U, return_cov=True, workers=three)
    for x, z in zip(a, b):
        assert np.array_equal(x, z)
    # Four chunks combined by the pairwise update against the direct
    # centred sums of all rows (the old one-block path): rounding only.
    Z = X @ U
    G = U.T @ U
    yc = y - y.mean()
    influence = [(score * yc[:, None]) @ np.linalg.inv(H)
                 for H, score in zip((G, G * G, G * G * G), _bias._projected_scores(Z, G))]
    means = [q.mean(axis=0) for q in influence]
    for got, want in zip(a[:3], means):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    centred = [q - c for q, c in zip(influence, means)]
    cov = np.einsum("ij,ij->j", centred[0], centred[2]) / (40_000 * 39_999)
    np.testing.assert_allclose(a[3][:, 0, 2], cov, rtol=1e-10)
