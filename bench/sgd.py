"""fastten against gradient training, on planted networks.

``python -m bench sgd`` draws planted sigmoid networks (x ~ N(0, I);
fastten.datasets.make_planted_network) and trains on identical data, with the
same thread count and the same wall-clock budget per run: fastten.fit in full,
fastten without refinement (refine=False), fastten's refinement from a random
start (init="random"), a PyTorch MLP of the same width trained by Adam and by
SGD with momentum (the best configuration of a learning-rate x batch-size
grid, chosen on seed 0 with a quarter of the budget per configuration), and
scikit-learn's MLPRegressor (adam, lbfgs). Error = mean((f_hat - f)^2) /
Var(f) on 10,000 noise-free test points (noisy scenarios too), logged against
training time with the evaluation time subtracted. Every method first runs
once on a small problem of the scenario's shape (compilation and start-up,
reported separately). Figures are medians over seeds.
"""

import argparse
import contextlib
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from . import _peers as P
from . import _timing as T

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
THRESHOLDS = (1e-2, 1e-4, 1e-6)
TUNE_FRACTION = 0.25  # of the budget, per grid configuration
N_TEST = 10_000


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
QUICK = {"scenarios": ("d20k5", "d50k10"), "seeds": 2, "budget": 10.0}
FULL = {"scenarios": tuple(SCENARIOS), "seeds": 5, "budget": 120.0}

METHODS = ("fastten", "fastten-no-refine", "fastten-random", "torch-adam", "torch-sgd", "sklearn-adam",
           "sklearn-lbfgs")
LABELS = {"fastten": "fastten fit (tensor init + refinement)", "fastten-no-refine": "fastten fit, refine=False",
          "fastten-random": "fastten fit, init=\"random\"", "torch-adam": "PyTorch Adam (best of grid)",
          "torch-sgd": "PyTorch SGD, momentum 0.9 (best of grid)", "sklearn-adam": "scikit-learn MLP, adam",
          "sklearn-lbfgs": "scikit-learn MLP, lbfgs"}
