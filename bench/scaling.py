"""How fastten.fit scales with the number of samples and of features.

``python -m bench scaling`` fits noise-free planted sigmoid networks with
k=10 hidden units, for n from 10^4 up at d=50 and for d from 50 up at
n=10^5. At each size and seed it times fit(refine=False) (standardising,
tensor stage, output layer) and fit() in full, whose refinement the callback
stops after --budget seconds; it records the refinement's seconds per
Levenberg-Marquardt iteration, the worst matched |cos| against the planted
A1 and the relative test error. The log-log slope of each time against n
(and d) is fitted by least squares; the target for time against n is
0.9-1.15. Medians over seeds, after one warm-up fit per d (compilation
excluded).
"""

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np

from . import _peers as P
from . import _timing as T
from .sgd import Scenario, _loadavg, _positive, fastten_source, limit_threads, make_problem

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
K = 10
N_FOR_D = 100_000
D_FOR_N = 50
QUICK = {"n": (10_000, 30_000, 100_000, 300_000), "d": (50, 100, 200), "seeds": 1, "budget": 30.0}
FULL = {"n": (10_000, 30_000, 100_000, 300_000, 1_000_000), "d": (50, 100, 200, 500, 1000), "seeds": 3,
        "budget": 300.0}
SERIES = ("fit, refine=False", "fit", "refinement, s per LM iteration")
SLOPE_TARGET = (0.9, 1.15)


