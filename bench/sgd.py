"""fastten against gradient training, on planted networks.

``python -m bench sgd`` draws planted sigmoid networks (x ~ N(0, I);
fastten.datasets.make_planted_network) and trains on identical data, with the
same thread count and the same wall-clock budget per run: fastten.fit in full,
fastten without refinement (refine=False), fastten's refinement from a random
start (init="random"); a PyTorch MLP of the same width trained by Adam, by SGD
with momentum (learning-rate x batch-size grids) and by full-batch L-BFGS
(strong Wolfe; history sizes); SciPy's least_squares (MINPACK
Levenberg-Marquardt, trust-region LSMR); scikit-learn's MLPRegressor (adam,
lbfgs). Every configuration of a grid runs on every seed; a grid's row reports,
for each seed and threshold, the configuration that got there first (a
per-seed oracle choice on the test error, which favours the peers). Error =
mean((f_hat - f)^2) / Var(f) on 10,000 noise-free test points (noisy scenarios
too), logged against training time with the evaluation time subtracted, with
the data passes made so far. Every method first runs once on a small problem
of the scenario's shape (compilation and start-up, reported separately).
Figures are medians over seeds.
"""

import argparse
import contextlib
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from . import _peers as P
from . import _timing as T

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
THRESHOLDS = (1e-2, 1e-4, 1e-6)
HEADLINE = "0.0001"  # the threshold whose first-reaching configuration is plotted
N_TEST = 10_000
MINPACK_BUDGET_SHARE = 0.25  # skip MINPACK's LM when one iteration would take longer than this share


@dataclass(frozen=True)
class Scenario:
    n: int
    d: int
    k: int
    noise: float = 0.0
    weight_norm: float = 1.0
    activation: str = "sigmoid"

    def describe(self):
        text = f"n={self.n:,}, d={self.d}, k={self.k}, {self.activation}"
        text += f", noise sd {self.noise:g}" if self.noise else ", noise-free"
        if self.weight_norm != 1.0:
            text += f", weight_norm={self.weight_norm:g}"
        return text


SCENARIOS = {
    "d20k5": Scenario(20_000, 20, 5),
    "d20k5-noisy": Scenario(20_000, 20, 5, noise=0.1),
    "d50k10": Scenario(100_000, 50, 10),
    "d50k10-noisy": Scenario(100_000, 50, 10, noise=0.1),
    "d50k10-hard": Scenario(100_000, 50, 10, weight_norm=3.0),
    "d100k20": Scenario(200_000, 100, 20),
    "d100k20-noisy": Scenario(200_000, 100, 20, noise=0.1),
}
QUICK = {"scenarios": ("d20k5", "d50k10"), "seeds": 2, "budget": 10.0, "grid": "standard"}
FULL = {"scenarios": tuple(SCENARIOS), "seeds": 5, "budget": 120.0, "grid": "standard"}

METHODS = ("fastten", "fastten-no-refine", "fastten-random", "torch-adam", "torch-sgd", "torch-lbfgs", "scipy-lm",
           "sklearn-adam", "sklearn-lbfgs")
TORCH_BEST = "torch-best"  # derived row: per seed, the best of every PyTorch configuration run
LABELS = {"fastten": "fastten fit (tensor init + refinement)", "fastten-no-refine": "fastten fit, refine=False",
          "fastten-random": "fastten fit, init=\"random\"", "torch-adam": "PyTorch Adam (per-seed best of grid)",
          "torch-sgd": "PyTorch SGD, momentum 0.9 (per-seed best of grid)",
          "torch-lbfgs": "PyTorch L-BFGS, full batch (per-seed best of grid)",
          "scipy-lm": "SciPy least_squares, LM / trust region (per-seed best)",
          "sklearn-adam": "scikit-learn MLP, adam", "sklearn-lbfgs": "scikit-learn MLP, lbfgs",
          TORCH_BEST: "PyTorch, per-seed best of all its configurations"}
