"""The benchmark command line (bench/ at the top level of a checkout): usage
errors and missing peers, the report's plain sentences, the per-seed choice
of the peers' configurations, and the peers themselves on tiny problems."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sgd = pytest.importorskip("bench.sgd", reason="bench/ is in a checkout, not in the installed package")
from bench import _peers  # noqa: E402  (after the skip above)


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, names", [
    (("nonsense",), "nonsense"),
    (("sgd", "--scenario", "d7k7"), "d7k7"),
    (("sgd", "--seeds", "0"), "--seeds"),
    (("sgd", "--grid", "huge"), "--grid"),
    (("scaling", "--frobnicate"), "--frobnicate"),
])
def test_bad_command_line_gives_usage_and_exit_code_2(args, names):
    result = run_bench(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m bench") and names in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_peer_is_skipped_with_a_one_line_note(monkeypatch):
    def no_torch():
        raise _peers.MissingPeer(f"PyTorch is not installed ({_peers.INSTALL_HINT} adds it)")

    monkeypatch.setattr(_peers, "_torch", no_torch)
    seconds, missing = sgd.warm_up(["torch-adam"], sgd.Scenario(2000, 5, 2), sgd.GRIDS["standard"])
    assert seconds == {}
    (note,) = missing.values()
    assert "\n" not in note and 'pip install -e ".[bench]"' in note


def _summary(times):
    """A summary as sgd.summarise returns it, for methods with these median
    times to the three thresholds."""
    return {method: {"config": "lr=0.1, batch=256" if method.startswith("torch") else "-", "seeds": 5,
                     "final_error": 1e-8,
                     "time_to": {f"{thr:g}": {"median_s": t, "reached": 5 * (t < math.inf)}
                                 for thr, t in zip(sgd.THRESHOLDS, ts)}}
            for method, ts in times.items()}


def test_report_says_plainly_when_a_peer_wins():
    lines = sgd.verdicts(_summary({"fastten": (2.0, 3.0, 4.0), "fastten-random": (1.5, 1.0, math.inf),
                                   "torch-sgd": (1.0, 6.0, math.inf)}), budget=60)
    first, second, third, _ = lines
    assert "fastest is PyTorch SGD" in first and "a peer wins here" in first
    assert "2.0x sooner than fastten's default fit (1.00 s against 2.00 s)" in first
    assert "fastest is fastten fit, init=\"random\"" in second and "2.0x sooner than PyTorch SGD" in second
    assert "does not reach it within 60 s" in third


def test_a_diverged_configuration_ranks_last_instead_of_crashing(monkeypatch):
    # SGD at lr=1 in the --full grid diverged to NaN weights, and matching
    # NaN columns to the planted ones raised inside scipy: --full crashed.
    def fake_runner(method, config, threads=None):
        lr = config[0]

        def run(problem, budget, seed):
            if lr > 0.5:
                return _peers.Run(curve=[(0.1, 0.5, 1.0), (0.2, math.nan, 2.0)], final_error=math.nan, seconds=0.2,
                                  A1=np.full(problem.A1.shape, np.nan))
            return _peers.Run(curve=[(0.1, 0.5, 1.0), (0.2, 1e-3, 2.0)], final_error=1e-3, seconds=0.2,
                              A1=problem.A1)
        return run

    monkeypatch.setattr(sgd, "runner", fake_runner)
    problem = sgd.make_problem("tiny", sgd.Scenario(500, 4, 2), seed=0, n=500)
    records = [sgd.measured("torch-sgd", (lr, 256), problem, 1.0, 0) for lr in (0.1, 1.0)]
    diverged = next(r for r in records if r["config"] == "lr=1, batch=256")
    assert diverged["final_error"] == math.inf and diverged["worst_cos"] is None
    (best,) = sgd.best_per_seed(records)
    assert best["config"] == "lr=0.1, batch=256" and best["final_error"] == 1e-3
    assert best["config_to"]["0.01"] == "lr=0.1, batch=256" and best["passes_to"]["0.01"] == 2.0


# ----------------------------------------------------------------------------
# The per-seed choice of configuration (pure Python: no peer needed)
# ----------------------------------------------------------------------------

def _record(method, config, seed, times, passes=None, final=1e-7):
    """A run record as sgd.measured returns it, with these times (None: not
    reached) to the three thresholds."""
    keys = [f"{thr:g}" for thr in sgd.THRESHOLDS]
    passes = passes or [None if t is None else 10 * t for t in times]
    return {"method": method, "config": config, "seed": seed, "time_to": dict(zip(keys, times)),
            "passes_to": dict(zip(keys, passes)), "final_error": final, "seconds": 5.0, "worst_cos": 0.99,
            "peak_extra_mb": 1.0, "passes": 50.0, "passes_note": "epochs", "passes_bound": False, "warnings": [],
            "curve": [[0.0, 1.0, 0.0]]}


def test_the_standard_grid_holds_the_configurations_issue_11_names():
    adam = sgd.configs("torch-adam", sgd.GRIDS["standard"])
    assert {(lr, b) for lr in (1e-2, 3e-3, 1e-3) for b in (256, 1024, 4096)} <= set(adam)
    assert len(sgd.configs("torch-sgd", sgd.GRIDS["standard"])) >= 9
    assert {h for h, _ in sgd.configs("torch-lbfgs", sgd.GRIDS["standard"])} >= {10, 100}
    assert sgd.configs("fastten", sgd.GRIDS["standard"]) == [None]
    assert sgd.QUICK["grid"] == sgd.FULL["grid"] == "standard"


def test_each_seed_and_threshold_gets_the_configuration_that_reached_it_first():
    runs = [_record("torch-adam", "lr=0.01", 0, (1.0, 3.0, None), final=2e-6),
            _record("torch-adam", "lr=0.003", 0, (2.0, 2.5, 9.0), final=1e-7),
            _record("torch-adam", "lr=0.01", 1, (0.5, 2.0, 8.0), final=1e-7),
            _record("torch-adam", "lr=0.003", 1, (0.7, 4.0, None), final=1e-5)]
    seed0, seed1 = sgd.best_per_seed(runs)
    assert seed0["time_to"] == {"0.01": 1.0, "0.0001": 2.5, "1e-06": 9.0}
    assert seed0["config_to"] == {"0.01": "lr=0.01", "0.0001": "lr=0.003", "1e-06": "lr=0.003"}
    assert seed0["passes_to"]["0.0001"] == 25.0 and seed0["config"] == "lr=0.003"  # lowest final error
    assert seed1["config_to"] == {"0.01": "lr=0.01", "0.0001": "lr=0.01", "1e-06": "lr=0.01"}
    row = sgd.summarise(runs)["torch-adam"]
    assert row["config"] == "per-seed best of 2 (oracle)"
    assert row["time_to"]["0.0001"] == {"median_s": 2.25, "reached": 2, "median_passes": 22.5}
    assert row["choices"]["0.0001"] == {"lr=0.003": 1, "lr=0.01": 1}
    assert set(row["grid"]) == {"lr=0.01", "lr=0.003"}


def test_an_unreached_threshold_counts_as_infinitely_slow_in_the_median():
    runs = [_record("torch-sgd", "a", seed, times) for seed, times in
            enumerate([(1.0, None, None), (2.0, 4.0, None), (3.0, None, None)])]
    row = sgd.summarise(runs)["torch-sgd"]
    assert row["time_to"]["0.0001"]["median_s"] == math.inf and row["time_to"]["0.0001"]["reached"] == 1
    assert row["time_to"]["0.0001"]["median_passes"] is None
    assert row["time_to"]["0.01"]["median_s"] == 2.0


def test_the_pytorch_row_takes_the_best_of_all_optimizers_per_seed_and_fastten_is_compared_with_it():
    runs = [_record("fastten", "", 0, (0.5, 1.0, 1.2), passes=(30.0, 30.0, 30.0)),
            _record("fastten", "", 1, (0.6, 1.1, 1.3), passes=(31.0, 31.0, 31.0)),
            _record("torch-adam", "lr=0.01, batch=1024", 0, (0.2, 3.0, None)),
            _record("torch-adam", "lr=0.01, batch=1024", 1, (0.3, 6.0, None)),
            _record("torch-lbfgs", "history=10, float32", 0, (0.4, 5.0, 7.0)),
            _record("torch-lbfgs", "history=10, float32", 1, (0.4, 4.0, 8.0))]
    for r in runs[:2]:
        r["passes_bound"] = True
    summary = sgd.summarise(runs)
    best = summary[sgd.TORCH_BEST]
    assert best["time_to"]["0.0001"]["median_s"] == 3.5  # seed 0: Adam 3.0, seed 1: L-BFGS 4.0
    assert best["choices"]["0.0001"] == {"adam lr=0.01, batch=1024": 1, "lbfgs history=10, float32": 1}
    assert summary["fastten"]["passes_bound"]
    lines = sgd.verdicts(summary, budget=10)
    assert "fastest is PyTorch Adam" in lines[0] and "a peer wins here" in lines[0]
    assert "PyTorch, per-seed best of all its configurations reaches it 2.2x sooner" in lines[0]
    assert "fastten's default fit reaches it 3.3x sooner than PyTorch, per-seed best" in lines[1]
    assert "data passes <=30.5 against 35" in lines[1]
    table = sgd.table(summary, {})
    assert "<=30.5 passes" in table and "3.50 s, 35 passes (2/2)" in table


def test_fastten_passes_are_its_total_an_upper_bound(monkeypatch):
    def fake_runner(method, config, threads=None):
        return lambda problem, budget, seed: _peers.Run(
            curve=[(0.1, 0.5, None), (0.2, 1e-5, None), (0.3, 1e-5, 42.0)], final_error=1e-5, seconds=0.3,
            A1=problem.A1, passes=42.0, passes_per_point=False)

    monkeypatch.setattr(sgd, "runner", fake_runner)
    problem = sgd.make_problem("tiny", sgd.Scenario(500, 4, 2), seed=0, n=500)
    record = sgd.measured("fastten", None, problem, 1.0, 0)
    assert record["passes_bound"] and record["passes_to"] == {"0.01": 42.0, "0.0001": 42.0, "1e-06": None}
    assert record["time_to"]["0.0001"] == 0.2


def test_minpack_is_left_out_where_one_iteration_outlasts_the_budget():
    grid = sgd.GRIDS["standard"]
    kept, notes = sgd.runnable_configs("scipy-lm", grid, sgd.SCENARIOS["d20k5"], 10.0)
    assert kept == ["lm", "trf-lsmr"] and notes == []
    kept, (note,) = sgd.runnable_configs("scipy-lm", grid, sgd.SCENARIOS["d50k10"], 30.0)
    assert kept == ["trf-lsmr"] and "MINPACK lm not run" in note
    assert sgd.runnable_configs("torch-adam", grid, sgd.SCENARIOS["d50k10"], 30.0)[0] == \
        sgd.configs("torch-adam", grid)


# ----------------------------------------------------------------------------
# The peers on a tiny problem
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return sgd.make_problem("tiny", sgd.Scenario(3000, 6, 3), seed=1, n=3000)


def _check_run(run, problem, note):
    # Wall-clock budgets on a shared machine: check progress, not a level.
    times = [p[0] for p in run.curve]
    assert times == sorted(times) and run.curve[-1][1] < 0.5 * run.curve[0][1]
    passes = [p[2] for p in run.curve]
    assert passes == sorted(passes) and passes[-1] <= run.passes and run.passes_note == note
    assert run.A1.shape == problem.A1.shape and np.all(np.isfinite(run.A1))


def test_the_lm_jacobian_is_the_derivative_of_the_residuals():
    rng = np.random.default_rng(0)
    n, d, k = 40, 5, 3
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    theta = rng.standard_normal(d * k + 2 * k + 1) * 0.5
    for activation in ("sigmoid", "tanh", "softplus"):
        J = _peers.lm_jacobian(theta, X, k, activation)
        step = 1e-6
        numeric = np.column_stack([
            (_peers.lm_residuals(theta + step * e, X, y, k, activation)
             - _peers.lm_residuals(theta - step * e, X, y, k, activation)) / (2 * step)
            for e in np.eye(theta.size)])
        np.testing.assert_allclose(J, numeric, atol=1e-7)


@pytest.mark.parametrize("method", ["lm", "trf-lsmr"])
def test_the_scipy_least_squares_peer_fits_a_tiny_network(tiny, method):
    run = _peers.run_scipy_lm(tiny, 1.0, 0, method)
    _check_run(run, tiny, "function + Jacobian evaluations")
    assert run.passes == run.extra["residual_evaluations"] + run.extra["jacobian_evaluations"]


@pytest.fixture
def torch_one_thread():
    """PyTorch on one thread: on a shared 2-core machine two OpenMP threads
    can be 50x slower, and these tests run on a wall-clock budget."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0, the CPU wheel)")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