GRIDS = {  # optimizer -> (learning rates, batch sizes)
    "quick": {"adam": ((1e-3, 3e-3, 1e-2), (256,)), "sgd": ((0.03, 0.1, 0.3), (256,))},
    "full": {"adam": ((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (64, 256, 1024)),
             "sgd": ((0.01, 0.03, 0.1, 0.3, 1.0), (64, 256, 1024))},
}


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
                   help=f"the long version: every scenario, {FULL['seeds']} seeds, {FULL['budget']:g} s budget, "
                        "wider PyTorch grid (quick default: "
                        f"{', '.join(QUICK['scenarios'])}, {QUICK['seeds']} seeds, {QUICK['budget']:g} s)")
    p.add_argument("--scenario", action="append", choices=tuple(SCENARIOS), metavar="NAME",
                   help=f"run this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--seeds", type=_positive(int), help="seeds per scenario (overrides the default)")
    p.add_argument("--budget", type=_positive(float), help="wall-clock seconds per run (overrides the default)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"methods to run: {', '.join(METHODS)}")
    p.add_argument("--threads", type=_positive(int), help="threads for every method (default: all CPUs)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="directory for sgd.jsonl, sgd.md and the plots")
    p.set_defaults(func=run)
    return p


def command_line(args):
    parts = ["python -m bench sgd"] + (["--full"] if args.full else [])
    parts += [f"--scenario {s}" for s in args.scenario or ()]
    parts += [f"--seeds {args.seeds}"] if args.seeds else []
    parts += [f"--budget {args.budget:g}"] if args.budget else []
    if list(args.methods) != list(METHODS):
        parts.append("--methods " + " ".join(args.methods))
    parts += [f"--threads {args.threads}"] if args.threads else []
    return " ".join(parts)


# ----------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------

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


def runner(method, config=None):
    """A function (problem, budget, seed) -> Run for one method."""
    if method.startswith("fastten"):
        variant = {"fastten": "full", "fastten-no-refine": "no-refine", "fastten-random": "random"}[method]
        return lambda pb, budget, seed: P.run_fastten(pb, budget, seed, variant)
    if method.startswith("torch"):
        optimizer = method.split("-")[1]
        lr, batch = config
        return lambda pb, budget, seed: P.run_torch(pb, budget, seed, optimizer, lr, batch)
    return {"sklearn-adam": P.run_sklearn_adam, "sklearn-lbfgs": P.run_sklearn_lbfgs}[method]


def time_to(curve, threshold):
    """First logged time at which the error is at most threshold, else None."""
    return next((t for t, err in curve if err <= threshold), None)


def measured(method, config, problem, budget, seed):
    """One run inside PeakRSS, as a JSON-ready record."""
    with T.PeakRSS(interval=0.01) as mem:
        result = runner(method, config)(problem, budget, seed)
    # A diverged run (a learning rate too large: NaN weights) ranks last.
    final = result.final_error if math.isfinite(result.final_error) else math.inf
    return {"method": method, "config": _config_text(method, config), "seed": seed, "budget_s": budget,
            "curve": [[float(t), float(e)] for t, e in result.curve], "final_error": final,
            "seconds": result.seconds, "worst_cos": P.worst_cos(problem.A1, result.A1),
            "peak_extra_mb": mem.extra_mb, "passes": result.passes, "passes_note": result.passes_note,
            "warnings": result.warnings, "extra": result.extra,
            "time_to": {f"{thr:g}": time_to(result.curve, thr) for thr in THRESHOLDS}}


def _config_text(method, config):
    if config is None:
        return ""
    return f"lr={config[0]:g}, batch={config[1]}"


def warm_up(methods, scenario, grid):
    """Run every method once on a small problem of the scenario's shape.

    Returns ({method: seconds}, {method: reason}) -- the second for peers
    that are not installed (skipped from then on)."""
    params = scenario.d * scenario.k + 2 * scenario.k + 1
    problem = make_problem("warm-up", scenario, seed=10_000, n=max(2000, 2 * params))
    seconds, missing = {}, {}
    for method in methods:
        config = (grid[method.split("-")[1]][0][0], grid[method.split("-")[1]][1][0]) \
            if method.startswith("torch") else None
        t0 = time.perf_counter()
        try:
            runner(method, config)(problem, 0.5, 0)
        except P.MissingPeer as exc:
            missing[method] = str(exc)
            continue
        seconds[method] = time.perf_counter() - t0
    return seconds, missing


def tune(method, grid, problem, budget):
    """Every grid configuration of a torch optimizer on one problem, with
    `budget` seconds each; the best is the lowest final test error."""
    optimizer = method.split("-")[1]
    lrs, batches = grid[optimizer]
    trials = []
    for lr in lrs:
        for batch in batches:
            record = measured(method, (lr, batch), problem, budget, problem.seed)
            trials.append(((lr, batch), record))
    best = min(trials, key=lambda item: (item[1]["final_error"], item[1]["seconds"]))
    return best[0], [dict(r, curve=None, tuning=True) for _, r in trials]


# ----------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------

def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(records):
    """Medians over seeds for each method: times to the thresholds (a seed
    that never reached a threshold counts as infinitely slow), final error,
    worst |cos|, peak memory, passes."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        runs = [r for r in records if r["method"] == method]
        times = {}
        for thr in THRESHOLDS:
            key = f"{thr:g}"
            values = [r["time_to"][key] if r["time_to"][key] is not None else math.inf for r in runs]
            times[key] = {"median_s": statistics.median(values), "reached": sum(v < math.inf for v in values)}
        out[method] = {"config": runs[0]["config"], "seeds": len(runs), "time_to": times,
                       "final_error": _median([r["final_error"] for r in runs]),
                       "worst_cos": _median([r["worst_cos"] for r in runs]),
                       "peak_extra_mb": _median([r["peak_extra_mb"] for r in runs]),
                       "passes": _median([r["passes"] for r in runs]),
                       "passes_note": runs[0]["passes_note"],
                       "warnings": _warning_kinds(runs)}
    return out


def _warning_kinds(runs):
    """Distinct warnings, numbers replaced by '#' and lists by '[...]', with
    the number of runs that raised each."""
    kinds = {}
    for r in runs:
        for kind in {re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", re.sub(r"\[[^\]]*\]", "[...]", w))
                     for w in r["warnings"]}:
            kinds[kind] = kinds.get(kind, 0) + 1
    return [f"{kind} ({count}/{len(runs)} runs)" for kind, count in sorted(kinds.items())]


def _time_cell(entry, seeds):
    if entry["median_s"] == math.inf:
        return f"not within budget ({entry['reached']}/{seeds})"
    return f"{entry['median_s']:.2f} ({entry['reached']}/{seeds})"


def table(summary, warmups):
    headers = ["method", "config"] + [f"time to {thr:g} (s)" for thr in THRESHOLDS] + [
        "final rel. error", "worst \\|cos\\|", "peak extra (MB)", "data passes", "warm-up (s)"]
    rows = []
    for method, s in summary.items():
        passes = s["passes_note"] if s["passes"] is None else f"{s['passes']:.3g} {s['passes_note']}"
        rows.append([LABELS[method], s["config"] or "-"]
                    + [_time_cell(s["time_to"][f"{thr:g}"], s["seeds"]) for thr in THRESHOLDS]
                    + [f"{s['final_error']:.2e}", T.fmt(s["worst_cos"], ".3f"), T.fmt(s["peak_extra_mb"], ".0f"),
                       passes, T.fmt(warmups.get(method), ".1f")])
    return T.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))


def verdicts(summary, budget):
    """Plain sentences: who is fastest to each threshold, and fastten against
    the best PyTorch configuration; a peer that wins is named as winning."""
    lines = []
    fastten = summary.get("fastten")
    peers = {m: s for m, s in summary.items() if not m.startswith("fastten")}
    torch_runs = {m: s for m, s in peers.items() if m.startswith("torch")}
    for thr in THRESHOLDS:
        key = f"{thr:g}"
        ranked = sorted(summary.items(), key=lambda item: item[1]["time_to"][key]["median_s"])
        lead, lead_s = ranked[0]
        if lead_s["time_to"][key]["median_s"] == math.inf:
            lines.append(f"- {key}: no method reaches it within the {budget:g} s budget (median over seeds).")
            continue
        text = f"- {key}: fastest is {LABELS[lead]} ({lead_s['time_to'][key]['median_s']:.2f} s median)"
        if not lead.startswith("fastten"):
            text += " -- a peer wins here"
        if fastten is not None and torch_runs:
            best, bs = min(torch_runs.items(), key=lambda item: item[1]["time_to"][key]["median_s"])
            ft, tt = fastten["time_to"][key]["median_s"], bs["time_to"][key]["median_s"]
            label = f"{LABELS[best]} ({bs['config']})"
            if ft < math.inf and tt < math.inf:
                if ft <= tt:
                    text += f"; fastten's default fit reaches it {tt / ft:.1f}x sooner than {label}, {tt:.2f} s"
                else:
                    text += f"; {label} reaches it {ft / tt:.1f}x sooner than fastten's default fit ({tt:.2f} s against {ft:.2f} s)"
            elif ft < math.inf:
                text += f"; PyTorch (best: {label}) does not reach it within {budget:g} s"
            elif tt < math.inf:
                text += f"; fastten's default fit does not reach it within {budget:g} s, {label} does ({tt:.2f} s)"
        lines.append(text + ".")
    by_error = sorted(summary.items(), key=lambda item: item[1]["final_error"])
    lead, lead_s = by_error[0]
    text = f"- lowest final error: {LABELS[lead]} ({lead_s['final_error']:.2e})"
    if fastten is not None and not lead.startswith("fastten"):
        text += f" -- a peer wins; fastten ends at {fastten['final_error']:.2e}"
    lines.append(text + ".")
    return lines


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def run_scenario(name, scenario, methods, seeds, budget, grid, out):
    from . import _plots

    lines = [f"## {name}: {scenario.describe()}", ""]
    print(f"\n## {name}: {scenario.describe()}", flush=True)
    warmups, missing = warm_up(methods, scenario, grid)
    for method, reason in missing.items():
        print(f"- {method} skipped: {reason}", flush=True)
        lines.append(f"- {method} skipped: {reason}")
    methods = [m for m in methods if m not in missing]
    problems = [make_problem(name, scenario, seed) for seed in range(seeds)]
    records, configs = [], {}
    for method in methods:
        if method.startswith("torch"):
            configs[method], trials = tune(method, grid, problems[0], TUNE_FRACTION * budget)
            records += [dict(t, scenario=name) for t in trials]
            print(f"- {method}: best of {len(trials)} configurations on seed 0 "
                  f"({TUNE_FRACTION * budget:g} s each): {_config_text(method, configs[method])}", flush=True)
    runs = []
    for problem in problems:
        for method in methods:
            record = measured(method, configs.get(method), problem, budget, problem.seed)
            runs.append(dict(record, scenario=name))
            print(f"  seed {problem.seed} {method:18s} final {record['final_error']:.2e} "
                  f"in {record['seconds']:.1f} s", flush=True)
    summary = summarise(runs)
    noisy = " (noisy labels; the error is still against the noise-free outputs)" if scenario.noise else ""
    lines += [f"{seeds} seeds, {budget:g} s budget per run; medians over seeds, (reached/seeds) after each "
              f"time{noisy}.", "", table(summary, warmups), ""] + verdicts(summary, budget)
    notes = [f"- warnings from {m}: " + "; ".join(s["warnings"]) for m, s in summary.items() if s["warnings"]]
    lines += notes
    plot = _plots.error_curves(runs, name, scenario.describe(), budget, out / f"sgd_{name}.png",
                               {m: LABELS[m] for m in methods})
    if plot is not None:
        lines += ["", f"![error against time, {name}](img/{plot.name})"]
    print("\n".join(lines[2 + len(missing):]), flush=True)
    scenario_record = {"bench": "sgd", "scenario": name, "kind": "summary", **scenario.__dict__, "seeds": seeds,
                       "budget_s": budget, "summary": summary, "warmup_s": warmups, "missing": missing,
                       "torch_configs": {m: _config_text(m, c) for m, c in configs.items()}}
    return records + runs + [scenario_record], lines


def run(args):
    t_start = time.perf_counter()
    mode = FULL if args.full else QUICK
    scenarios = args.scenario or mode["scenarios"]
    seeds = args.seeds or mode["seeds"]
    budget = args.budget or mode["budget"]
    grid = GRIDS["full" if args.full else "quick"]
    machine = T.machine_info()
    threads = args.threads or machine["cpu_count"] or 1
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
        f"- threads: {threads} for every method (threadpoolctl for BLAS/OpenMP, numba.set_num_threads, "
        "torch.set_num_threads)",
        f"- error: mean((f_hat(x) - f(x))^2) / Var(f(x)) over {N_TEST:,} test points, f the noise-free planted "
        "network; evaluation time is subtracted from each method's clock",
        f"- PyTorch: float32 weights and data, errors evaluated in float64; grid "
        + "; ".join(f"{opt}: lr in {{{', '.join(f'{v:g}' for v in lrs)}}} x batch in {{{', '.join(map(str, bs))}}}"
                    for opt, (lrs, bs) in grid.items())
        + f", best by final error on seed 0 with {TUNE_FRACTION:g} of the budget per configuration",
        "- scikit-learn: MLPRegressor with alpha=0; adam with its defaults (batch 200, lr 1e-3), one partial_fit "
        "epoch between evaluations; lbfgs with tol=0, logged at every function evaluation",
        f"- a run stops at the budget or when its error reaches {P.FLOOR:g}; warm-up = one run on a small problem "
        "of the same shape (Numba compilation, torch start-up), excluded from the timings",
    ]
    print("\n".join(header), flush=True)
    from . import _plots

    if not _plots.available():
        print(f"- matplotlib is not installed ({P.INSTALL_HINT} adds it): no plots", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    records, lines = [], header[:]
    with limit_threads(threads):
        for name in scenarios:
            recs, text = run_scenario(name, SCENARIOS[name], list(args.methods), seeds, budget, grid, args.out)
            records += recs
            lines += [""] + text
    steal1 = T.cpu_steal_s()
    total = time.perf_counter() - t_start
    disturbance = (f"- load average before/after: {load0} / {_loadavg()}; CPU steal during the run: "
                   f"{T.fmt(None if steal0 is None or steal1 is None else steal1 - steal0, '.1f')} s; "
                   f"total {total:.0f} s")
    lines += ["", disturbance]
    records.append({"bench": "sgd", "kind": "run", "command": command, "threads": threads, "seeds": seeds,
                    "budget_s": budget, "scenarios": list(scenarios), "total_s": total, "grid": grid,
                    "loadavg": [load0, _loadavg()], **machine})
    path = T.write_jsonl(args.out / "sgd.jsonl", records)
    (args.out / "sgd.md").write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")
    print(f"\n{disturbance[2:]}\nResults: {path}, {args.out / 'sgd.md'}", flush=True)
    return 0


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
