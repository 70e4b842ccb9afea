"""Benchmark of the decomposition engines.

``python -m bench decompose`` runs, in one process:

* dense: a d=100, rank-10 orthogonal tensor with positive weights in [1, 2]
  plus symmetric Gaussian noise, scaled two ways: the flattening's spectral
  norm 0.01, and entries of standard deviation 1e-3 (issue #10), decomposed by
  fastten (the default path, the orthogonal engine, the full-dimension power
  method) and by TensorLy's ``symmetric_parafac_power_iteration`` with the
  same restarts (10) and iterations (10), when TensorLy is installed;
* rank = dimension: k = d = 20 non-orthogonal tensors (unit Gaussian factors,
  weights +-g^2 with g ~ N(0, 1) and random signs) plus symmetric entry noise
  of standard deviation 1e-4, 1e-3, 1e-2, over --rank-dim-seeds seeds: the
  mean column error of the default path beside the Cramer-Rao bound;
* implicit: the third cross-moment of a planted sigmoid network with
  d=2000, k=20, n=10^5 (1.5 GB of data), decomposed through the kernels
  without forming it; time, peak memory beyond the data, data passes, and
  recovery of the planted directions;
* sketch: the sketched power method on the Wang et al. setting (d=200, rank
  10, orthogonal, noise-to-signal 0.01) when ``fastten.sketch`` exists.

Times are medians of --repeat runs after one warm-up (compilation excluded).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import _timing as T

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def add_parser(subparsers):
    p = subparsers.add_parser("decompose", help="decomposition engines against TensorLy, at scale, sketched",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    p.add_argument("--skip-implicit", action="store_true", help="skip the d=2000 implicit-moment scenario")
    p.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS,
                   help="scenarios to run")
    p.add_argument("--rank-dim-seeds", type=int, default=20, help="seeds per noise level of the rank = dimension scenario")
    p.add_argument("--sketch-dims", type=int, nargs="*", default=[200, 500],
                   help="dimensions of the sketch-versus-exact timing (d^3 doubles each)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for decompose.jsonl")
    p.set_defaults(func=run)


SCENARIOS = ("dense", "rank-dim", "implicit", "sketch")


def worst_cos(true_V, est_V):
    C = np.abs(true_V.T @ est_V)
    rows, cols = linear_sum_assignment(-C)
    return float(C[rows, cols].min()), cols


def symmetric_gaussian(d, rng):
    """A symmetric Gaussian d x d x d tensor, built with two d^3 arrays at a time."""
    E = rng.standard_normal((d, d, d))
    S = E.copy()
    for p in [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        S += E.transpose(p)
    return S


def orthogonal_problem(d, k, noise, seed, relative_to="spectral", weights=(1.0, 2.0)):
    """Orthogonal rank-k tensor plus symmetric Gaussian noise, scaled to
    `noise` times 1 in the flattening's spectral norm (relative_to="spectral"),
    to `noise` times the clean tensor's Frobenius norm ("frobenius"), or to
    entries of standard deviation `noise` at distinct indices ("entry"; see
    entry_noise)."""
    rng = np.random.default_rng(seed)
    V, _ = np.linalg.qr(rng.standard_normal((d, k)))
    w = rng.uniform(*weights, k)
    clean = np.einsum("j,aj,bj,cj->abc", w, V, V, V)
    E = symmetric_gaussian(d, rng)
    if relative_to == "spectral":
        E *= noise / np.linalg.norm(E.reshape(d, d * d), 2)
    elif relative_to == "entry":
        E *= noise / np.sqrt(6)
    else:
        E *= noise * np.linalg.norm(clean) / np.linalg.norm(E)
    E += clean
    return E, clean, w, V


def _accuracy(clean, w, V, weights, factors):
    cos, cols = worst_cos(V, factors)
    rec = np.einsum("j,aj,bj,cj->abc", weights, factors, factors, factors)
    return {"worst_cos": cos,
            "max_weight_rel_err": float(np.max(np.abs(np.abs(weights[cols]) - w) / w)),
            "reconstruction_rel_err": float(np.linalg.norm(rec - clean) / np.linalg.norm(clean))}


def entry_noise(d, sigma, rng):
    """Symmetric Gaussian noise whose entries at distinct indices (a, b, c)
    have standard deviation sigma (entries with a repeated index 2 sigma^2
    or 6 sigma^2 in variance, as a symmetrised i.i.d. tensor has)."""
    return symmetric_gaussian(d, rng) * (sigma / np.sqrt(6))


def rank_equals_dim_problem(d, sigma, seed):
    """k = d unit Gaussian factors, weights +-g^2 (g ~ N(0, 1), random signs),
    plus entry_noise(sigma): (T, w, V)."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    w = rng.standard_normal(d) ** 2 * rng.choice([-1.0, 1.0], d)
    return np.einsum("j,aj,bj,cj->abc", w, V, V, V) + entry_noise(d, sigma, rng), w, V