def test_the_torch_lbfgs_peer_fits_a_tiny_network(tiny, torch_one_thread):
    run = _peers.run_torch_lbfgs(tiny, 1.0, 0, 10, "float64")
    _check_run(run, tiny, "function evaluations")
    assert run.extra["line_search"] == "strong_wolfe" and run.final_error == run.curve[-1][1]


def test_the_torch_minibatch_peer_counts_epochs_as_samples_over_n(tiny, torch_one_thread):
    run = _peers.run_torch(tiny, 1.0, 0, "adam", 1e-2, 1024)
    _check_run(run, tiny, "epochs")
    assert run.curve[0][2] == 0.0 and run.passes == pytest.approx(run.curve[-1][2])


def test_default_threads_are_pytorchs(monkeypatch):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0, the CPU wheel)")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    assert sgd.default_threads() == 7


def test_a_busy_machine_is_flagged_when_methods_run_on_several_threads():
    assert "run alone on the machine" in sgd.busy_warning("2.10 1.88 1.82", 2)
    assert sgd.busy_warning("2.10 1.88 1.82", 1) is None
    assert sgd.busy_warning("0.05 0.10 0.20", 2) is None
    assert sgd.busy_warning("unknown", 2) is None


def test_default_threads_without_pytorch_are_all_cpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert sgd.default_threads() == (os.cpu_count() or 1)


