"""The benchmark command line (bench/ at the top level of a checkout): usage
errors and missing peers, and the report's plain sentences."""

import math
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
    seconds, missing = sgd.warm_up(["torch-adam"], sgd.Scenario(2000, 5, 2), sgd.GRIDS["quick"])
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
    def fake_runner(method, config):
        lr = config[0]

        def run(problem, budget, seed):
            if lr > 0.5:
                return _peers.Run(curve=[(0.1, 0.5), (0.2, math.nan)], final_error=math.nan, seconds=0.2,
                                  A1=np.full(problem.A1.shape, np.nan))
            return _peers.Run(curve=[(0.1, 0.5), (0.2, 1e-3)], final_error=1e-3, seconds=0.2, A1=problem.A1)
        return run

    monkeypatch.setattr(sgd, "runner", fake_runner)
    problem = sgd.make_problem("tiny", sgd.Scenario(500, 4, 2), seed=0, n=500)
    best, trials = sgd.tune("torch-sgd", {"sgd": ((0.1, 1.0), (256,))}, problem, budget=1.0)
    assert best == (0.1, 256)
    diverged = next(t for t in trials if t["config"] == "lr=1, batch=256")
    assert diverged["final_error"] == math.inf and diverged["worst_cos"] is None