GRIDS = {  # grid name -> method -> its configurations' axes
    # "small" is for smoke tests only: not the peers at their best.
    "small": {"torch-adam": ((1e-2, 3e-3), (1024,)), "torch-sgd": ((0.1,), (256,)),
              "torch-lbfgs": ((100,), ("float64",)), "scipy-lm": ("lm", "trf-lsmr")},
    # The grid of issue #11: Adam at lr 1e-2, 3e-3, 1e-3 x batch 256, 1024, 4096.
    "standard": {"torch-adam": ((1e-2, 3e-3, 1e-3), (256, 1024, 4096)),
                 "torch-sgd": ((0.03, 0.1, 0.3), (256, 1024, 4096)),
                 "torch-lbfgs": ((10, 100), ("float32", "float64")), "scipy-lm": ("lm", "trf-lsmr")},
    "wide": {"torch-adam": ((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (64, 256, 1024, 4096)),
             "torch-sgd": ((0.01, 0.03, 0.1, 0.3, 1.0), (64, 256, 1024, 4096)),
             "torch-lbfgs": ((5, 10, 30, 100), ("float32", "float64")), "scipy-lm": ("lm", "trf-lsmr")},
}


def configs(method, grid):
    """The configurations of `method` in `grid`: (lr, batch) for Adam and
    SGD, (history size, dtype) for L-BFGS, a method name for SciPy, [None]
    for a method without a grid."""
    if method not in grid:
        return [None]
    axes = grid[method]
    if method == "scipy-lm":
        return list(axes)
    first, second = axes
    return [(a, b) for b in second for a in first]


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {value}")
        return value
    return parse


def add_parser(subparsers):
    """Register the 'sgd' sub-command."""
    p = subparsers.add_parser("sgd", help="fastten against PyTorch and scikit-learn training, same budget",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help=f"the long version: every scenario, {FULL['seeds']} seeds, {FULL['budget']:g} s budget "
                        f"(quick default: {', '.join(QUICK['scenarios'])}, {QUICK['seeds']} seeds, "
                        f"{QUICK['budget']:g} s)")
    p.add_argument("--scenario", action="append", choices=tuple(SCENARIOS), metavar="NAME",
                   help=f"run this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--seeds", type=_positive(int), help="seeds per scenario (overrides the default)")
    p.add_argument("--budget", type=_positive(float), help="wall-clock seconds per run (overrides the default)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"methods to run: {', '.join(METHODS)}")
    p.add_argument("--grid", choices=tuple(GRIDS),
                   help="configuration grids of the peers: 'standard' (default; Adam lr 1e-2, 3e-3, 1e-3 x batch "
                        "256, 1024, 4096, SGD likewise, L-BFGS history 10, 100 x float32, float64, SciPy lm and "
                        "trf-lsmr), 'wide' (more of each), 'small' (smoke tests only)")
    p.add_argument("--threads", type=_positive(int),
                   help="threads for every method (default: PyTorch's default torch.get_num_threads(), "
                        "or all CPUs without PyTorch)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="directory for sgd.jsonl, sgd.md and the plots")
    p.set_defaults(func=run)
    return p


def command_line(args):
    parts = ["python -m bench sgd"] + (["--full"] if args.full else [])
    parts += [f"--scenario {s}" for s in args.scenario or ()]
    parts += [f"--seeds {args.seeds}"] if args.seeds else []
    parts += [f"--budget {args.budget:g}"] if args.budget else []
    parts += [f"--grid {args.grid}"] if getattr(args, "grid", None) else []
    if list(args.methods) != list(METHODS):
        parts.append("--methods " + " ".join(args.methods))
    parts += [f"--threads {args.threads}"] if args.threads else []
    return " ".join(parts)


# ----------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------

def default_threads():
    """The thread count PyTorch uses by default here (torch.get_num_threads(),
    read before anything sets it), or every CPU when PyTorch is missing."""
    try:
        import torch
    except ImportError:
        return os.cpu_count() or 1
    return torch.get_num_threads()


def limit_threads(threads):
    """Give every library `threads` threads: BLAS/OpenMP through threadpoolctl
    (the returned context manager), Numba and PyTorch directly."""
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print(f"- threadpoolctl is not installed ({P.INSTALL_HINT} adds it): BLAS threads not limited", flush=True)
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


# ----------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------

def make_problem(name, scenario, seed, n=None):
    from fastten.datasets import make_planted_network

    net = make_planted_network(n or scenario.n, scenario.d, scenario.k, activation=scenario.activation,
                               weight_norm=scenario.weight_norm, noise=scenario.noise,
                               n_test=N_TEST if n is None else 500, random_state=seed)
    return P.Problem(name, seed, net.X, net.y, net.X_test, net.f_test, net.A1, scenario.activation)


def runner(method, config=None, threads=None):
    """A function (problem, budget, seed) -> Run for one method and configuration
    (fastten on ``threads`` threads: its n_threads)."""
    if method.startswith("fastten"):
        variant = {"fastten": "full", "fastten-no-refine": "no-refine", "fastten-random": "random"}[method]
        return lambda pb, budget, seed: P.run_fastten(pb, budget, seed, variant, threads)
    if method == "torch-lbfgs":
        history, dtype = config
        return lambda pb, budget, seed: P.run_torch_lbfgs(pb, budget, seed, history, dtype)
    if method.startswith("torch"):
        optimizer = method.split("-")[1]
        lr, batch = config
        return lambda pb, budget, seed: P.run_torch(pb, budget, seed, optimizer, lr, batch)
    if method == "scipy-lm":
        return lambda pb, budget, seed: P.run_scipy_lm(pb, budget, seed, config or "lm")
    return {"sklearn-adam": P.run_sklearn_adam, "sklearn-lbfgs": P.run_sklearn_lbfgs}[method]


def time_to(curve, threshold):
    """First logged time at which the error is at most threshold, else None."""
    return next((point[0] for point in curve if point[1] <= threshold), None)


def passes_to(curve, threshold):
    """Data passes made by the first logged point at which the error is at
    most threshold (None if not reached or not logged)."""
    return next((point[2] if len(point) > 2 else None for point in curve if point[1] <= threshold), None)


def measured(method, config, problem, budget, seed, threads=None):
    """One run inside PeakRSS, as a JSON-ready record."""
    with T.PeakRSS(interval=0.01) as mem:
        result = runner(method, config, threads)(problem, budget, seed)
    # A diverged run (a learning rate too large: NaN weights) ranks last.
    final = result.final_error if math.isfinite(result.final_error) else math.inf
    times = {f"{thr:g}": time_to(result.curve, thr) for thr in THRESHOLDS}
    if result.passes_per_point:
        passes = {f"{thr:g}": passes_to(result.curve, thr) for thr in THRESHOLDS}
    else:  # only the total is known: an upper bound on the passes to any threshold reached
        passes = {key: (result.passes if t is not None else None) for key, t in times.items()}
    return {"method": method, "config": _config_text(method, config), "seed": seed, "budget_s": budget,
            "curve": [[float(point[0]), float(point[1]), _float_or_none(point[2] if len(point) > 2 else None)]
                      for point in result.curve],
            "final_error": final, "seconds": result.seconds, "worst_cos": P.worst_cos(problem.A1, result.A1),
            "peak_extra_mb": mem.extra_mb, "passes": result.passes, "passes_note": result.passes_note,
            "passes_bound": not result.passes_per_point, "warnings": result.warnings, "extra": result.extra,
            "time_to": times, "passes_to": passes}


def _float_or_none(value):
    return None if value is None else float(value)


def _config_text(method, config):
    if config is None:
        return ""
    if method == "torch-lbfgs":
        return f"history={config[0]}, {config[1]}"
    if method == "scipy-lm":
        return {"lm": "MINPACK lm", "trf-lsmr": "trf, lsmr"}.get(config, str(config))
    return f"lr={config[0]:g}, batch={config[1]}"


def runnable_configs(method, grid, scenario, budget):
    """configs(method, grid) less those that cannot do anything within the
    budget, with a note for each one dropped: MINPACK's LM when a single
    iteration (a QR of the n x p Jacobian, which the budget cannot
    interrupt) would take more than MINPACK_BUDGET_SHARE of the budget, and
    the SciPy peer altogether when its dense Jacobians would not fit in memory."""
    kept, notes = [], []
    if method == "scipy-lm":
        memory = P.lm_memory_note(scenario.n, scenario.d, scenario.k)
        if memory:
            return [], [f"scipy-lm not run: it {memory}"]
    for config in configs(method, grid):
        if method == "scipy-lm" and config == "lm":
            seconds = P.minpack_iteration_seconds(scenario.n, scenario.d, scenario.k)
            if seconds > MINPACK_BUDGET_SHARE * budget:
                notes.append(f"scipy-lm: MINPACK lm not run: one iteration (a QR of the {scenario.n:,} x "
                             f"{scenario.d * scenario.k + 2 * scenario.k + 1} Jacobian, O(n p^2)) takes about "
                             f"{seconds:.0f} s here, more than {MINPACK_BUDGET_SHARE:g} of the {budget:g} s budget")
                continue
        kept.append(config)
    return kept, notes


def warm_up(methods, scenario, grid, threads=None):
    """Run every method once (its first configuration) on a small problem of
    the scenario's shape.

    Returns ({method: seconds}, {method: reason}) -- the second for peers
    that are not installed (skipped from then on)."""
    params = scenario.d * scenario.k + 2 * scenario.k + 1
    problem = make_problem("warm-up", scenario, seed=10_000, n=max(2000, 2 * params))
    seconds, missing = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        try:
            runner(method, configs(method, grid)[0], threads)(problem, 0.5, 0)
        except P.MissingPeer as exc:
            missing[method] = str(exc)
            continue
        seconds[method] = time.perf_counter() - t0
    return seconds, missing


# ----------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------

def _keys():
    return [f"{thr:g}" for thr in THRESHOLDS]


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def best_per_seed(runs, label=lambda r: r["config"]):
    """One record per seed from runs of several configurations: for each
    threshold, the time and data passes of the configuration that reached it
    first (ties: fewer passes) and which one that was (config_to); the final
    error, worst |cos|, memory and total passes of the configuration with the
    lowest final error. This is the per-seed oracle choice: made by looking
    at the test error, so it favours the peer."""
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r)
    out = []
    for seed in sorted(by_seed):
        rs = by_seed[seed]
        best_final = min(rs, key=lambda r: (r["final_error"], r["seconds"]))
        rec = {"seed": seed, "time_to": {}, "passes_to": {}, "config_to": {}, "configs": len(rs),
               "config": label(best_final), "final_error": best_final["final_error"],
               "worst_cos": best_final["worst_cos"], "peak_extra_mb": best_final["peak_extra_mb"],
               "passes": best_final["passes"], "passes_note": best_final["passes_note"],
               "passes_bound": any(r.get("passes_bound") for r in rs), "warnings": [], "curve": best_final["curve"]}
        for key in _keys():
            reached = [r for r in rs if r["time_to"][key] is not None]
            if not reached:
                rec["time_to"][key] = rec["passes_to"][key] = rec["config_to"][key] = None
                continue
            first = min(reached, key=lambda r: (r["time_to"][key], _or_inf(r.get("passes_to", {}).get(key))))
            rec["time_to"][key] = first["time_to"][key]
            rec["passes_to"][key] = first.get("passes_to", {}).get(key)
            rec["config_to"][key] = label(first)
            if key == HEADLINE:
                rec["curve"] = first["curve"]
        out.append(rec)
    return out


def _or_inf(value):
    return math.inf if value is None else value


def _median_inf(values):
    """Median with None counted as infinitely large."""
    return statistics.median([_or_inf(v) for v in values])


def _summary_row(runs, config):
    times, choices = {}, {}
    for key in _keys():
        values = [r["time_to"][key] for r in runs]
        reached = [r for r in runs if r["time_to"][key] is not None]
        passes = [r.get("passes_to", {}).get(key) if r["time_to"][key] is not None else None for r in runs]
        if any(p is None for p, r in zip(passes, runs) if r["time_to"][key] is not None):
            median_passes = None  # some run reached it without logging its passes
        else:
            median_passes = _median_inf(passes)
        times[key] = {"median_s": _median_inf(values), "reached": len(reached),
                      "median_passes": None if median_passes == math.inf else median_passes}
        counts = {}
        for r in reached:
            choice = r.get("config_to", {}).get(key)
            if choice is not None:
                counts[choice] = counts.get(choice, 0) + 1
        if counts:
            choices[key] = counts
    return {"config": config, "seeds": len(runs), "time_to": times,
            "final_error": _median([r["final_error"] for r in runs]),
            "worst_cos": _median([r["worst_cos"] for r in runs]),
            "peak_extra_mb": _median([r["peak_extra_mb"] for r in runs]),
            "passes": _median([r["passes"] for r in runs]),
            "passes_note": runs[0]["passes_note"], "passes_bound": any(r.get("passes_bound") for r in runs),
            "choices": choices, "warnings": _warning_kinds(runs)}


def summarise(records):
    """Medians over seeds for each method: times and data passes to the
    thresholds (a seed that never reached a threshold counts as infinitely
    slow), final error, worst |cos|, peak memory, total passes. A method run
    in several configurations is first reduced to its per-seed best
    (best_per_seed); if PyTorch ran, a TORCH_BEST row takes the per-seed best
    over all of its optimizers and configurations."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in records if r["method"] == method]
        per_seed = {}
        for r in runs:
            per_seed[r["seed"]] = per_seed.get(r["seed"], 0) + 1
        if max(per_seed.values()) > 1 or len({r["config"] for r in runs}) > 1:
            n_configs = max(per_seed.values())
            reduced = best_per_seed(runs)
            for rec, warnings_of in zip(reduced, _by_seed(runs)):
                rec["warnings"] = warnings_of
            out[method] = _summary_row(reduced, f"per-seed best of {n_configs} (oracle)")
            out[method]["grid"] = _grid_rows(runs)
        else:
            out[method] = _summary_row(runs, runs[0]["config"])
    torch_runs = [r for r in records if r["method"].startswith("torch")]
    if torch_runs:
        reduced = best_per_seed(torch_runs, label=lambda r: f"{r['method'][6:]} {r['config']}")
        n_configs = max(rec["configs"] for rec in reduced)
        out[TORCH_BEST] = _summary_row(reduced, f"per-seed best of {n_configs} (oracle)")
    return out


def _by_seed(runs):
    """The warnings of each seed's runs, seeds in order (for best_per_seed's records)."""
    seeds = sorted({r["seed"] for r in runs})
    return [sorted({w for r in runs if r["seed"] == s for w in r["warnings"]}) for s in seeds]


def _grid_rows(runs):
    """Every configuration's medians over seeds (times to the thresholds, final error)."""
    rows = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        rs = [r for r in runs if r["config"] == config]
        rows[config] = {"seeds": len(rs), "final_error": _median([r["final_error"] for r in rs]),
                        "time_to": {key: {"median_s": _median_inf([r["time_to"][key] for r in rs]),
                                          "reached": sum(r["time_to"][key] is not None for r in rs)}
                                    for key in _keys()}}
    return rows


def _warning_kinds(runs):
    """Distinct warnings, numbers replaced by '#' and lists by '[...]', with
    the number of runs that raised each."""
    kinds = {}
    for r in runs:
        for kind in {re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", re.sub(r"\[[^\]]*\]", "[...]", w))
                     for w in r["warnings"]}:
            kinds[kind] = kinds.get(kind, 0) + 1
    return [f"{kind} ({count}/{len(runs)} runs)" for kind, count in sorted(kinds.items())]