# ----------------------------------------------------------------------------
# python -m bench real: scikit-learn's bundled data sets
# ----------------------------------------------------------------------------

real = pytest.importorskip("bench.real", reason="bench/ is in a checkout, not in the installed package")


class _Refuses:
    """A model whose fit raises, as fastten does for an input it does not take."""

    def fit(self, X, y):
        raise ValueError("n_hidden: expected an integer in [1, 4], got 8")


class _Constant:
    """A model that predicts the first training label everywhere (NaN if told to)."""

    def __init__(self, value=None):
        self.value = value

    def fit(self, X, y):
        self.label_ = y[0] if self.value is None else self.value
        return self

    def predict(self, X):
        return np.full(len(X), self.label_)


def _fits(method, width, scores, dataset="toy", task="classification"):
    """Fit records as bench.real.run_dataset makes them; None: a refused split."""
    return [{"dataset": dataset, "task": task, "width": width, "method": method, "split": i, "seed": i,
             "status": "refused" if s is None else "ok", "score": s, "fit_s": 0.1 * (i + 1),
             "message": "ValueError: no" if s is None else None, "warnings": [], "alpha": 1e-4}
            for i, s in enumerate(scores)]


def test_real_records_a_refusal_or_a_failure_instead_of_raising():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test and bench extras have it)")
    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 0, 1])
    refused = real.fit_and_score(_Refuses(), "classification", X, y, X, y)
    assert refused["status"] == "refused" and refused["score"] is None
    assert refused["message"] == "ValueError: n_hidden: expected an integer in [1, 4], got 8"
    failed = real.fit_and_score(_Constant(np.nan), "regression", X, y.astype(float), X, y.astype(float))
    assert failed["status"] == "error" and "non-finite" in failed["message"]
    scored = real.fit_and_score(_Constant(), "classification", X, y, X, y)
    assert scored["status"] == "ok" and scored["score"] == 0.5  # label 0 everywhere: half right


