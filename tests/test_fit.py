"""fit(), its refinement and the network object. Work in progress toward
issue #4: the recovery bars of that issue are not tested here yet."""

import json
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fastten import _refine
from fastten._refine import refine
from fastten.datasets import make_planted_network
from fastten import ConvergenceWarning, IdentifiabilityWarning, LocalOptimumWarning, fit
from fastten.activations import Activation, derivative
from fastten.network import TwoLayerNet


def test_refinement_converges_quadratically_from_near_the_truth():
    net = make_planted_network(20_000, 10, 3, random_state=0)
    rng = np.random.default_rng(1)
    A1 = net.A1 + 0.05 * rng.standard_normal(net.A1.shape)
    res = refine(net.X, net.y[:, None], A1, net.b1 + 0.05, net.a2[:, None] * 1.1, np.array([0.05]), "sigmoid",
                 rng=rng)
    # Noise-free labels: the optimum has zero loss, where Gauss-Newton
    # converges quadratically; 1e-20 of the label variance is reached only
    # if it does (a first-order method would stall far above).
    assert res.converged and res.losses[-1] <= 1e-20 * np.var(net.y)
    np.testing.assert_allclose(res.A1, net.A1, atol=1e-8)


def test_stall_stop_ends_a_crawl_but_not_a_convergence():
    net = make_planted_network(20_000, 10, 3, random_state=0)
    rng = np.random.default_rng(1)
    args = (net.X, net.y[:, None], net.A1 + 0.05 * rng.standard_normal(net.A1.shape), net.b1 + 0.05,
            net.a2[:, None] * 1.1, np.array([0.05]), "sigmoid")
    # Quadratic convergence gains far more than 2% in any 10 steps: the
    # default stall rule of fit never fires here.
    res = refine(*args, stall=(10, 0.02), rng=np.random.default_rng(2))
    assert res.converged and res.losses[-1] <= 1e-20 * np.var(net.y)
    # A rule that no step can satisfy (a 100% drop over one step) stops the
    # round after its first step, as not converged.
    res = refine(*args, stall=(1, 1.0), rng=np.random.default_rng(2))
    assert res.n_iter == 1 and len(res.losses) == 2 and not res.converged


def test_fit_recovers_an_easy_planted_network():
    # A regression test of the whole pipeline on one problem where the tensor
    # stage lands in the refinement's basin (d=10, k=3, n=5*10^4, seed 0);
    # the rate over seeds is not yet what issue #4 asks (see its note).
    net = make_planted_network(50_000, 10, 3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X, net.y, 3, random_state=0)
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    assert mse <= 1e-12
    cos = np.abs((model.A1 / np.linalg.norm(model.A1, axis=0)).T @ net.A1).max(axis=0)
    assert cos.min() >= 0.9999
    assert model.diagnostics["engine"] == "nonorthogonal"


def test_random_initialisation_skips_the_tensor_stage():
    net = make_planted_network(50_000, 10, 3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X, net.y, 3, init="random", random_state=0)
    assert model.diagnostics["init"] == "random" and model.diagnostics["engine"] is None
    # Measured: from random directions, Levenberg-Marquardt with re-seeding
    # reaches the exact network on this problem too (see the #4 note).
    assert np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test) <= 1e-12