def _passes_text(value, bound=False):
    if value is None:
        return "-"
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return ("<=" if bound else "") + text


def _time_cell(entry, seeds, bound=False):
    if entry["median_s"] == math.inf:
        return f"not within budget ({entry['reached']}/{seeds})"
    text = f"{entry['median_s']:.2f} s"
    if entry.get("median_passes") is not None:
        text += f", {_passes_text(entry['median_passes'], bound)} passes"
    return text + f" ({entry['reached']}/{seeds})"


def table(summary, warmups):
    headers = ["method", "config"] + [f"to {thr:g}: time, data passes (reached)" for thr in THRESHOLDS] + [
        "final rel. error", "worst \\|cos\\|", "peak extra (MB)", "data passes in all", "warm-up (s)"]
    rows = []
    for method, s in summary.items():
        passes = s["passes_note"] if s["passes"] is None else f"{s['passes']:.3g} {s['passes_note']}"
        bound = s.get("passes_bound", False)
        rows.append([LABELS[method], s["config"] or "-"]
                    + [_time_cell(s["time_to"][f"{thr:g}"], s["seeds"], bound) for thr in THRESHOLDS]
                    + [f"{s['final_error']:.2e}", T.fmt(s["worst_cos"], ".3f"), T.fmt(s["peak_extra_mb"], ".0f"),
                       passes, T.fmt(warmups.get(method), ".1f")])
    return T.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))