def test_real_summary_takes_medians_over_scored_splits_and_the_verdict_the_best_full_rows():
    fits = (_fits("fastten", 8, [0.95, None, 0.99, 0.99]) + _fits("fastten", 4, [0.93, 0.94, 0.95, 0.96])
            + _fits("sklearn-lbfgs", 4, [0.94, 0.95, 0.96, 0.97]) + _fits("linear", None, [0.90, 0.90, 0.91, 0.92]))
    rows = real.summarise(fits)
    assert [(r["width"], r["method"]) for r in rows] == [(4, "fastten"), (4, "sklearn-lbfgs"), (8, "fastten"),
                                                        (None, "linear")]
    wide = rows[2]
    assert wide["scored"] == 3 and wide["failed"] == 1 and wide["median"] == 0.99
    assert wide["messages"] == {"refused: ValueError: no": 1}
    assert wide["median_fit_s"] == pytest.approx(0.3)  # fits that refused are not timed
    assert rows[0]["q25"] <= rows[0]["median"] <= rows[0]["q75"] and rows[0]["iqr"] == pytest.approx(0.015)
    (verdict,) = real.verdicts(rows)
    # width 8 has the higher median but refused a split: width 4 is compared
    assert verdict["fastten"] == {"method": "fastten", "width": 4, "median": pytest.approx(0.945)}
    assert verdict["best"]["method"] == "sklearn-lbfgs" and verdict["margin"] == pytest.approx(-0.01)
    assert verdict["meets_bar"]
    line = real.verdict_line(verdict, rows)
    assert line.startswith("- toy (accuracy): ") and "margin -0.010: meets the bar" in line