def test_fit_maps_back_from_standardised_coordinates():
    # Affine inputs x = mu + C z: the network fitted on x must predict like
    # the planted one on z.
    net = make_planted_network(50_000, 10, 3, random_state=0)
    rng = np.random.default_rng(5)
    C = np.linalg.qr(rng.standard_normal((10, 10)))[0] * rng.uniform(0.5, 2.0, 10)
    mu = rng.standard_normal(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(net.X @ C.T + mu, net.y, 3, random_state=0)
    f = model.predict(net.X_test @ C.T + mu)
    assert np.mean((f - net.f_test) ** 2) / np.var(net.f_test) <= 1e-10


def test_multiple_outputs_share_the_hidden_layer():
    # Two outputs of one planted hidden layer: A2 is k x m, and the exact
    # network is reached (noise-free labels: zero loss, to rounding).
    net = make_planted_network(30_000, 8, 3, n_test=2_000, random_state=4)
    rng = np.random.default_rng(0)
    A2 = np.column_stack([net.a2, rng.uniform(0.5, 1.5, 3) * rng.choice([-1.0, 1.0], 3)])
    hidden = derivative("sigmoid", net.X @ net.A1 + net.b1)
    model = fit(net.X, hidden @ A2 + [0.0, 1.0], 3, random_state=0)
    assert model.a2.shape == (3, 2) and model.b2.shape == (2,)
    expected = derivative("sigmoid", net.X_test @ net.A1 + net.b1) @ A2 + [0.0, 1.0]
    got = model.predict(net.X_test)
    assert got.shape == (2_000, 2)
    assert np.all(np.mean((got - expected) ** 2, axis=0) / np.var(expected, axis=0) <= 1e-12)


def test_classification_is_within_a_point_of_bayes():
    net = make_planted_network(60_000, 8, 3, task="classification", random_state=1)
    labels = np.where(net.y == 1, "yes", "no")
    model = fit(net.X, labels, 3, task="classification", random_state=0)
    assert list(model.classes) == ["no", "yes"]
    p = net.f_test
    proba = model.predict_proba(net.X_test)
    assert np.all((proba >= 0) & (proba <= 1))
    # Expected accuracies on the test inputs, from the true probabilities
    # (no label sampling error). Measured gap over seeds 0-4 of this
    # problem: at most 0.3 points; the bar is 1 point.
    bayes = np.mean(np.maximum(p, 1 - p))
    ours = np.mean(np.where(model.predict_class(net.X_test) == "yes", p, 1 - p))
    assert ours >= bayes - 0.01
    # Without refinement the tensor stage alone cannot see all these units
    # (the signal of a squashed network is small) and says which.
    with pytest.warns(IdentifiabilityWarning, match=r"units \[[0-2, ]+\] have no detectable third moment"):
        regression = fit(net.X, net.y, 3, random_state=0, refine=False)
    with pytest.raises(ValueError, match="predict_proba: this network was fitted for regression"):
        regression.predict_proba(net.X_test)


def test_classification_with_more_units_than_rows_support_stays_finite():
    # Found by scikit-learn's estimator checks: 20 rows, 3 classes, 10 units.
    # Saturated units make the block preconditioner's per-unit Gram blocks
    # singular, and the damping (1e-12 of the largest diagonal) is below
    # their rounding: Cholesky raised LinAlgError for seeds 1, 2 and 4.
    X = 3 * np.random.RandomState(0).uniform(size=(20, 3))
    y = X[:, 0].astype(int)
    for seed in range(5):
        with warnings.catch_warnings():
            # The fit warns here by design (73 parameters for 20 rows; few
            # directions the moments support): not what this test is about.
            warnings.simplefilter("ignore")
            model = fit(X, y, 10, task="classification", random_state=seed)
        for p in (model.A1, model.b1, model.a2, model.b2):
            assert np.all(np.isfinite(p)), seed
        # The classes are intervals of the first feature: 10 units fit them.
        assert np.mean(model.predict_class(X) == y) >= 0.9, seed


def test_callback_sees_every_step_and_can_stop():
    net = make_planted_network(20_000, 6, 2, random_state=0)
    seen = []

    def watch(network, info):
        seen.append((info["stage"], info["iteration"], info["training_mse"], network.predict(net.X[:5])))
        return info["iteration"] == 2

    model = fit(net.X, net.y, 2, random_state=0, callback=watch)
    assert [s[:2] for s in seen] == [("init", 0), ("refine", 1), ("refine", 2)]
    assert seen[2][2] < seen[0][2]
    np.testing.assert_allclose(model.predict(net.X[:5]), seen[-1][3])


def test_user_activation_fits_and_saves_by_name(tmp_path):
    from scipy.special import expit

    def logistic(t, order):
        s = expit(t)
        ds = s * (1 - s)
        return (s, ds, ds * (1 - 2 * s), ds * (1 - 6 * ds), ds * (1 - 2 * s) * (1 - 12 * ds))[order]

    act = Activation("my-logistic", logistic)
    net = make_planted_network(20_000, 6, 2, random_state=0)
    model = fit(net.X, net.y, 2, activation=act, random_state=0)
    assert np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test) <= 1e-12
    model.save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="user activation 'my-logistic': pass its Activation"):
        TwoLayerNet.load(tmp_path / "net.npz")
    loaded = TwoLayerNet.load(tmp_path / "net.npz", activation=act)
    np.testing.assert_array_equal(loaded.predict(net.X_test), model.predict(net.X_test))