def grid_table(summary):
    """Every configuration of every grid method: medians over seeds."""
    headers = ["method", "config"] + [f"time to {thr:g} (reached)" for thr in THRESHOLDS] + ["final rel. error"]
    rows = []
    for method, s in summary.items():
        for config, g in s.get("grid", {}).items():
            rows.append([method, config] + [_time_cell(g["time_to"][key], g["seeds"]) for key in _keys()]
                        + [f"{g['final_error']:.2e}"])
    return T.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2)) if rows else None


def choice_lines(summary):
    """For each grid row: which configuration reached each threshold first, in how many seeds."""
    lines = []
    for method, s in summary.items():
        if not s.get("choices"):
            continue
        parts = [f"{key}: " + ", ".join(f"{c} ({n})" for c, n in sorted(counts.items(), key=lambda i: -i[1]))
                 for key, counts in s["choices"].items()]
        lines.append(f"- {LABELS[method]}, first to each threshold (seeds): " + "; ".join(parts))
    return lines


def _comparison_target(summary, key):
    """The PyTorch row fastten is compared with: TORCH_BEST when present,
    else the PyTorch row with the smallest median time."""
    if TORCH_BEST in summary:
        return TORCH_BEST, summary[TORCH_BEST]
    torch_runs = {m: s for m, s in summary.items() if m.startswith("torch")}
    if not torch_runs:
        return None, None
    return min(torch_runs.items(), key=lambda item: item[1]["time_to"][key]["median_s"])