def cramer_rao_column_errors(w, V, sigma):
    """Per component, the Cramer-Rao bound on the root mean square of
    |v_hat_j - v_j| for T = sum_j w_j v_j^(x)3 + entry_noise(sigma).

    The noise's log-likelihood is -|E|_F^2 / (12 sigma^2) (an entry at
    distinct indices appears 6 times in the Frobenius norm, one with a
    repeated index 3 or 1 times with 3 or 6 times the variance), so the
    Fisher information of b_j = cbrt(w_j) v_j is J^T J / (6 sigma^2), with
    J^T J the closed form of the Levenberg-Marquardt polish; v_j moves by
    the part of delta b_j orthogonal to it, over |b_j|. Checked against the
    polish started at the truth at sigma = 1e-5 (ratio 0.95-1.06 over 200
    draws).
    """
    d, k = V.shape
    B = V * np.cbrt(w)
    g = B.T @ B
    JtJ = 3 * np.kron(g ** 2, np.eye(d)).reshape(k, d, k, d) + 6 * np.einsum("jl,al,cj->jalc", g, B, B)
    cov = 6 * sigma ** 2 * np.linalg.inv(JtJ.reshape(k * d, k * d))
    out = np.empty(k)
    for j in range(k):
        P = np.eye(d) - np.outer(V[:, j], V[:, j])
        out[j] = np.sqrt(np.trace(P @ cov[j * d:(j + 1) * d, j * d:(j + 1) * d] @ P)) / np.linalg.norm(B[:, j])
    return out


def column_errors(true_V, est_V):
    """|v_hat_j - v_j| after Hungarian matching on |cos| and sign alignment."""
    C = true_V.T @ est_V
    rows, cols = linear_sum_assignment(-np.abs(C))
    return np.linalg.norm(est_V[:, cols] * np.sign(C[rows, cols]) - true_V, axis=0)