def add_parser(subparsers):
    """Register the 'scaling' sub-command."""
    p = subparsers.add_parser("scaling", help="fastten fit time and recovery against n and d",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help=f"n up to {FULL['n'][-1]:,}, d up to {FULL['d'][-1]}, {FULL['seeds']} seeds, "
                        f"{FULL['budget']:g} s refinement cap (quick default: n up to {QUICK['n'][-1]:,}, d up to "
                        f"{QUICK['d'][-1]}, {QUICK['seeds']} seed, {QUICK['budget']:g} s)")
    p.add_argument("--n-values", type=_positive(int), nargs="+", metavar="N", help=f"sample sizes at d={D_FOR_N}")
    p.add_argument("--d-values", type=_positive(int), nargs="+", metavar="D", help=f"dimensions at n={N_FOR_D:,}")
    p.add_argument("--seeds", type=_positive(int), help="seeds per size (overrides the default)")
    p.add_argument("--budget", type=_positive(float), help="seconds after which the refinement is stopped")
    p.add_argument("--threads", type=_positive(int), help="threads (default: all CPUs)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="directory for scaling.jsonl, scaling.md and the plots")
    p.set_defaults(func=run)
    return p


def measure_size(n, d, seed, budget, threads=None):
    """fit(refine=False) and fit() on one planted problem, on ``threads`` threads."""
    problem = make_problem(f"n{n}d{d}", Scenario(n, d, K), seed)
    tensor = P.run_fastten(problem, math.inf, seed, "no-refine", threads)
    with T.PeakRSS(interval=0.01) as mem:
        full = P.run_fastten(problem, budget, seed, "full", threads)
    its = full.extra.get("refinement_iterations") or 0
    refine_s = (full.extra.get("times") or {}).get("refine")
    return {"bench": "scaling", "n": n, "d": d, "k": K, "seed": seed, "budget_s": budget,
            "tensor_s": tensor.seconds, "tensor_error": tensor.final_error,
            "tensor_worst_cos": P.worst_cos(problem.A1, tensor.A1),
            "fit_s": full.seconds, "capped": full.seconds >= budget, "fit_error": full.final_error,
            "fit_worst_cos": P.worst_cos(problem.A1, full.A1), "lm_iterations": its,
            "s_per_lm_iteration": refine_s / its if its and refine_s is not None else None,
            "peak_extra_mb": mem.extra_mb, "data_passes": full.passes, "times": full.extra.get("times"),
            "warnings": sorted(set(tensor.warnings + full.warnings))}


def _median(records, key):
    values = [r[key] for r in records if r[key] is not None]
    return statistics.median(values) if values else None


def sweep(points, seeds, budget, label, threads=None):
    """Records and per-size medians for a list of (n, d)."""
    records, rows = [], []
    warmed = set()
    for n, d in points:
        if d not in warmed:  # compile for this shape outside the timings
            n_small = max(2000, 2 * (d * K + 2 * K + 1))
            P.run_fastten(make_problem("warm-up", Scenario(n_small, d, K), 10_000, n_small), 5.0, 0, "full", threads)
            warmed.add(d)
        runs = [measure_size(n, d, seed, budget, threads) for seed in range(seeds)]
        records += [dict(r, sweep=label) for r in runs]
        med = {key: _median(runs, key) for key in ("tensor_s", "fit_s", "s_per_lm_iteration", "tensor_worst_cos",
                                                   "fit_worst_cos", "fit_error", "tensor_error", "peak_extra_mb",
                                                   "lm_iterations")}
        med.update(n=n, d=d, capped=sum(r["capped"] for r in runs))
        rows.append(med)
        print(f"  {label}: n={n:,} d={d}: refine=False {med['tensor_s']:.2f} s, fit {med['fit_s']:.2f} s"
              f"{' (capped)' if med['capped'] else ''}, worst |cos| {T.fmt(med['fit_worst_cos'], '.3f')}, "
              f"error {med['fit_error']:.1e}", flush=True)
    return records, rows


def slopes(rows, axis):
    """Least-squares slope of log(time) against log(axis) for each series;
    the full fit's only when no point hit the refinement cap."""
    out = {}
    x = np.log([r[axis] for r in rows])
    for series, key in zip(SERIES, ("tensor_s", "fit_s", "s_per_lm_iteration")):
        y = [r[key] for r in rows]
        if len(rows) < 2 or any(v is None or v <= 0 for v in y) or (key == "fit_s" and any(r["capped"] for r in rows)):
            out[series] = None
            continue
        out[series] = float(np.polyfit(x, np.log(y), 1)[0])
    return out


def _rows_table(rows, budget):
    headers = ["n", "d", "fit, refine=False (s)", "fit (s)", "LM iterations", "s per LM it.",
               "worst \\|cos\\|, refine=False", "worst \\|cos\\|, fit", "rel. error, refine=False", "rel. error, fit",
               "peak extra (MB)"]
    body = [[f"{r['n']:,}", r["d"], f"{r['tensor_s']:.2f}",
             f"{r['fit_s']:.2f}" + (f" (stopped at {budget:g} s)" if r["capped"] else ""),
             T.fmt(r["lm_iterations"], ".0f"), T.fmt(r["s_per_lm_iteration"], ".3f"),
             T.fmt(r["tensor_worst_cos"], ".3f"), T.fmt(r["fit_worst_cos"], ".3f"), f"{r['tensor_error']:.1e}",
             f"{r['fit_error']:.1e}", T.fmt(r["peak_extra_mb"], ".0f")] for r in rows]
    return T.markdown_table(headers, body, "r" * len(headers))


def run(args):
    from . import _plots

    t_start = time.perf_counter()
    mode = FULL if args.full else QUICK
    n_values = args.n_values or mode["n"]
    d_values = args.d_values or mode["d"]
    seeds = args.seeds or mode["seeds"]
    budget = args.budget or mode["budget"]
    machine = T.machine_info()
    threads = args.threads or machine["cpu_count"] or 1
    parts = ["python -m bench scaling"] + (["--full"] if args.full else [])
    parts += ["--n-values " + " ".join(map(str, args.n_values))] if args.n_values else []
    parts += ["--d-values " + " ".join(map(str, args.d_values))] if args.d_values else []
    parts += [f"--seeds {args.seeds}"] if args.seeds else []
    parts += [f"--budget {args.budget:g}"] if args.budget else []
    parts += [f"--threads {args.threads}"] if args.threads else []
    command = " ".join(parts)
    load0 = _loadavg()
    lines = ["# fastten fit: scaling with n and d", "", f"- command: `{command}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M %z')}",
             f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}; {threads} threads",
             f"- fastten: {fastten_source()}",
             f"- planted sigmoid network, k={K}, noise-free; {seeds} seed(s) per size, medians; the refinement is "
             f"stopped by the callback after {budget:g} s (such points are marked and left out of the fit's slope)"]
    print("\n".join(lines), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with limit_threads(threads):
        rec_n, rows_n = sweep([(n, D_FOR_N) for n in n_values], seeds, budget, "n", threads)
        rec_d, rows_d = sweep([(N_FOR_D, d) for d in d_values], seeds, budget, "d", threads)
    fit_n, fit_d = slopes(rows_n, "n"), slopes(rows_d, "d")
    # Fixed costs flatten the curve at small n: the slope over the three
    # largest sizes is the one that tells how the time grows from here on.
    top_n = slopes(sorted(rows_n, key=lambda r: r["n"])[-3:], "n") if len(rows_n) > 3 else fit_n
    slope_rows = [[series, T.fmt(fit_n[series], ".2f"), T.fmt(top_n[series], ".2f"), T.fmt(fit_d[series], ".2f")]
                  for series in SERIES]
    lo, hi = SLOPE_TARGET
    found = [f"{series} {value:.2f} over {span} ({'met' if lo <= value <= hi else 'NOT met'})"
             for series in SERIES[:2] for span, value in (("all n", fit_n[series]), ("the 3 largest n", top_n[series]))
             if value is not None]
    verdict = (f"- slope of fastten time against n, target {lo}-{hi}: " + "; ".join(found) if found else
               "- no slope against n could be fitted (too few sizes, or the fits were stopped)")
    lines += ["", f"## Against n (d={D_FOR_N})", "", _rows_table(rows_n, budget), "",
              f"## Against d (n={N_FOR_D:,})", "", _rows_table(rows_d, budget), "",
              "## Log-log slopes", "",
              T.markdown_table(["time", "slope against n", "against the 3 largest n", "slope against d"],
                               slope_rows, "lrrr"), "", verdict,
              "- the full fit's time includes a number of refinement iterations that changes from problem to "
              "problem; the per-LM-iteration row is the cost of one iteration (refinement seconds / iterations)"]
    time_png = _plots.scaling(
        {s: ([r["n"] for r in rows_n], [r[k] for r in rows_n]) for s, k in zip(SERIES, ("tensor_s", "fit_s"))},
        {s: ([r["d"] for r in rows_d], [r[k] for r in rows_d]) for s, k in zip(SERIES, ("tensor_s", "fit_s"))},
        {("n", s): fit_n[s] for s in SERIES} | {("d", s): fit_d[s] for s in SERIES},
        args.out / "scaling_time.png")
    recovery_png = _plots.recovery(
        {"fit, refine=False": ([r["n"] for r in rows_n], [r["tensor_worst_cos"] for r in rows_n],
                               [r["tensor_error"] for r in rows_n]),
         "fit": ([r["n"] for r in rows_n], [r["fit_worst_cos"] for r in rows_n], [r["fit_error"] for r in rows_n])},
        args.out / "scaling_recovery.png")
    for png in (time_png, recovery_png):
        if png is not None:
            lines += ["", f"![{png.stem}](img/{png.name})"]
    warnings_seen = sorted({w for r in rec_n + rec_d for w in r["warnings"]})
    lines += ["", f"- load average before/after: {load0} / {_loadavg()}; total {time.perf_counter() - t_start:.0f} s"]
    lines += [f"- warning: {w}" for w in warnings_seen]
    print("\n".join(lines[6:]), flush=True)
    records = rec_n + rec_d + [{"bench": "scaling", "kind": "run", "command": command, "threads": threads,
                                "slopes_n": fit_n, "slopes_n_top3": top_n, "slopes_d": fit_d, "rows_n": rows_n, "rows_d": rows_d,
                                "total_s": time.perf_counter() - t_start, **machine}]
    path = T.write_jsonl(args.out / "scaling.jsonl", records)
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")
    print(f"\nResults: {path}, {args.out / 'scaling.md'}", flush=True)
    return 0