def verdicts(summary, budget):
    """Plain sentences: who is fastest to each threshold, and fastten against
    the best PyTorch configuration; a peer that wins is named as winning."""
    lines = []
    fastten = summary.get("fastten")
    ranked_rows = {m: s for m, s in summary.items() if m != TORCH_BEST}
    for thr in THRESHOLDS:
        key = f"{thr:g}"
        ranked = sorted(ranked_rows.items(), key=lambda item: item[1]["time_to"][key]["median_s"])
        lead, lead_s = ranked[0]
        if lead_s["time_to"][key]["median_s"] == math.inf:
            lines.append(f"- {key}: no method reaches it within the {budget:g} s budget (median over seeds).")
            continue
        text = f"- {key}: fastest is {LABELS[lead]} ({lead_s['time_to'][key]['median_s']:.2f} s median)"
        if not lead.startswith("fastten"):
            text += " -- a peer wins here"
        best, bs = _comparison_target(summary, key)
        if fastten is not None and best is not None:
            ft, tt = fastten["time_to"][key]["median_s"], bs["time_to"][key]["median_s"]
            label = LABELS[best] if best == TORCH_BEST else f"{LABELS[best]} ({bs['config']})"
            if ft < math.inf and tt < math.inf:
                if ft <= tt:
                    text += f"; fastten's default fit reaches it {tt / ft:.1f}x sooner than {label}, {tt:.2f} s"
                else:
                    text += f"; {label} reaches it {ft / tt:.1f}x sooner than fastten's default fit ({tt:.2f} s against {ft:.2f} s)"
                fp, tp = fastten["time_to"][key].get("median_passes"), bs["time_to"][key].get("median_passes")
                if fp is not None and tp is not None:
                    text += (f"; data passes {_passes_text(fp, fastten.get('passes_bound', False))} "
                             f"against {_passes_text(tp)}")
            elif ft < math.inf and best == TORCH_BEST:
                text += f"; no PyTorch configuration reaches it within {budget:g} s"
            elif ft < math.inf:
                text += f"; PyTorch (best: {label}) does not reach it within {budget:g} s"
            elif tt < math.inf:
                text += f"; fastten's default fit does not reach it within {budget:g} s, {label} does ({tt:.2f} s)"
        lines.append(text + ".")
    by_error = sorted(ranked_rows.items(), key=lambda item: item[1]["final_error"])
    lead, lead_s = by_error[0]
    text = f"- lowest final error: {LABELS[lead]} ({lead_s['final_error']:.2e})"
    if fastten is not None and not lead.startswith("fastten"):
        text += f" -- a peer wins; fastten ends at {fastten['final_error']:.2e}"
    lines.append(text + ".")
    return lines


