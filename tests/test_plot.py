"""fastten.plot: the axes it returns hold the data it was given."""

import itertools
import sys
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastten import TwoLayerNet, fit  # noqa: E402
from fastten.datasets import make_planted_network  # noqa: E402
from fastten.plot import loss_curve, moment_spectrum, recovery  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def planted():
    # 20,000 rows: more than the refinement's first-stage subsample (8,192),
    # so the history has rounds on the subsample and then on all rows.
    return make_planted_network(20_000, 8, 3, random_state=0)


@pytest.fixture(scope="module")
def model(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(planted.X, planted.y, 3, random_state=0)


def test_loss_curve_draws_every_round_on_one_step_axis(model):
    rounds = model.diagnostics["refinement_rounds"]
    stages = model.diagnostics["refinement_stages"]
    assert len(stages) == 2 and [r["stage"] for r in rounds][-1] == 1
    fig, ax = plt.subplots()
    assert loss_curve(model, ax=ax) is ax
    lines = ax.get_lines()
    assert len(lines) == len(rounds)
    end = 0
    for line, record in zip(lines, rounds):
        x, y = line.get_xdata(), line.get_ydata()
        np.testing.assert_array_equal(y, record["losses"])
        # Steps are counted over the whole refinement: a round starts where
        # the previous one ended, one x per accepted step.
        np.testing.assert_array_equal(x, end + np.arange(len(record["losses"])))
        end = x[-1]
        # Levenberg-Marquardt accepts only steps that lower the objective.
        assert np.all(np.diff(y) < 0)
        assert y[-1] == record["loss"]
    assert ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{s['rows']} rows" for s in stages]


def test_loss_curve_records_the_objective_fit_reports(model):
    # The last round runs on all rows, unpenalised: its final objective is
    # the fit's training loss (half the MSE on standardised targets), up to
    # rounding in a different order of summation.
    final = model.diagnostics["refinement_rounds"][-1]["losses"][-1]
    assert final == pytest.approx(model.diagnostics["training_loss"], rel=1e-9, abs=1e-30)


def test_loss_curve_takes_diagnostics_and_a_saved_model(model, tmp_path):
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = TwoLayerNet.load(path)
    ax = loss_curve(loaded.diagnostics)
    for line, record in zip(ax.get_lines(), model.diagnostics["refinement_rounds"]):
        np.testing.assert_array_equal(line.get_ydata(), record["losses"])


def test_loss_curve_without_refinement_is_refused(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(planted.X[:2000], planted.y[:2000], 3, refine=False, random_state=0)
    with pytest.raises(ValueError, match="net_or_diagnostics: .*refine=False"):
        loss_curve(model)
    with pytest.raises(TypeError, match="net_or_diagnostics: expected a fastten.TwoLayerNet"):
        loss_curve([1.0, 0.5])


def test_moment_spectrum_marks_the_noise_edge_and_the_gap(model):
    sub = model.diagnostics["subspace"]
    supported = sub["supported"]
    assert 0 < supported < len(sub["singular_values"])
    ax = moment_spectrum(model)
    values, edge, gap = ax.get_lines()
    np.testing.assert_array_equal(values.get_ydata(), sub["singular_values"])
    np.testing.assert_array_equal(values.get_xdata(), np.arange(1, len(sub["singular_values"]) + 1))
    np.testing.assert_array_equal(edge.get_ydata(), [sub["noise_edge"]] * 2)
    np.testing.assert_array_equal(gap.get_xdata(), [supported + 0.5] * 2)
    assert supported == model.diagnostics["suggested_n_hidden"]
    # The values left of the gap stand above the edge, those right of it not.
    assert np.all(values.get_ydata()[:supported] > sub["noise_edge"])
    assert np.all(values.get_ydata()[supported:] <= sub["noise_edge"])


def test_moment_spectrum_without_a_spectrum_is_refused(planted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(planted.X[:2000], planted.y[:2000], 3, init="random", refine=False, random_state=0)
    with pytest.raises(ValueError, match="net: .*init='random'"):
        moment_spectrum(model)


def _brute_force_matched_cos(A1, A1_true):
    """Reference: the best assignment by trying every one (small k)."""
    C = np.abs((A1 / np.linalg.norm(A1, axis=0)).T @ (A1_true / np.linalg.norm(A1_true, axis=0)))
    k, k_true = C.shape
    best, best_sum = None, -1.0
    for fitted in itertools.permutations(range(k), min(k, k_true)):
        for planted in itertools.combinations(range(k_true), min(k, k_true)):
            total = C[list(fitted), list(planted)].sum()
            if total > best_sum:
                best_sum = total
                best = np.zeros(k_true)
                best[list(planted)] = C[list(fitted), list(planted)]
    return best


@pytest.mark.parametrize("k_fit", [4, 3])
def test_recovery_bars_are_the_matched_cosines(k_fit):
    rng = np.random.default_rng(0)
    A1_true = rng.standard_normal((6, 4))
    # Fitted units: planted ones permuted, sign-flipped, rescaled and
    # perturbed, so the matching has work to do.
    order = rng.permutation(4)[:k_fit]
    A1 = A1_true[:, order] * rng.choice([-2.0, 0.5], k_fit) + 0.3 * rng.standard_normal((6, k_fit))
    net = TwoLayerNet(A1, np.zeros(k_fit), np.ones(k_fit), 0.0, "sigmoid")
    fig, ax = plt.subplots()
    assert recovery(net, A1_true, ax=ax) is ax
    heights = np.array([patch.get_height() for patch in ax.patches])
    np.testing.assert_allclose(heights, _brute_force_matched_cos(A1, A1_true), rtol=1e-12)
    assert (heights == 0).sum() == 4 - k_fit
    assert f"{heights.min():.6f}" in ax.get_title()


def test_recovery_of_a_fit(model, planted):
    ax = recovery(model, planted.A1)
    heights = np.array([patch.get_height() for patch in ax.patches])
    np.testing.assert_allclose(heights, _brute_force_matched_cos(model.A1, planted.A1), rtol=1e-12)


@pytest.mark.parametrize("A1_true, match", [
    (np.ones((5, 3)), "A1_true: expected 6 rows"),
    (np.ones(6), r"A1_true: expected a real \(d, k\) array, got shape \(6,\)"),
    (np.array([["a"] * 2] * 6), "A1_true: expected a real"),
    (np.full((6, 2), np.nan), "A1_true: expected finite values"),
    (np.hstack([np.ones((6, 1)), np.zeros((6, 1))]), "A1_true: expected nonzero weight vectors, got a zero column 1"),
])
def test_recovery_rejects_bad_planted_weights(A1_true, match):
    net = TwoLayerNet(np.ones((6, 2)), np.zeros(2), np.ones(2), 0.0, "sigmoid")
    with pytest.raises(ValueError, match=match):
        recovery(net, A1_true)


def test_bad_network_and_axes_are_refused():
    net = TwoLayerNet(np.eye(3)[:, :2], np.zeros(2), np.ones(2), 0.0, "sigmoid")
    with pytest.raises(TypeError, match="net: expected a fastten.TwoLayerNet, got ndarray"):
        recovery(np.eye(3), np.eye(3))
    with pytest.raises(TypeError, match="ax: expected None or Matplotlib Axes, got str"):
        recovery(net, np.eye(3), ax="axes")
    with pytest.raises(TypeError, match="net: expected a fastten.TwoLayerNet or its diagnostics dict"):
        moment_spectrum("model")


def test_helpers_never_show_and_make_a_figure_each(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("show() called"))
    net = TwoLayerNet(np.eye(3)[:, :2], np.zeros(2), np.ones(2), 0.0, "sigmoid")
    before = len(plt.get_fignums())
    first, second = recovery(net, np.eye(3)), recovery(net, np.eye(3))
    assert first.figure is not second.figure
    assert len(plt.get_fignums()) == before + 2


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    net = TwoLayerNet(np.eye(3)[:, :2], np.zeros(2), np.ones(2), 0.0, "sigmoid")
    with pytest.raises(ImportError, match=r"pip install fastten\[plot\]"):
        recovery(net, np.eye(3))