def test_real_verdict_says_when_fastten_refused_everywhere():
    rows = real.summarise(_fits("fastten", 3, [None, None]) + _fits("linear", None, [0.9, 0.8]))
    (verdict,) = real.verdicts(rows)
    assert verdict["fastten"] is None and verdict["margin"] is None
    assert "fastten scored on no width on every split (2/2 fits refused or failed)" in real.verdict_line(verdict,
                                                                                                          rows)


def test_real_passes_fastten_only_the_options_its_fit_takes():
    settings = {"activation": "tanh", "early_stopping": "on", "alphas": [1e-3]}
    old = real.make_model("fastten", "regression", 4, dict(settings, fastten_options=["activation", "task"]),
                          1e-3, 7)
    assert old.options == {"activation": "tanh", "task": "regression", "random_state": 7}
    new = real.make_model("fastten", "regression", 4,
                          dict(settings, fastten_options=["activation", "task", "alpha", "early_stopping"]), 1e-3, 7)
    assert new.options["alpha"] == 1e-3 and new.options["early_stopping"] is True


def test_real_rejects_an_unknown_data_set_with_usage():
    result = run_bench("real", "--datasets", "mnist")
    assert result.returncode == 2 and "--datasets" in result.stderr and "Traceback" not in result.stderr


def test_real_smoke_run_prints_the_table_and_writes_the_json(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test and bench extras have it)")
    import json

    path = tmp_path / "real.jsonl"
    result = run_bench("real", "--datasets", "iris", "--widths", "3", "--splits", "2", "--threads", "1",
                       "--json", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "- command: `python -m bench real --datasets iris --widths 3 --splits 2 --seed 0`" in out
    assert "scikit-learn 1." in out and "| data set |" in out and "- iris (accuracy): " in out
    for label in ("| fastten ", "| scikit-learn MLP, adam ", "| scikit-learn MLP, lbfgs ", "| LogisticRegression "):
        assert sum(line.startswith("| iris") and label in line for line in out.splitlines()) == 1, label
    records = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("fit") == 2 * 4 and kinds.count("row") == 4 and kinds.count("verdict") == 1
    assert kinds[-1] == "run" and records[-1]["splits"] == 2
    for fit in (r for r in records if r["kind"] == "fit"):
        # fastten may refuse iris (three classes): then the refusal is recorded, with its message
        assert (fit["status"] == "ok") == (fit["score"] is not None) == (fit["message"] is None), fit
    rows = {r["method"]: r for r in records if r["kind"] == "row"}
    assert rows["linear"]["median"] > 0.8  # LogisticRegression on iris: about 0.97
    assert rows["fastten"]["scored"] + rows["fastten"]["failed"] == 2


def test_real_alpha_grid_refits_with_the_alpha_that_scores_best_on_the_inner_split(monkeypatch):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test and bench extras have it)")
    def model(method, task, width, settings, alpha, seed):
        return _Constant(1 if alpha == 1e-2 else 0)  # only alpha=1e-2 predicts the majority label

    monkeypatch.setattr(real, "make_model", model)
    X, y = np.zeros((40, 2)), np.array([1] * 30 + [0] * 10)
    settings = {"alphas": [1e-4, 1e-2, 1.0], "fastten_options": ["alpha"]}
    record = real.fit_selected("sklearn-adam", "classification", 4, settings, X, y, X, y, 0)
    assert record["alpha"] == 1e-2 and record["score"] == 0.75
    assert record["inner_scores"] == {"0.0001": 0.3, "0.01": 0.7, "1.0": 0.3}
    no_alpha = real.fit_selected("fastten", "classification", 4, dict(settings, fastten_options=[]), X, y, X, y, 0)
    assert no_alpha["alpha"] is None and no_alpha["inner_scores"] == {}  # nothing to choose: one fit