ORACLE_NOTE = ("Rows marked \"per-seed best\" ran every configuration of their grid on every seed with the full "
               "budget and report, for each seed and each threshold, the time and data passes of the configuration "
               "that reached it first: an oracle choice made on the test error, which no practitioner could make "
               "and which favours the peers (fastten runs its one default). \"PyTorch, per-seed best of all its "
               "configurations\" takes that choice over Adam, SGD and L-BFGS together; fastten is compared with it.")


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def _plot_runs(runs, grid_methods):
    """The runs to draw: every run of a method without a grid, and for a grid
    method the per-seed configuration that reached HEADLINE first (else the
    one with the lowest final error)."""
    keep = [r for r in runs if r["method"] not in grid_methods]
    for method in grid_methods:
        for rec in best_per_seed([r for r in runs if r["method"] == method]):
            keep.append({"method": method, "curve": rec["curve"]})
    return keep


def run_scenario(name, scenario, methods, seeds, budget, grid, out, threads=None):
    from . import _plots

    lines = [f"## {name}: {scenario.describe()}", ""]
    print(f"\n## {name}: {scenario.describe()}", flush=True)
    warmups, missing = warm_up(methods, scenario, grid, threads)
    for method, reason in missing.items():
        print(f"- {method} skipped: {reason}", flush=True)
        lines.append(f"- {method} skipped: {reason}")
    methods = [m for m in methods if m not in missing]
    plan, notes = {}, []
    for method in methods:
        plan[method], dropped = runnable_configs(method, grid, scenario, budget)
        notes += dropped
    for note in notes:
        print(f"- {note}", flush=True)
    methods = [m for m in methods if plan[m]]
    runs = []
    for seed in range(seeds):
        problem = make_problem(name, scenario, seed)
        for method in methods:
            for config in plan[method]:
                record = measured(method, config, problem, budget, problem.seed, threads)
                runs.append(dict(record, scenario=name))
                print(f"  seed {problem.seed} {method:17s} {record['config']:22s} final {record['final_error']:.2e} "
                      f"in {record['seconds']:.1f} s, {_passes_text(record['passes'])} passes", flush=True)
        del problem
    summary = summarise(runs)
    noisy = " (noisy labels; the error is still against the noise-free outputs)" if scenario.noise else ""
    grids = {m: len(c) for m, c in plan.items() if len(c) > 1 or m in grid}
    lines += [f"{seeds} seeds, {budget:g} s budget per run; medians over seeds, (reached/seeds) after each "
              f"time{noisy}. Data passes: samples processed / n for mini-batch methods, function (and Jacobian) "
              "evaluations for full-batch ones, fastten's own count (its total, an upper bound, marked <=).",
              "", table(summary, warmups), ""] + verdicts(summary, budget) + [""] + choice_lines(summary)
    lines += [f"- {note}" for note in notes]
    lines += [f"- warnings from {m}: " + "; ".join(s["warnings"]) for m, s in summary.items() if s["warnings"]]
    grid_text = grid_table(summary)
    if grid_text:
        lines += ["", "Every configuration (medians over seeds):", "", grid_text]
    plot = _plots.error_curves(_plot_runs(runs, set(grids)), name, scenario.describe(), budget,
                               out / f"sgd_{name}.png", {m: LABELS[m] for m in methods})
    if plot is not None:
        lines += ["", f"![error against time, {name}](img/{plot.name})"]
    print("\n".join(lines[2 + len(missing):]), flush=True)
    scenario_record = {"bench": "sgd", "scenario": name, "kind": "summary", **scenario.__dict__, "seeds": seeds,
                       "budget_s": budget, "summary": summary, "warmup_s": warmups, "missing": missing,
                       "configs": {m: [_config_text(m, c) for c in plan[m]] for m in methods}, "notes": notes}
    return runs + [scenario_record], lines