def test_save_load_round_trip_multi_output_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    model = TwoLayerNet(rng.standard_normal((4, 2)), rng.standard_normal(2), rng.standard_normal((2, 3)),
                        rng.standard_normal(3), "relu", {}, np.array(["a", "b", "c"]))
    model.save(tmp_path / "m.npz")
    loaded = TwoLayerNet.load(tmp_path / "m.npz")
    X = rng.standard_normal((7, 4))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert list(loaded.classes) == ["a", "b", "c"]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = TwoLayerNet(rng.standard_normal((4, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.5,
                        "tanh", {"engine": "nonorthogonal", "times": {"total": 1.0}})
    path = tmp_path / "net"  # no extension: the file is written and read under this name
    model.save(path)
    loaded = TwoLayerNet.load(path)
    X = rng.standard_normal((7, 4))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.diagnostics == model.diagnostics and loaded.activation == "tanh"
    np.savez(tmp_path / "other.npz", header=np.array('{"format": "something else"}'))
    with pytest.raises(ValueError, match=r"other.npz' is not a fastten model file \(an .npz archive without"):
        TwoLayerNet.load(tmp_path / "other.npz")


X = np.random.default_rng(0).standard_normal((600, 4))
y = np.random.default_rng(1).standard_normal(600)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((X, y, 0), {}, ValueError, r"n_hidden: expected an integer >= 1, got 0"),
    ((X, y, 2.0), {}, TypeError, r"n_hidden: expected an integer, got 2.0"),
    ((X, y[:-1], 2), {}, ValueError, r"y: expected 600 labels"),
    ((X[:, 0], y, 1), {}, ValueError, r"X: expected a 2-D array"),
    ((X, np.full(600, 2.0), 2), {}, ValueError, r"y: expected labels that vary, got the constant 2.0"),
    ((X, np.where(y > 2, np.nan, y), 2), {}, ValueError, r"y: expected finite values"),
    ((X, y, 2), {"activation": "relu6"}, ValueError, r"activation: expected one of"),
    ((X, y, 2), {"input_model": "uniform"}, ValueError, r"input_model: expected one of"),
    ((X, y, 2), {"init": "zeros"}, ValueError, r"init: expected one of \('tensor', 'random'\), got 'zeros'"),
    ((X, y, 2), {"task": "ranking"}, ValueError, r"task: expected one of \('regression', 'classification'\)"),
    ((X, np.ones((600, 2, 2)), 2), {}, ValueError, r"y: expected an array of shape \(600,\) or \(600, m\)"),
    ((X, np.column_stack([y, np.ones(600)]), 2), {}, ValueError, r"y: expected labels that vary, .* column 1"),
    ((X, y, 2), {"ridge": -1.0}, ValueError, r"ridge: expected a number >= 0 and < 1e\+100, got -1.0"),
    ((X, y, 2), {"alpha": -1e-3}, ValueError, r"alpha: expected a number >= 0 and < 1e\+100, got -0.001"),
    ((X, y, 2), {"alpha": "1"}, TypeError, r"alpha: expected a real number, got '1'"),
    ((X, y, 2), {"early_stopping": 1}, TypeError, r"early_stopping: expected True or False, got 1"),
    ((X, y, 2), {"validation_fraction": 1.0}, ValueError, r"validation_fraction: expected a number > 0 and < 1, got 1.0"),
    ((X, y, 2), {"n_iter_no_change": 0}, ValueError, r"n_iter_no_change: expected an integer >= 1, got 0"),
    ((X[:3], y[:3], 1), {"early_stopping": True, "validation_fraction": 0.2}, ValueError,
     r"validation_fraction: expected a fraction that leaves at least two rows for validation .* 3 rows"),
    ((X, np.where(np.arange(600) == 7, 2, np.arange(600) % 2), 2), {"task": "classification"}, ValueError,
     r"y: expected at least two samples of each class, got one of class 2"),
    ((X, np.zeros(600), 2), {"task": "classification"}, ValueError, r"y: expected labels taking at least two values"),
    ((X, y, 2), {"callback": 5}, TypeError, r"callback: expected None or a callable, got int"),
    ((X, y, 2), {"activation": 3}, TypeError, r"activation: expected a name"),
    ((X, y, 2), {"bias_method": "paper"}, ValueError, r"bias_method: expected one of \('moments', 'fourier', 'zero'\)"),
])
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(*args, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "svd", "init": "random"}, ValueError, r"method: expected one of \('auto', .*\), got 'svd'"),
    ({"refine": "yes"}, TypeError, r"refine: expected True or False, got 'yes'"),
    ({"ridge": True}, TypeError, r"ridge: expected a real number, got True"),
    ({"max_iter": -1}, ValueError, r"max_iter: expected an integer"),
    ({"n_rounds": 0}, ValueError, r"n_rounds: expected an integer"),
    ({"task": None}, ValueError, r"task: expected one of"),
    ({"control_variate": "cubic"}, ValueError,
     r"control_variate: expected one of \('none', 'linear', 'quadratic'\), got 'cubic'"),
    ({"control_variate": None}, ValueError, r"control_variate: expected one of .*, got None"),
    ({"cross_fit": "yes"}, TypeError, r"cross_fit: expected True or False, got 'yes'"),
    ({"cross_fit": True, "control_variate": "none"}, ValueError,
     r"cross_fit: expected False with control_variate='none' .*, got True"),
])
def test_options_are_checked_before_the_data(kwargs, error, match):
    # The data are not even an array: an option error must come first.
    with pytest.raises(error, match=match):
        fit("not data", None, 2, **kwargs)


