"""fit(..., verbose=): silent by default, stage and round messages at 1,
every refinement iteration at 2, through the fastten logger when it would
show them and on stderr otherwise, a tqdm bar when tqdm is installed."""

import logging
import re
import sys
import threading

import numpy as np
import pytest

from fastten import fit
from fastten.datasets import make_planted_network

STAGE_LINES = ["fit: standardise done in", "fit: tensor stage done in", "fit: output layer done in",
               "fit: refinement done in", "fit: done in"]
ROUND = re.compile(r"fit: refinement round (\d+) on (\d+) rows done in [0-9.]+ s: (\d+) iterations, "
                   r"loss ([0-9.e+-]+), (converged|not converged)")
STAGE = re.compile(r"fit: refinement stage on (\d+) rows done: (\d+) iterations, loss ([0-9.e+-]+)")
ITERATION = re.compile(r"fit: refinement iteration (\d+) \(round (\d+)\): loss ([0-9.e+-]+)")


@pytest.fixture(scope="module")
def small():
    # 3000 rows: one refinement stage on all of them.
    return make_planted_network(3000, 5, 2, random_state=0, n_test=10)


@pytest.fixture(scope="module")
def large():
    # More rows than the refinement's subsample (8192): rounds on the
    # subsample, then a stage on all rows.
    return make_planted_network(20_000, 5, 2, random_state=1, noise=0.05, n_test=10)


@pytest.fixture
def no_tqdm(monkeypatch):
    """The plain-message path, as without tqdm installed."""
    monkeypatch.setitem(sys.modules, "tqdm", None)


@pytest.fixture
def unconfigured():
    """The fastten logger as a user who configured no logging finds it
    (under pytest the root logger has handlers, at level WARNING)."""
    logger = logging.getLogger("fastten")
    assert not logger.isEnabledFor(logging.INFO)
    return logger


def progress_lines(text):
    return [line.split("fastten: ", 1)[1] for line in text.splitlines() if "fastten: fit:" in line]


def accepted_steps(net):
    return sum(len(r["losses"]) - 1 for r in net.diagnostics["refinement_rounds"])


def test_silent_by_default(small, capsys, caplog):
    caplog.set_level(logging.INFO, logger="fastten")
    fit(small.X, small.y, 2, random_state=0)
    fit(small.X, small.y, 2, random_state=0, verbose=0)
    fit(small.X, small.y, 2, random_state=0, verbose=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    progress = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()
                or "refinement iteration" in r.getMessage() or "refinement round" in r.getMessage()]
    assert progress == []


def test_verbose_does_not_change_the_fit(small, capsys, no_tqdm):
    quiet = fit(small.X, small.y, 2, random_state=0)
    loud = fit(small.X, small.y, 2, random_state=0, verbose=2)
    np.testing.assert_array_equal(quiet.A1, loud.A1)
    np.testing.assert_array_equal(quiet.a2, loud.a2)
    assert quiet.diagnostics["refinement_rounds"] == loud.diagnostics["refinement_rounds"]