def _grid_text(grid):
    parts = []
    for method, axes in grid.items():
        if method == "scipy-lm":
            parts.append(f"{method}: {', '.join(_config_text(method, c) for c in axes)}")
        else:
            names = ("history", "dtype") if method == "torch-lbfgs" else ("lr", "batch")
            first = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in axes[0])
            parts.append(f"{method}: {names[0]} in {{{first}}} x {names[1]} in {{{', '.join(map(str, axes[1]))}}}")
    return "; ".join(parts)


def run(args):
    t_start = time.perf_counter()
    mode = FULL if args.full else QUICK
    scenarios = args.scenario or mode["scenarios"]
    seeds = args.seeds or mode["seeds"]
    budget = args.budget or mode["budget"]
    grid_name = getattr(args, "grid", None) or mode["grid"]
    grid = GRIDS[grid_name]
    machine = T.machine_info()
    threads = args.threads or default_threads()
    command = command_line(args)
    steal0 = T.cpu_steal_s()
    load0 = _loadavg()
    header = [
        "# fastten against gradient training", "",
        f"- command: `{command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %z')}",
        f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}; "
        f"Python {machine['python']}, numpy {machine['numpy']}, numba {machine['numba']}{_peer_versions()}",
        f"- fastten: {fastten_source()}",
        f"- threads: {threads} for every method ({'--threads' if args.threads else 'PyTorch default'}; "
        "threadpoolctl for BLAS/OpenMP, numba.set_num_threads, torch.set_num_threads, fastten's n_threads); "
        "fastten's fit keeps its default blas_threads=1 inside that limit",
        f"- error: mean((f_hat(x) - f(x))^2) / Var(f(x)) over {N_TEST:,} test points, f the noise-free planted "
        "network; evaluation time is subtracted from each method's clock",
        f"- peers' grids ({grid_name}): {_grid_text(grid)}; every configuration runs on every seed with the full "
        "budget",
        f"- {ORACLE_NOTE}",
        "- PyTorch: Adam and SGD in float32 (errors evaluated in float64), shuffled mini-batches; L-BFGS full "
        "batch, strong Wolfe line search, lr 1, tolerances 0; SciPy least_squares in float64 with the analytic "
        "Jacobian held as a dense n x p array (about 8 n p bytes, three copies at the peak)",
        "- scikit-learn: MLPRegressor with alpha=0; adam with its defaults (batch 200, lr 1e-3), one partial_fit "
        "epoch between evaluations; lbfgs with tol=0, logged at every function evaluation",
        f"- a run stops at the budget or when its error reaches {P.FLOOR:g}; warm-up = one run on a small problem "
        "of the same shape (Numba compilation, torch start-up), excluded from the timings",
    ]
    busy = busy_warning(load0, threads)
    if busy:
        header.append(f"- warning: {busy}")
    print("\n".join(header), flush=True)
    from . import _plots

    if not _plots.available():
        print(f"- matplotlib is not installed ({P.INSTALL_HINT} adds it): no plots", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    records, lines = [], header[:]
    with limit_threads(threads):
        for name in scenarios:
            recs, text = run_scenario(name, SCENARIOS[name], list(args.methods), seeds, budget, grid, args.out, threads)
            records += recs
            lines += [""] + text
    steal1 = T.cpu_steal_s()
    total = time.perf_counter() - t_start
    disturbance = (f"- load average before/after: {load0} / {_loadavg()}; CPU steal during the run: "
                   f"{T.fmt(None if steal0 is None or steal1 is None else steal1 - steal0, '.1f')} s; "
                   f"total {total:.0f} s")
    lines += ["", disturbance]
    records.append({"bench": "sgd", "kind": "run", "command": command, "threads": threads, "seeds": seeds,
                    "budget_s": budget, "scenarios": list(scenarios), "total_s": total, "grid_name": grid_name,
                    "grid": grid, "loadavg": [load0, _loadavg()], **machine})
    path = T.write_jsonl(args.out / "sgd.jsonl", records)
    (args.out / "sgd.md").write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")
    print(f"\n{disturbance[2:]}\nResults: {path}, {args.out / 'sgd.md'}", flush=True)
    return 0


BUSY_LOAD = 0.5  # 1-minute load average above which a multi-threaded run is flagged


def busy_warning(loadavg, threads):
    """A sentence when other work shares the machine and the methods run on
    several threads, else None. Under contention PyTorch's OpenMP threads
    wait on one another: on this 2-core machine at load 5.6, Adam at batch
    256 (d=20) made 684 steps/s with one thread and 12 with two."""
    try:
        load = float(str(loadavg).split()[0])
    except (ValueError, IndexError):
        return None
    if threads <= 1 or load < BUSY_LOAD:
        return None
    return (f"the machine was busy when the run started (1-minute load average {load:.2f}) and every method has "
            f"{threads} threads: under contention multi-threaded PyTorch slows down by an order of magnitude or "
            "more, so its rows here understate it; run alone on the machine, or with --threads 1")


def _loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def fastten_source():
    """The commit of the checkout bench runs from, and whether fastten/ has uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fastten"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in fastten/" if dirty else "")


def _peer_versions():
    found = []
    for module in ("torch", "sklearn"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            found.append(f"{module} not installed")
    return ", " + ", ".join(found)