@pytest.mark.parametrize("n", [1, 300, 2 * 2048 + 17])
@pytest.mark.parametrize("m", [1, 3])
def test_gauss_newton_product_kernel_matches_dense_jacobian(n, m):
    # Reference: the explicit Jacobian J (n m x p) of F = sigma(X A1 + b1) A2 + b2,
    # one block of rows per output c: dF_c/dA1[:, j] = D_j A2[j, c] x,
    # dF_c/db1_j = D_j A2[j, c], dF_c/dA2[j, c] = S_j, dF_c/db2_c = 1.
    rng = np.random.default_rng(n + m)
    d, k = 4, 3
    X = rng.standard_normal((n, d))
    net = _refine._Net(d, k, m)
    theta = rng.standard_normal(net.size)
    state = _refine._State(X, rng.standard_normal((n, m)), theta, net, "tanh")
    A2 = net.unpack(theta)[2]
    blocks = []
    for c in range(m):
        G = state.D * A2[:, c]
        out = np.zeros((n, k * m))
        out[:, c::m] = state.S
        ones = np.zeros((n, m))
        ones[:, c] = 1.0
        blocks.append(np.hstack([(G[:, :, None] * X[:, None, :]).reshape(n, k * d), G, out, ones]))
    J = np.vstack(blocks)
    v = rng.standard_normal(net.size)
    expected = J.T @ (J @ v)
    got = _refine._gn_product(X, state, v, net)
    # A sum of n m products of O(1) terms: float64 rounding stays below 1e-12 relative.
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # The gradient J^T r and the preconditioner's Gram J^T J (all rows) from the same J.
    np.testing.assert_allclose(_refine._gradient(X, state, net), J.T @ state.R.T.reshape(-1), rtol=1e-12,
                               atol=1e-12 * n)
    H, _ = _refine._subsample_gram(X, state, np.arange(n), net)
    np.testing.assert_allclose(H, J.T @ J / n, rtol=1e-12, atol=1e-12 * np.abs(H).max())