def test_verbose_1_stages_and_rounds_on_stderr(large, capsys, unconfigured, no_tqdm):
    handlers, level = list(unconfigured.handlers), unconfigured.level
    net = fit(large.X, large.y, 2, random_state=0, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    lines = progress_lines(err)
    assert all(line.startswith("fastten: fit: ") for line in err.splitlines()), err
    # The stages in order, each once.
    stage_lines = [line for line in lines if not ROUND.match(line) and not STAGE.match(line)]
    assert len(stage_lines) == len(STAGE_LINES)
    for line, start in zip(stage_lines, STAGE_LINES):
        assert line.startswith(start), (line, start)
    assert re.search(r"output layer done in [0-9.]+ s, loss [0-9.e+-]+$", stage_lines[2])
    final = float(stage_lines[-1].rsplit("training loss ", 1)[1])
    assert final == pytest.approx(net.diagnostics["training_loss"], rel=1e-4)  # printed to 5 digits
    # One line per round and per refinement stage, true to the diagnostics.
    rounds = [ROUND.match(line) for line in lines if ROUND.match(line)]
    records = net.diagnostics["refinement_rounds"]
    assert len(rounds) == len(records) >= 1
    for i, (match, record) in enumerate(zip(rounds, records), start=1):
        assert int(match[1]) == i
        assert int(match[3]) == record["iterations"]
        assert float(match[4]) == pytest.approx(record["loss"], rel=1e-4)
        assert (match[5] == "converged") == record["converged"]
    stages = [STAGE.match(line) for line in lines if STAGE.match(line)]
    assert [int(m[1]) for m in stages] == [s["rows"] for s in net.diagnostics["refinement_stages"]]
    assert int(stages[0][1]) < 20_000 == int(stages[-1][1])  # a subsample first, then all rows
    assert not any(ITERATION.match(line) for line in lines)
    # Nothing global changed.
    assert unconfigured.handlers == handlers and unconfigured.level == level


def test_verbose_2_every_iteration(small, capsys, unconfigured, no_tqdm):
    net = fit(small.X, small.y, 2, random_state=0, verbose=2)
    lines = progress_lines(capsys.readouterr().err)
    iterations = [ITERATION.match(line) for line in lines if ITERATION.match(line)]
    losses = [loss for record in net.diagnostics["refinement_rounds"] for loss in record["losses"][1:]]
    assert len(iterations) == accepted_steps(net) == len(losses) >= 1
    assert [int(m[1]) for m in iterations] == list(range(1, len(losses) + 1))
    np.testing.assert_allclose([float(m[3]) for m in iterations], losses, rtol=1e-6)  # printed to 7 digits
    # The iterations come between the output layer and the end of their round.
    first = lines.index(next(line for line in lines if ITERATION.match(line)))
    assert lines[first - 1].startswith("fit: output layer done")
    assert ROUND.match(lines[first + len(losses)])


def test_configured_logging_gets_the_records(small, capsys, caplog, no_tqdm):
    caplog.set_level(logging.INFO, logger="fastten")
    fit(small.X, small.y, 2, random_state=0, verbose=1)
    assert capsys.readouterr().err == ""  # not both routes
    messages = [r.getMessage() for r in caplog.records if r.name == "fastten" and r.levelno == logging.INFO]
    for start in STAGE_LINES:
        assert sum(m.startswith(start) for m in messages) == 1, start
    assert any(ROUND.match(m) for m in messages)


def test_verbose_checked_before_the_data():
    X = np.full((10, 3), np.nan)  # bad data: the option's error must come first
    for bad in (-1, -5):
        with pytest.raises(ValueError, match=r"verbose: expected an int >= 0 or a bool, got -\d"):
            fit(X, np.arange(10.0), 2, verbose=bad)
    for bad in (1.5, 1.0, "1", None, [1]):
        with pytest.raises(TypeError, match=r"verbose: expected an int >= 0 or a bool, got .* of type"):
            fit(X, np.arange(10.0), 2, verbose=bad)


def test_numpy_ints_and_true_are_accepted(small, capsys, unconfigured, no_tqdm):
    fit(small.X, small.y, 2, random_state=0, verbose=np.int64(1), refine=False)
    one = progress_lines(capsys.readouterr().err)
    fit(small.X, small.y, 2, random_state=0, verbose=True, refine=False)
    true = progress_lines(capsys.readouterr().err)
    assert len(one) == len(true) == len(STAGE_LINES)


def test_threads_keep_their_own_messages(small, capsys, unconfigured, no_tqdm):
    errors = []

    def run():
        try:
            fit(small.X, small.y, 2, random_state=0, verbose=1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = progress_lines(capsys.readouterr().err)
    assert sum(line.startswith("fit: done in") for line in lines) == 2
    assert unconfigured.handlers == []


# ---------------------------------------------------------------- tqdm


@pytest.fixture
def bars(monkeypatch):
    """The tqdm bars the fits open, held here (so that garbage collection,
    which closes a bar too, cannot hide one left open)."""
    tqdm = pytest.importorskip("tqdm")
    opened = []

    class Recorded(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr("fastten._progress._bar_class", lambda: Recorded)
    return opened


def closed(bar):
    return bar.disable  # tqdm.close() disables the bar


def test_tqdm_bar_over_the_refinement(small, capsys, unconfigured, bars):
    net = fit(small.X, small.y, 2, random_state=0, verbose=1)
    err = capsys.readouterr().err
    steps = accepted_steps(net)
    assert len(bars) == 1 and closed(bars[0]) and bars[0].n == steps
    assert re.search(rf"fastten refine, round 1: {steps}it \[", err), err
    assert "loss=" in err
    # The messages are still all there, the bar around them.
    lines = progress_lines(err)
    for start in STAGE_LINES:
        assert any(line.startswith(start) for line in lines), start


def test_tqdm_bar_closed_after_an_exception(small, capsys, bars):
    def callback(network, info):
        if info["stage"] == "refine" and info["iteration"] == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fit(small.X, small.y, 2, random_state=0, verbose=1, callback=callback)
    assert len(bars) == 1 and bars[0].n == 2  # the bar was open when the callback raised
    assert closed(bars[0])


def test_real_tqdm_is_found(small, capsys):
    tqdm = pytest.importorskip("tqdm")
    fit(small.X, small.y, 2, random_state=0, verbose=1)
    assert "fastten refine, round 1:" in capsys.readouterr().err
    assert len(getattr(tqdm.tqdm, "_instances", ())) == 0


def test_no_bar_without_tqdm(small, capsys, no_tqdm):
    fit(small.X, small.y, 2, random_state=0, verbose=1)
    assert "fastten refine" not in capsys.readouterr().err


# ---------------------------------------------------------------- wrappers


def test_sklearn_estimator_passes_verbose(small, capsys, unconfigured, no_tqdm):
    pytest.importorskip("sklearn")
    from fastten.sklearn import NNLiftRegressor

    NNLiftRegressor(n_hidden=2, random_state=0).fit(small.X, small.y)
    assert capsys.readouterr().err == ""
    NNLiftRegressor(n_hidden=2, random_state=0, verbose=1).fit(small.X, small.y)
    assert any(line.startswith("fit: tensor stage done") for line in progress_lines(capsys.readouterr().err))
    with pytest.raises(ValueError, match="verbose"):
        NNLiftRegressor(n_hidden=2, verbose=-1).fit(small.X, small.y)


def test_cli_v_shows_the_stages(small, tmp_path, capsys, no_tqdm):
    from fastten.cli import main

    data = tmp_path / "d.npz"
    np.savez(data, X=small.X, y=small.y)
    argv = ["fit", str(data), "-k", "2", "-o", str(tmp_path / "m.npz"), "--random-state", "0"]
    assert main(["-v"] + argv) == 0
    lines = progress_lines(capsys.readouterr().err)
    for start in STAGE_LINES:
        assert any(line.startswith(start) for line in lines), start
    assert not any(ITERATION.match(line) for line in lines)
    assert main(["-vv"] + argv) == 0
    assert any(ITERATION.match(line) for line in progress_lines(capsys.readouterr().err))