def test_bench_moments_population_reference_matches_the_dense_one():
    from bench import moments

    from fastten.datasets import make_planted_network

    from . import reference

    net = make_planted_network(10, 6, 3, random_state=0)
    W = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))[0]
    got = moments.population_projected(net, W)
    for order, M in zip((2, 3, 4), got):
        dense = reference.population_moment(net.A1, net.b1, net.a2, "sigmoid", order)
        want = np.einsum(dense, list(range(order)), *[a for i in range(order) for a in (W, [i, order + i])],
                         list(range(order, 2 * order)))
        np.testing.assert_allclose(M, want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------
# python -m bench scale
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, names", [
    (("scale", "--n", "0"), "--n"),
    (("scale", "--compare-n", "-1"), "--compare-n"),
    (("scale", "--rss-bar", "lots"), "--rss-bar"),
])
def test_scale_usage_errors_exit_2(args, names):
    result = run_bench(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m bench") and names in result.stderr
    assert "Traceback" not in result.stderr


def test_scale_writes_the_planted_network_block_by_block(tmp_path, monkeypatch):
    from bench import scale

    monkeypatch.setattr(scale, "GEN_ROWS", 300)  # several blocks, the last one short
    net = scale.planted_weights(6, 2, seed=4)
    x_path, y_path = scale.write_data(tmp_path, "t", net, 1000, 4, scale.TRAIN_STREAM)
    X, y = np.load(x_path, mmap_mode="r"), np.load(y_path)
    assert X.dtype == np.float32 and X.shape == (1000, 6) and y.dtype == np.float64 and y.shape == (1000,)
    # The labels are the planted network's outputs at the stored float32 rows,
    # and the weights are make_planted_network's for the same seed.
    np.testing.assert_array_equal(y, net.output(np.asarray(X, dtype=np.float64)))
    from fastten.datasets import make_planted_network
    np.testing.assert_array_equal(net.A1, make_planted_network(50, 6, 2, random_state=4).A1)
    # Blocks of the same stream: the same rows whatever the block size.
    monkeypatch.setattr(scale, "GEN_ROWS", 1000)
    x2, _ = scale.write_data(tmp_path, "u", net, 1000, 4, scale.TRAIN_STREAM)
    np.testing.assert_array_equal(np.load(x2), X)
    X_test, f_test = scale.fresh_rows(net, 1000, 4)
    assert not np.array_equal(X_test, X) and np.array_equal(f_test, net.output(X_test.astype(np.float64)))


def test_scale_tiny_run_prints_the_table_and_writes_the_json(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    result = run_bench("scale", "--n", "6000", "--d", "6", "--k", "2", "--compare-n", "3000", "--test-rows", "2000",
                       "--no-dask", "--folder", str(data), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| 6,000 x 6, k=2 +\| memory-mapped \.npy +\| +[0-9.]+ \|", result.stdout)
    report = (out / "scale.md").read_text()
    assert "| data set" in report and "in memory" in report and "peak RSS" in report
    records = [json.loads(line) for line in (out / "scale.jsonl").read_text().splitlines()]
    fits = [r for r in records if r.get("kind") != "run"]
    assert [(r["data_set"], r["route"]) for r in fits] == [("big", "memmap"), ("compare", "memory"),
                                                          ("compare", "memmap")]
    for r in fits:
        # A noise-free planted network of 2 units in 6 dimensions: every
        # route recovers it (the recovery bench's exact bar).
        assert r["exact"] and r["worst_cos"] >= 0.9999 and r["relative_mse"] <= 1e-6
        assert 0 < r["peak_rss_mb"] and r["rss_before_fit_mb"] <= r["peak_rss_mb"]
        assert r["data_passes"]["output_layer"] == 1 and r["seconds"] > 0
    assert fits[0]["data_passes"]["gather"] == 1 and "gather" not in fits[1]["data_passes"]
    assert list(data.iterdir()) == []  # the data files are deleted without --keep


# ----------------------------------------------------------------------------
# python -m bench onepass
# ----------------------------------------------------------------------------

def test_onepass_tiny_run_writes_the_table(tmp_path):
    result = run_bench("onepass", "--n", "20000", "--d", "6", "--k", "2", "--seeds", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "onepass.jsonl").read_text().splitlines()]
    fits = [r for r in records if r.get("kind") != "run"]
    assert [r["mode"] for r in fits] == ["multi-pass", "one pass", "one pass, no full-space step"]
    assert fits[0]["passes"] > 10 and [r["passes"] for r in fits[1:]] == [1, 1]
    # 2 planted units in 6 dimensions, noise-free: both fits refine to the
    # planted network (the recovery bench's exact bar).
    for r in fits[:2]:
        assert r["refined"][0] >= 0.9999 and r["refined"][1] <= 1e-6
    assert fits[2]["refined"] is None
    table = (tmp_path / "onepass.md").read_text()
    assert "noise-free" in table and table.count("| 0 ") == 3


@pytest.mark.parametrize("args, name", [(("--seeds", "0"), "--seeds"), (("--noise", "-1"), "--noise")])
def test_onepass_usage_error_exits_2(args, name):
    result = run_bench("onepass", *args)
    assert result.returncode == 2 and name in result.stderr and "Traceback" not in result.stderr