def test_same_seed_same_network_and_generator_accepted():
    net = make_planted_network(20_000, 8, 3, noise=0.05, random_state=3)
    a = fit(net.X, net.y, 3, random_state=7)
    b = fit(net.X, net.y, 3, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(a.A1, b.A1)
    np.testing.assert_array_equal(a.a2, b.a2)
    assert json.loads(json.dumps(a.diagnostics))["init"] == "tensor"  # plain JSON values
    for key in ("engine", "moment_orders", "component_weights", "component_weight_gaps", "trusted_components",
                "third_moment_z", "input_condition_number", "output_layer_condition_number",
                "refinement_iterations", "training_mse", "data_passes", "times", "warnings"):
        assert key in a.diagnostics


def test_units_the_third_moment_cannot_see_are_reported():
    # ReLU units with zero bias have E[relu'''] = 0: the third moment does
    # not see them. Without refinement the fit says so; the second moment,
    # which sees them, supplies their starting directions (through the
    # joint decomposition of the second and third moments, or its
    # eigenvectors).
    net = make_planted_network(50_000, 6, 2, activation="relu", bias_range=(0.0, 0.0), random_state=1)
    with pytest.warns(IdentifiabilityWarning, match="no detectable third moment"):
        model = fit(net.X, net.y, 2, activation="relu", refine=False, random_state=0)
    assert model.diagnostics["units_without_third_moment"] == [0, 1]
    assert model.diagnostics["trusted_components"] == []
    assert model.diagnostics["joint_directions"] + model.diagnostics["second_order_directions"] == 2
    assert 2 in model.diagnostics["moment_orders"]


def test_tensor_stage_alone_finds_the_directions():
    # refine=False: the directions come from the moments only. d=10, k=3,
    # n=3e5: measured worst |cos| 0.989-0.998 over seeds 0-4; the bar
    # is 0.9.
    net = make_planted_network(300_000, 10, 3, random_state=0)
    model = fit(net.X, net.y, 3, refine=False, random_state=0)
    cos = np.abs((model.A1 / np.linalg.norm(model.A1, axis=0)).T @ net.A1)
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].min() >= 0.9
    assert model.diagnostics["refinement_iterations"] == 0


@pytest.mark.parametrize("bias_method", ["moments", "fourier", "zero"])
def test_bias_methods_all_reach_the_network(bias_method):
    net = make_planted_network(30_000, 8, 3, random_state=2)
    model = fit(net.X, net.y, 3, bias_method=bias_method, random_state=0)
    assert model.diagnostics["bias_method"] == bias_method
    assert np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test) <= 1e-12