def rank_equals_dim_scenario(n_seeds, d=20, noises=(1e-4, 1e-3, 1e-2)):
    from fastten.decomposition import decompose

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decompose(rank_equals_dim_problem(d, 1e-3, 0)[0], d, random_state=0)  # compile outside the timing
    rows, records = [], []
    for sigma in noises:
        means, worsts, bounds, seconds = [], [], [], []
        for seed in range(n_seeds):
            T_noisy, w, V = rank_equals_dim_problem(d, sigma, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an unidentifiable component may not converge; measured below
                s, dec = T.timed(lambda: decompose(T_noisy, d, random_state=seed))
            err = column_errors(V, dec.factors)
            means.append(err.mean())
            worsts.append(err.max())
            # A component's error is at most about sqrt(2) (a random unit
            # vector matched by sign): the bound is capped there.
            bounds.append(np.minimum(cramer_rao_column_errors(w, V, sigma), np.sqrt(2)).mean())
            seconds.append(s)
        means, worsts, bounds = map(np.asarray, (means, worsts, bounds))
        records.append({"bench": "decompose", "scenario": "rank_equals_dim", "d": d, "k": d, "noise": sigma,
                        "n_seeds": n_seeds, "mean_col_err": float(means.mean()),
                        "worst_mean_col_err": float(means.max()), "mean_worst_col_err": float(worsts.mean()),
                        "worst_col_err": float(worsts.max()), "cramer_rao_mean_col_err": float(bounds.mean()),
                        "median_s": float(np.median(seconds))})
        rows.append([f"{sigma:g}", f"{means.mean():.4f}", f"{means.max():.4f}", f"{worsts.mean():.3f}",
                     f"{worsts.max():.3f}", f"{bounds.mean():.4f}", f"{np.median(seconds):.2f}"])
    print(f"\n## Rank = dimension: k = d = {d}, unit Gaussian factors, weights +-g^2, symmetric entry noise; "
          f"{n_seeds} seeds, default path\n")
    print("Column error |v_hat - v| after Hungarian matching on |cos| and sign alignment; per seed its mean "
          "and its worst; Cramer-Rao: the bound's per-component root mean square, capped at sqrt(2), averaged.\n")
    print(T.markdown_table(["entry noise", "mean col. err", "worst seed's mean", "mean worst col.",
                            "worst col.", "Cramer-Rao mean", "median time (s)"], rows, "rrrrrrr"))
    return records


def dense_scenario(repeat):
    records = []
    for relative_to, noise in (("spectral", 0.01), ("entry", 1e-3)):
        records += _dense_scenario(repeat, relative_to, noise)
    return records


def _dense_scenario(repeat, relative_to, noise):
    from fastten.decomposition import decompose

    d, k, restarts, iters = 100, 10, 10, 10
    T_noisy, clean, w, V = orthogonal_problem(d, k, noise, seed=0, relative_to=relative_to)
    runs = {
        "fastten default (auto)": lambda: decompose(T_noisy, k, random_state=0),
        "fastten orthogonal": lambda: decompose(T_noisy, k, method="orthogonal", n_restarts=restarts,
                                                n_iter=iters, tol=0.0, random_state=0),
        "fastten power (full dimension)": lambda: decompose(T_noisy, k, method="power", n_restarts=restarts,
                                                            n_iter=iters, tol=0.0, random_state=0),
    }
    try:
        import tensorly as tl
        from tensorly.decomposition import symmetric_parafac_power_iteration

        tl.set_backend("numpy")
        runs["tensorly symmetric_parafac_power_iteration"] = lambda: symmetric_parafac_power_iteration(
            tl.tensor(T_noisy), k, n_repeat=restarts, n_iteration=iters)
    except ImportError:
        print("- TensorLy is not installed: `python -m pip install -e '.[bench]'` adds it; skipped.")
    rows, records = [], []
    for name, fn in runs.items():
        with warnings.catch_warnings():
            # tol=0 fixes the iteration count to TensorLy's; the resulting
            # ConvergenceWarning says only that.
            warnings.simplefilter("ignore")
            m = T.measure(fn, repeat, keep_result=True)
        out = m.pop("result")
        weights, factors = (out.weights, out.factors) if hasattr(out, "weights") else (np.asarray(out[0]), np.asarray(out[1]))
        acc = _accuracy(clean, w, V, weights, factors)
        records.append({"bench": "decompose", "scenario": "dense", "method": name, "d": d, "k": k,
                        "noise": noise, "noise_scale": relative_to, "n_restarts": restarts, "n_iter": iters,
                        **m, **acc})
        rows.append([name, T.fmt(m["median_s"], ".4f"), f"{acc['worst_cos']:.6f}",
                     f"{acc['max_weight_rel_err']:.2e}", f"{acc['reconstruction_rel_err']:.2e}",
                     T.fmt(m["peak_extra_mb"], ".0f")])
    base = {r["method"]: r["median_s"] for r in records}
    tly = base.get("tensorly symmetric_parafac_power_iteration")
    for row, rec in zip(rows, records):
        rec["speedup_vs_tensorly"] = tly / rec["median_s"] if tly else None
        row.insert(2, f"{tly / rec['median_s']:.1f}x" if tly else "-")
    scale = {"spectral": "spectral norm of the flattening", "entry": "standard deviation of the entries"}
    print(f"\n## Dense: d={d}, rank {k}, orthogonal, weights in [1, 2], noise {noise} "
          f"({scale[relative_to]}); {restarts} restarts, {iters} iterations (the default path: its own)\n")
    print(T.markdown_table(["method", "median (s)", "speed-up vs TensorLy", "worst |cos|", "max weight err",
                            "rel. reconstruction err", "peak extra (MB)"], rows, "lrrrrrr"))
    return records


def implicit_scenario(repeat):
    from fastten.datasets import make_planted_network
    from fastten.decomposition import decompose
    from fastten.operators import DataMoment

    n, d, k = 100_000, 2000, 20
    net = make_planted_network(n, d, k, n_test=1, random_state=0)
    y = net.y - net.y.mean()
    with warnings.catch_warnings():  # a first call on 500 rows compiles outside the timing
        warnings.simplefilter("ignore")
        decompose(DataMoment(net.X[:500], y[:500]), k, random_state=0)
    state = {}

    def run_once():
        op = DataMoment(net.X, y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dec = decompose(op, k, random_state=0)
        state.update(passes=op.passes, warnings=[str(c.message) for c in caught])
        return dec

    m = T.measure(run_once, repeat, keep_result=True)
    dec = m.pop("result")
    cos, _ = worst_cos(net.A1, dec.factors)
    C = np.abs(net.A1.T @ dec.factors)
    r, c = linear_sum_assignment(-C)
    record = {"bench": "decompose", "scenario": "implicit", "n": n, "d": d, "k": k,
              "data_mb": net.X.nbytes / 2**20, **m, "passes": state["passes"], "worst_cos": cos,
              "median_cos": float(np.median(C[r, c])), "residual": dec.residual, "warnings": state["warnings"]}
    print(f"\n## Implicit data moment: planted sigmoid network, n={n}, d={d}, k={k} "
          f"(X is {record['data_mb']:.0f} MB; a dense d^3 tensor would be {d**3 * 8 / 2**30:.0f} GB)\n")
    print(T.markdown_table(["median (s)", "peak extra (MB)", "data passes", "worst |cos|", "median |cos|",
                            "probe residual"],
                           [[T.fmt(m["median_s"], ".2f"), T.fmt(m["peak_extra_mb"], ".0f"), state["passes"],
                             f"{cos:.3f}", f"{record['median_cos']:.3f}", f"{dec.residual:.3f}"]], "rrrrrr"))
    for message in state["warnings"]:
        print(f"- warning: {message}")
    return [record]


def sketch_scenario(dims):
    """Wang et al.'s synthetic setting: d=200, rank 10, orthogonal, unit
    weights, noise-to-signal 0.01 in Frobenius norm; residual against b, and
    time against the exact engines at each d in `dims`."""
    from fastten.decomposition import decompose

    k, B, restarts, iters = 10, 20, 10, 30
    records = []
    print(f"\n## Sketched power method: Wang et al. setting (rank {k}, orthogonal, unit weights, "
          f"noise-to-signal 0.01 in Frobenius norm), B = {B}, {restarts} restarts, {iters} iterations\n")
    print("Residual = |T_hat - T_clean|_F / |T_clean|_F.\n")

    def solve(tensor, method, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # iteration limits are part of the setting
            return T.timed(lambda: decompose(tensor, k, method=method, n_restarts=restarts, n_iter=iters,
                                             random_state=0, **kw))

    d = 200
    T_noisy, clean, w, V = orthogonal_problem(d, k, 0.01, seed=1, relative_to="frobenius", weights=(1.0, 1.0))
    norm = np.linalg.norm(clean)
    exact = {}
    for method in ("power", "orthogonal"):
        seconds, dec = solve(T_noisy, method)
        exact[method] = np.linalg.norm(dec.to_dense() - clean) / norm
        records.append({"bench": "decompose", "scenario": "sketch_curve", "d": d, "method": method,
                        "residual": exact[method], "seconds": seconds, "worst_cos": worst_cos(V, dec.factors)[0]})
    rows = [[f"exact: {m}", "-", f"{exact[m]:.4f}", f"{records[i]['worst_cos']:.5f}", f"{records[i]['seconds']:.2f}"]
            for i, m in enumerate(("power", "orthogonal"))]
    smallest = None
    for log_b in range(6, 15):
        b = 2 ** log_b
        seconds, dec = solve(T_noisy, "sketch", sketch_size=b, n_sketches=B)
        res = np.linalg.norm(dec.to_dense() - clean) / norm
        cos = worst_cos(V, dec.factors)[0]
        records.append({"bench": "decompose", "scenario": "sketch_curve", "d": d, "method": "sketch",
                        "b": b, "B": B, "residual": res, "seconds": seconds, "worst_cos": cos})
        rows.append([f"sketch b=2^{log_b}", b, f"{res:.4f}", f"{cos:.5f}", f"{seconds:.2f}"])
        if smallest is None and res <= 1.1 * exact["power"]:
            smallest = b
    print(T.markdown_table(["engine", "b", "residual", "worst |cos|", "time (s)"], rows, "lrrrr"))
    print(f"\nSmallest b with residual within 10% of the exact power method's: {smallest}")
    records.append({"bench": "decompose", "scenario": "sketch_smallest_b", "d": d, "b": smallest})

    rows = []
    for d in dims:
        T_noisy, clean, w, V = orthogonal_problem(d, k, 0.01, seed=2, relative_to="frobenius", weights=(1.0, 1.0))
        norm = np.linalg.norm(clean)
        for method, kw in [("power", {}), ("orthogonal", {}), ("sketch", {"sketch_size": 2**11, "n_sketches": B})]:
            seconds, dec = solve(T_noisy, method, **kw)
            res = np.linalg.norm(dec.to_dense() - clean) / norm
            rows.append([d, method, f"{seconds:.2f}", f"{res:.4f}"])
            records.append({"bench": "decompose", "scenario": "sketch_timing", "d": d, "method": method,
                            "seconds": seconds, "residual": res, **kw})
        del T_noisy, clean
    print("\nTime against dimension (sketch: b = 2^11, B = 20, sketch built from the dense tensor, "
          "included in its time; one run each, after the runs above compiled everything):\n")
    print(T.markdown_table(["d", "engine", "time (s)", "residual"], rows, "rlrr"))
    return records


def run(args):
    t0 = time.perf_counter()
    machine = T.machine_info()
    chosen = "" if list(args.scenarios) == list(SCENARIOS) else " --scenarios " + " ".join(args.scenarios)
    print(f"# Decomposition engines\n\n- command: `python -m bench decompose --repeat {args.repeat}{chosen}`"
          f"\n- machine: {machine.get('cpu_model')}, os.cpu_count() = {machine.get('cpu_count')}")
    records = []
    if "dense" in args.scenarios:
        records += dense_scenario(args.repeat)
    if "rank-dim" in args.scenarios:
        records += rank_equals_dim_scenario(args.rank_dim_seeds)
    if "implicit" in args.scenarios and not args.skip_implicit:
        records += implicit_scenario(max(1, min(args.repeat, 3)))
    if "sketch" in args.scenarios:
        records += sketch_scenario(args.sketch_dims)
    path = T.write_jsonl(args.out / "decompose.jsonl", records)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s. Results: {path}")
    return 0