@pytest.mark.parametrize("m", [1, 2])
def test_block_preconditioner_holds_the_diagonal_blocks_of_the_gram_matrix(m):
    rng = np.random.default_rng(m)
    n, d, k = 500, 4, 3
    X = rng.standard_normal((n, d))
    net = _refine._Net(d, k, m)
    state = _refine._State(X, rng.standard_normal((n, m)), rng.standard_normal(net.size), net, "sigmoid")
    rows = np.arange(n)
    full = _refine._FullPreconditioner(X, state, rows, net)
    block = _refine._BlockPreconditioner(X, state, rows, net)
    np.testing.assert_allclose(block.diag, full.diag, rtol=1e-12)
    # The block solve equals the full solve with the off-block entries zeroed.
    unit = np.concatenate([np.repeat(np.arange(k), d), np.arange(k),
                           k + np.tile(np.arange(m), k), k + np.arange(m)])
    masked = np.where(unit[:, None] == unit[None, :], full.H, 0.0)
    masked[np.diag_indices_from(masked)] += 0.1 * full.diag + 1e-12 * full.diag.max()
    v = rng.standard_normal(net.size)
    np.testing.assert_allclose(block.damp(0.1)(v), np.linalg.solve(masked, v), rtol=1e-9)


def test_refinement_with_the_block_preconditioner_converges_too():
    net = make_planted_network(20_000, 10, 3, random_state=0)
    rng = np.random.default_rng(1)
    A1 = net.A1 + 0.05 * rng.standard_normal(net.A1.shape)
    res = refine(net.X, net.y[:, None], A1, net.b1 + 0.05, net.a2[:, None] * 1.1, np.array([0.05]), "sigmoid",
                 block=True, rng=rng)
    assert res.converged and res.losses[-1] <= 1e-20 * np.var(net.y)


def test_fit_limits_blas_threads_while_it_runs_and_restores_them():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="blas_threads acts through threadpoolctl")
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    seen = []

    def watch(network, info):
        seen.append([p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"])

    net = make_planted_network(5_000, 5, 2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # two iterations are not meant to converge
        fit(net.X, net.y, 2, random_state=0, callback=watch, max_iter=2)
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == before
    with pytest.raises(ValueError, match=r"blas_threads: expected an integer in \[1, 2147483647\], got 0"):
        fit(net.X, net.y, 2, blas_threads=0)


def test_a_local_optimum_is_not_returned_silently():
    # Three refinement steps from random directions leave the network far
    # from the planted one: the residual's moments still see the missing
    # units, and the fit must say so.
    net = make_planted_network(20_000, 10, 3, random_state=4)
    with pytest.warns(LocalOptimumWarning, match="residual still correlates"):
        model = fit(net.X, net.y, 3, init="random", n_rounds=1, max_iter=3, random_state=0)
    assert model.diagnostics["residual_structure"] >= 1


def test_a_noisy_optimum_raises_no_local_optimum_warning():
    # At the optimum of noisy labels the residual is the noise, independent
    # of x: its moments stay under their thresholds (0.44-0.57 of them at
    # d=50 over four seeds).
    net = make_planted_network(20_000, 10, 3, noise=0.1, random_state=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LocalOptimumWarning)
        model = fit(net.X, net.y, 3, random_state=0)
    assert model.diagnostics["residual_structure"] < 1


def test_more_units_than_the_moments_support_are_reported():
    # A network with 2 units asked for 4: the moments see 2 directions, the
    # other 2 start at random, and without refinement the fit says so.
    net = make_planted_network(50_000, 8, 2, random_state=6)
    with pytest.warns(IdentifiabilityWarning, match=r"the moments support [0-3] of n_hidden=4 directions"):
        model = fit(net.X, net.y, 4, refine=False, random_state=0)
    assert len(model.diagnostics["trusted_components"]) + model.diagnostics["joint_directions"] <= 3


def test_labels_without_moments_are_reported():
    # Labels linear in x plus noise have no moment of order >= 2 at all: no
    # direction can be found, every unit starts at random, and the fit
    # says so (the subspace's noise edge and the z tests both hold here).
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20_000, 6))
    y = X @ rng.standard_normal(6) + 0.5 * rng.standard_normal(20_000)
    with pytest.warns(IdentifiabilityWarning, match=r"the moments support 0 of n_hidden=2 directions"):
        model = fit(X, y, 2, refine=False, random_state=0)
    assert model.diagnostics["trusted_components"] == []
